"""Regional homogeneity: Kendall's coefficient of concordance W (METHODS §9).

Variant (DPABI ``y_reho`` / C-PAC ``compute_reho`` style, volume):

* every series is ranked over time once (1-based ranks, ties get their mean rank);
* the neighbourhood of a voxel is the 3x3x3 box (27 voxels, or the 19/7-voxel variants)
  restricted to voxels inside the mask; series that are constant over time are treated as
  outside the mask (they carry no ordering);
* ``W = 12 S / (K^2 (n^3 - n) - K sum_k sum_j (t_kj^3 - t_kj))`` with ``S = sum_t (R_t -
  K (n + 1) / 2)^2``, ``R_t`` the rank sum over the ``K`` in-mask neighbours (centre
  included). The tie term is used only with ``tie_correction=True`` (DPABI and C-PAC do not
  correct; default off);
* the centre must be in the mask; ``K < 2`` gives 0; the outermost voxel layer of the grid is
  0 (as DPABI and C-PAC).

The neighbourhood rank sums are computed with array shifts, no loop over voxels. CCS volume
ReHo differs: it does not restrict the box to the mask and ranks ties without averaging.

Surface variant (:func:`reho_surface`): the same W over each vertex and its 1-ring on a
triangle mesh (CCS ``ccs_ReHo.m`` with ``lh_nbrs``), rank sums by one sparse product.
"""

from __future__ import annotations

import itertools

import numpy as np
import scipy.sparse as sp
from scipy.stats import rankdata

from isyb_dask.errors import InputError

__all__ = ["kendall_w", "reho_volume", "mesh_adjacency", "reho_surface"]


def kendall_w(series: np.ndarray, *, tie_correction: bool = False) -> float:
    """Kendall's W of a small set of series (reference implementation for one voxel).

    Parameters
    ----------
    series
        ``(K, n)`` array: ``K`` raters (voxels) by ``n`` items (time points).
    tie_correction
        Subtract the tie term from the denominator.

    Returns
    -------
    float
        W in ``[0, 1]``; 0 if ``K < 2`` or ``n < 2``.
    """
    series = np.asarray(series, dtype=np.float64)
    k, n = series.shape
    if k < 2 or n < 2:
        return 0.0
    ranks = rankdata(series, axis=1, method="average")
    r_sum = ranks.sum(axis=0)
    s = np.sum((r_sum - k * (n + 1) / 2.0) ** 2)
    den = k**2 * (n**3 - n)
    if tie_correction:
        size = rankdata(series, axis=1, method="max") - rankdata(series, axis=1, method="min") + 1
        den -= k * np.sum(size**2 - 1.0)
    return float(12.0 * s / den) if den > 0 else 0.0


def _offsets(neighbourhood: int) -> list[tuple[int, int, int]]:
    offs = [o for o in itertools.product((-1, 0, 1), repeat=3)]
    nz = [sum(abs(c) for c in o) for o in offs]
    if neighbourhood == 27:
        return offs
    if neighbourhood == 19:
        return [o for o, m in zip(offs, nz) if m <= 2]
    if neighbourhood == 7:
        return [o for o, m in zip(offs, nz) if m <= 1]
    raise InputError(f"ReHo neighbourhood must be 7, 19 or 27 voxels, got {neighbourhood}")


def _mean_ranks(y: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """1-based ranks along the last axis of a 2-D array, ties -> mean rank (float32).

    One argsort per row; only rows that contain ties go through ``scipy.stats.rankdata``
    (continuous BOLD data rarely has any), which is several times faster than ranking
    everything with ``rankdata``.
    """
    n = y.shape[-1]
    out = np.empty(y.shape, np.float32)
    base = np.arange(1, n + 1, dtype=np.float32)
    for start in range(0, y.shape[0], chunk):
        block = y[start:start + chunk]
        order = np.argsort(block, axis=-1)
        ranks = np.empty(block.shape, np.float32)
        np.put_along_axis(ranks, order, np.broadcast_to(base, block.shape), axis=-1)
        srt = np.take_along_axis(block, order, axis=-1)
        tied = (srt[:, 1:] == srt[:, :-1]).any(axis=-1)
        if tied.any():
            ranks[tied] = rankdata(block[tied], axis=-1, method="average")
        out[start:start + chunk] = ranks
    return out


def _ranks_and_ties(y: np.ndarray, tie_correction: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Mean ranks along the last axis (float32) and the per-series tie term."""
    ranks = _mean_ranks(y.reshape(-1, y.shape[-1])).reshape(y.shape)
    if not tie_correction:
        return ranks, None
    size = rankdata(y, axis=-1, method="max") - rankdata(y, axis=-1, method="min") + 1
    ties = (size.astype(np.float64) ** 2 - 1.0).sum(axis=-1)
    return ranks, ties


def reho_volume(
    data: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    neighbourhood: int = 27,
    tie_correction: bool = False,
) -> np.ndarray:
    """Voxel-wise ReHo (Kendall's W) of a 4-D series.

    Parameters
    ----------
    data
        ``(X, Y, Z, T)`` preprocessed (band-passed, unsmoothed) series.
    mask
        Boolean ``(X, Y, Z)`` brain mask; default all voxels.
    neighbourhood
        27 (box, default), 19 or 7 voxels.
    tie_correction
        Use the tie-corrected denominator.

    Returns
    -------
    numpy.ndarray
        float32 ``(X, Y, Z)`` map in ``[0, 1]``; 0 outside the mask and on the outer layer.

    Raises
    ------
    InputError
        On a wrong shape or neighbourhood size.
    """
    data = np.asarray(data)
    if data.ndim != 4:
        raise InputError(f"ReHo needs a 4-D series, got shape {data.shape}")
    nx, ny, nz, n = data.shape
    offsets = _offsets(neighbourhood)
    m = np.ones(data.shape[:3], bool) if mask is None else np.asarray(mask, bool).copy()
    if m.shape != data.shape[:3]:
        raise InputError(f"ReHo mask shape {m.shape} does not match data {data.shape[:3]}")
    m &= np.ptp(data, axis=-1) > 0
    out = np.zeros(data.shape[:3], np.float32)
    if n < 2 or not m.any():
        return out

    ranks = np.zeros(data.shape, np.float32)
    ranks_in, ties_in = _ranks_and_ties(data[m], tie_correction)
    ranks[m] = ranks_in
    ties = None
    if tie_correction:
        ties = np.zeros(data.shape[:3])
        ties[m] = ties_in

    # neighbourhood sums by shifting the zero-padded arrays (outside the grid = outside mask)
    pr = np.pad(ranks, ((1, 1), (1, 1), (1, 1), (0, 0)))
    pm = np.pad(m, 1).astype(np.float64)
    pt = np.pad(ties, 1) if ties is not None else None
    # rank sums are multiples of 0.5 below 2**23: exact in float32
    r_sum = np.zeros(data.shape, np.float32)
    k = np.zeros(data.shape[:3])
    t_sum = np.zeros(data.shape[:3])
    for dx, dy, dz in offsets:
        sl = (slice(1 + dx, 1 + dx + nx), slice(1 + dy, 1 + dy + ny), slice(1 + dz, 1 + dz + nz))
        r_sum += pr[sl]
        k += pm[sl]
        if pt is not None:
            t_sum += pt[sl]
    s = np.zeros(data.shape[:3])
    for x in range(nx):  # slab-wise in float64 to bound the temporary's size
        dev = r_sum[x].astype(np.float64) - k[x, ..., None] * (n + 1) / 2.0
        s[x] = np.einsum("...t,...t->...", dev, dev)
    den = k**2 * (n**3 - n) - (k * t_sum if tie_correction else 0.0)
    valid = m & (k >= 2) & (den > 0)
    w = np.zeros(data.shape[:3])
    w[valid] = 12.0 * s[valid] / den[valid]
    w[[0, -1], :, :] = 0
    w[:, [0, -1], :] = 0
    w[:, :, [0, -1]] = 0
    out[:] = np.clip(w, 0.0, 1.0)
    return out


def mesh_adjacency(faces: np.ndarray, n_vertices: int) -> sp.csr_matrix:
    """Symmetric vertex adjacency (1-ring) of a triangle mesh.

    Parameters
    ----------
    faces
        ``(F, 3)`` vertex indices.
    n_vertices
        Number of vertices ``V``.

    Returns
    -------
    scipy.sparse.csr_matrix
        ``(V, V)`` 0/1 matrix, zero diagonal.
    """
    faces = np.asarray(faces, dtype=np.int64)
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise InputError(f"mesh faces must be (F, 3), got {faces.shape}")
    i = faces[:, [0, 1, 2, 1, 2, 0]].ravel()
    j = faces[:, [1, 2, 0, 0, 1, 2]].ravel()
    adj = sp.coo_matrix((np.ones(i.size), (i, j)), shape=(n_vertices, n_vertices)).tocsr()
    adj.data[:] = 1.0
    adj.setdiag(0)
    adj.eliminate_zeros()
    return adj


def reho_surface(
    series: np.ndarray,
    neighbours: np.ndarray | sp.spmatrix,
    *,
    mask: np.ndarray | None = None,
    tie_correction: bool = False,
) -> np.ndarray:
    """Vertex-wise ReHo over each vertex and its 1-ring.

    Parameters
    ----------
    series
        ``(V, T)`` vertex time series.
    neighbours
        ``(F, 3)`` triangles or a sparse ``(V, V)`` adjacency matrix (nonzero = neighbour).
    mask
        Boolean ``(V,)``; vertices outside (e.g. the medial wall) are not used as neighbours
        and get 0.
    tie_correction
        Use the tie-corrected denominator.

    Returns
    -------
    numpy.ndarray
        float32 ``(V,)`` W values.
    """
    series = np.asarray(series)
    if series.ndim != 2:
        raise InputError(f"surface ReHo needs (V, T) series, got {series.shape}")
    v, n = series.shape
    if sp.issparse(neighbours):
        adj = sp.csr_matrix(neighbours, dtype=np.float64)
        adj.data[:] = 1.0
    else:
        adj = mesh_adjacency(neighbours, v)
    if adj.shape != (v, v):
        raise InputError(f"adjacency shape {adj.shape} does not match {v} vertices")
    adj = (adj + sp.identity(v, format="csr")).tocsr()
    adj.data[:] = 1.0
    m = np.ones(v, bool) if mask is None else np.asarray(mask, bool).copy()
    m &= np.ptp(series, axis=1) > 0
    ranks, ties = _ranks_and_ties(series, tie_correction)
    ranks = ranks.astype(np.float64) * m[:, None]
    r_sum = adj @ ranks
    k = adj @ m.astype(np.float64)
    s = np.sum((r_sum - k[:, None] * (n + 1) / 2.0) ** 2, axis=1)
    den = k**2 * (n**3 - n)
    if tie_correction:
        den = den - k * (adj @ (ties * m))
    valid = m & (k >= 2) & (den > 0)
    out = np.zeros(v, np.float32)
    out[valid] = np.clip(12.0 * s[valid] / den[valid], 0.0, 1.0)
    return out
