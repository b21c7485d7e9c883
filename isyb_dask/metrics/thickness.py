"""Volumetric cortical thickness from tissue posteriors: Laplace / Eulerian PDE method.

Method (Jones, Buchbinder & Aharon 2000; Yezzi & Prince 2003):

1. Labels: each voxel goes to the class of largest posterior among WM, GM and "outside"
   (CSF plus everything out of the brain, ``1 - p_gm - p_wm``).
2. Laplace's equation ``lap(u) = 0`` is solved in the GM with ``u = 0`` in the WM and
   ``u = 1`` outside (red-black Gauss-Seidel sweeps on the GM voxels only,
   :mod:`isyb_dask.metrics.thickness_solvers`, started from the normalised distance
   ``d_wm / (d_wm + d_out)``, which is already close to the solution in a thin ribbon). ``T = grad(u) / |grad(u)|`` gives the streamline direction.
3. The lengths ``L0`` (to the WM boundary) and ``L1`` (to the outer boundary) along the
   streamlines solve ``grad(L0) . T = 1`` and ``-grad(L1) . T = 1`` (Yezzi & Prince's
   Eulerian PDEs). Upwind finite differences give, per GM voxel,
   ``L0(x) = (1 + sum_i |T_i|/h_i L0(x - s_i e_i)) / sum_i |T_i|/h_i`` with
   ``s_i = sign(T_i)`` (and the mirror for ``L1``), iterated (Gauss-Seidel) to convergence.
4. Boundary values use partial volume (sub-voxel boundary position, as in Acosta et al.
   2009): in 1-D a voxel whose WM fraction is ``f`` has its centre ``0.5 - f`` voxels from the
   WM boundary (positive on the GM side), so boundary voxels (voxels next to the GM with
   ``0 < p_wm``) are fixed at ``L0 = (0.5 - p_wm) h`` and likewise ``L1 = (0.5 - p_out) h``.
   For hard segmentations this puts the boundary half-way between voxel centres.
5. Thickness ``= L0 + L1`` on GM voxels, 0 elsewhere.

Everything is vectorised over the list of GM voxels (neighbour index tables), so the cost
scales with the ribbon, not with the volume. The compared alternative (ANTs DiReCT,
``antspyx.kelly_kapowski``) is timed in ``benchmarks/bench_morphometry.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from isyb_dask.blocks import padded_box
from isyb_dask.metrics.thickness_solvers import neighbours, solve_laplace, solve_length

__all__ = ["ThicknessResult", "laplace_thickness", "sulcal_skeleton", "tissue_labels"]

_OUT, _GM, _WM = 0, 1, 2


@dataclass(frozen=True)
class ThicknessResult:
    """Output of :func:`laplace_thickness`.

    Attributes
    ----------
    thickness
        float32 map (mm), 0 outside the GM.
    gm
        bool GM label mask.
    iterations
        ``{"laplace": n, "l0": n, "l1": n}`` iterations used.
    n_skeleton
        GM voxels relabelled as sulcal CSF by :func:`sulcal_skeleton`.
    skeleton
        Their bool mask (or None).
    """

    thickness: np.ndarray
    gm: np.ndarray
    iterations: dict[str, int]
    n_skeleton: int = 0
    skeleton: np.ndarray | None = None


def tissue_labels(p_gm: np.ndarray, p_wm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hard labels (0 outside/CSF, 1 GM, 2 WM) and the outside probability.

    Parameters
    ----------
    p_gm, p_wm
        GM and WM posteriors (same shape, values in [0, 1]).

    Returns
    -------
    labels, p_out
        ``uint8`` labels and ``1 - p_gm - p_wm`` clipped to [0, 1].
    """
    p_gm = np.clip(np.nan_to_num(np.asarray(p_gm, dtype=np.float32)), 0, 1)
    p_wm = np.clip(np.nan_to_num(np.asarray(p_wm, dtype=np.float32)), 0, 1)
    p_out = np.clip(1.0 - p_gm - p_wm, 0, 1)
    labels = np.argmax(np.stack([p_out, p_gm, p_wm]), axis=0).astype(np.uint8)
    return labels, p_out


def sulcal_skeleton(
    labels: np.ndarray,
    zooms: tuple[float, float, float],
    *,
    min_csf_distance_vox: float = 1.5,
    max_cos: float = -0.5,
    min_wm_distance_vox: float = 1.5,
) -> np.ndarray:
    """GM voxels on the skeleton of fused sulcal banks (reconstructed sulcal CSF).

    Where two banks of a sulcus touch without resolved CSF between them (common at 1-2 mm),
    the GM looks twice as thick. As in projection-based thickness (Dahnke et al. 2013), the
    sulcus is reconstructed as the ridge of the distance to the WM inside the GM, where the
    WM reached from either side belongs to different banks. A GM voxel is on it when, along
    one of the 13 lattice directions, (a) its WM distance is not smaller than either
    neighbour's and neither neighbour is WM, (b) the WM points nearest to the two
    neighbours lie on opposite sides of it
    (the angle between the two directions has a cosine <= ``max_cos``: the medial-axis
    test; a tangential bump of the distance map on a flat or curved sheet points to WM on one
    side only), and (c) it lies at least ``min_csf_distance_vox`` voxels from labelled CSF
    (gyral crowns next to CSF are left alone).

    Parameters
    ----------
    labels
        0 outside/CSF, 1 GM, 2 WM.
    zooms
        Voxel sizes (mm).
    min_csf_distance_vox
        Smallest distance to CSF (in voxels) of a skeleton voxel.
    max_cos
        Largest cosine of the angle between the directions to the two WM points.
    min_wm_distance_vox
        Smallest distance to the WM (voxels) of a skeleton voxel: the first layer next to
        the WM carries staircase artefacts of the distance map.

    Returns
    -------
    np.ndarray
        Boolean mask.
    """
    zooms = np.asarray(zooms, dtype=np.float64)
    shape = labels.shape
    d_out = ndimage.distance_transform_edt(labels != _OUT, sampling=zooms)
    cand = (labels == _GM) & (d_out >= min_csf_distance_vox * float(zooms.min()))
    ridge = np.zeros(shape, dtype=bool)
    if not cand.any() or not (labels == _WM).any():
        return ridge
    d_wm, feat = ndimage.distance_transform_edt(
        labels != _WM, sampling=zooms, return_indices=True
    )
    cand &= d_wm >= min_wm_distance_vox * float(zooms.min())
    idx = np.flatnonzero(cand)
    coords = np.stack(np.unravel_index(idx, shape), axis=1)
    d0 = d_wm.ravel()[idx]
    fflat = [f.ravel() for f in feat]
    dflat = d_wm.ravel()
    lflat = labels.ravel()
    hit = np.zeros(idx.size, dtype=bool)
    for off in [
        (i, j, k)
        for i in (-1, 0, 1)
        for j in (-1, 0, 1)
        for k in (-1, 0, 1)
        if (i, j, k) > (0, 0, 0)
    ]:
        o = np.asarray(off)
        a = np.ravel_multi_index(tuple(np.clip(coords + o, 0, np.asarray(shape) - 1).T), shape)
        b = np.ravel_multi_index(tuple(np.clip(coords - o, 0, np.asarray(shape) - 1).T), shape)
        top = (d0 >= dflat[a]) & (d0 >= dflat[b]) & (lflat[a] != _WM) & (lflat[b] != _WM)
        # vectors from the voxel to the WM points nearest to its two neighbours
        va = np.stack([(fflat[ax][a] - coords[:, ax]) * zooms[ax] for ax in range(3)], axis=1)
        vb = np.stack([(fflat[ax][b] - coords[:, ax]) * zooms[ax] for ax in range(3)], axis=1)
        cos = (va * vb).sum(axis=1) / np.maximum(
            np.linalg.norm(va, axis=1) * np.linalg.norm(vb, axis=1), 1e-9
        )
        hit |= top & (cos <= max_cos)
    ridge.ravel()[idx[hit]] = True
    return ridge


def _spacing_across(idx, side, gm, zooms) -> np.ndarray:
    """Voxel size across the boundary at boundary voxels ``idx`` (mean over the axes on
    which the voxel faces the other side: GM for ``side`` voxels, ``side`` for GM voxels)."""
    coords = np.unravel_index(idx, gm.shape)
    own_side = side.ravel()[idx]
    num = np.zeros(idx.size)
    den = np.zeros(idx.size)
    for ax in range(3):
        for step in (-1, 1):
            c = list(coords)
            c[ax] = np.clip(c[ax] + step, 0, gm.shape[ax] - 1)
            other = np.where(own_side, gm[tuple(c)], side[tuple(c)])
            num += other * zooms[ax]
            den += other
    return np.where(den > 0, num / np.maximum(den, 1), float(np.mean(zooms)))


def laplace_thickness(
    p_gm: np.ndarray,
    p_wm: np.ndarray,
    zooms: tuple[float, float, float],
    *,
    max_iter: int = 300,
    tol: float = 1e-3,
    reconstruct_sulci: bool = True,
) -> ThicknessResult:
    """Cortical thickness (mm) by the Laplace / Eulerian-PDE method.

    Parameters
    ----------
    p_gm, p_wm
        GM and WM posteriors on one grid (outside = ``1 - p_gm - p_wm``).
    zooms
        Voxel sizes (mm) along the three array axes.
    max_iter
        Upper bound on the Jacobi iterations of each of the three solves.
    tol
        Stop when the largest update is below this (``u`` units for Laplace, mm for L0/L1).
    reconstruct_sulci
        Relabel the GM skeleton of fused sulcal banks as CSF first (:func:`sulcal_skeleton`).

    Returns
    -------
    ThicknessResult
        Thickness map (float32 mm, 0 outside the GM), GM mask and iteration counts.

    Raises
    ------
    ValueError
        If the posteriors have different shapes or are not 3-D.
    """
    p_gm = np.asarray(p_gm)
    p_wm = np.asarray(p_wm)
    if p_gm.shape != p_wm.shape or p_gm.ndim != 3:
        raise ValueError(f"posteriors must be 3-D with one shape, got {p_gm.shape}, {p_wm.shape}")
    zooms = tuple(float(z) for z in zooms)
    shape = p_gm.shape
    labels, p_out = tissue_labels(p_gm, p_wm)
    # Work on the bounding box of the GM and WM grown by 2 outside voxels (a sixth of a 1 mm
    # head's grid): every distance below is exact there, because the nearest outside voxel of
    # a point in the box is never beyond its outer layer (projection onto a box shortens
    # distances) and every GM and WM voxel is inside it; the result is embedded back.
    tissue = labels != _OUT
    box = padded_box(tissue, 2) if tissue.any() else tuple(slice(0, n) for n in shape)
    parity = sum(sl.start for sl in box) % 2  # the crop sweeps in the whole grid's order
    full = _laplace_in_box(labels[box], p_out[box], p_wm[box], zooms, max_iter, tol,
                           reconstruct_sulci, parity)
    thickness = np.zeros(shape, dtype=np.float32)
    thickness[box] = full.thickness
    gm_mask = np.zeros(shape, dtype=bool)
    gm_mask[box] = full.gm
    skeleton = None
    if full.skeleton is not None:
        skeleton = np.zeros(shape, dtype=bool)
        skeleton[box] = full.skeleton
    return ThicknessResult(thickness=thickness, gm=gm_mask, iterations=full.iterations,
                           n_skeleton=full.n_skeleton, skeleton=skeleton)


def _laplace_in_box(labels, p_out, p_wm, zooms, max_iter, tol, reconstruct_sulci, parity=0):
    """:func:`laplace_thickness` on one grid of labels (the tissue's bounding box).

    ``parity``: of ``i + j + k`` at the box's first voxel in the whole grid (the sweep order).
    """
    shape = labels.shape
    # pad by one voxel so that every GM voxel has six in-volume neighbours
    labels = np.pad(labels, 1, constant_values=_OUT)
    p_out = np.pad(p_out, 1, constant_values=1.0)
    p_wm_p = np.pad(np.clip(np.nan_to_num(p_wm.astype(np.float32)), 0, 1), 1)
    pshape = labels.shape
    n_ridge = 0
    ridge = None
    if reconstruct_sulci:
        ridge = sulcal_skeleton(labels, zooms)
        n_ridge = int(ridge.sum())
        labels[ridge] = _OUT
        p_out[ridge] = 0.5  # the boundary passes through the skeleton voxel's centre
    gm = labels == _GM
    gm_idx = np.flatnonzero(gm)
    thickness = np.zeros(shape, dtype=np.float32)
    if gm_idx.size == 0:
        return ThicknessResult(
            thickness, gm[1:-1, 1:-1, 1:-1].copy(), {"laplace": 0, "l0": 0, "l1": 0}, n_ridge,
            None if ridge is None else ridge[1:-1, 1:-1, 1:-1].copy(),
        )
    nbr = neighbours(gm_idx, pshape)
    d_wm = ndimage.distance_transform_edt(labels != _WM, sampling=zooms).ravel()[gm_idx]
    d_out = ndimage.distance_transform_edt(labels != _OUT, sampling=zooms).ravel()[gm_idx]
    init = d_wm / np.maximum(d_wm + d_out, 1e-6)
    u0 = np.where(labels == _WM, 0.0, 1.0).ravel()
    # the box is padded by one voxel below: its origin's parity flips
    u, n_lap = solve_laplace(u0, gm_idx, nbr, zooms, init, max_iter, tol * 1e-2, pshape,
                             1 - parity)
    grad = np.empty((gm_idx.size, 3))
    for ax in range(3):
        grad[:, ax] = (u[nbr[:, 2 * ax + 1]] - u[nbr[:, 2 * ax]]) / (2.0 * zooms[ax])
    norm = np.linalg.norm(grad, axis=1)
    tangent = grad / np.where(norm > 0, norm, 1.0)[:, None]
    # boundary voxels: any voxel next to GM on the WM side (labelled WM, or GM holding WM)
    near_gm = ndimage.binary_dilation(gm, structure=ndimage.generate_binary_structure(3, 1))
    near_wm = ndimage.binary_dilation(labels == _WM, ndimage.generate_binary_structure(3, 1))
    near_out = ndimage.binary_dilation(labels == _OUT, ndimage.generate_binary_structure(3, 1))
    fix0 = np.flatnonzero(
        ((labels == _WM) & near_gm) | (gm & near_wm & (p_wm_p > 0.0))
    )
    fix1 = np.flatnonzero(((labels == _OUT) & near_gm) | (gm & near_out & (p_out > 0.0)))
    val0 = (0.5 - p_wm_p.ravel()[fix0]) * _spacing_across(fix0, labels == _WM, gm, zooms)
    val1 = (0.5 - p_out.ravel()[fix1]) * _spacing_across(fix1, labels == _OUT, gm, zooms)
    h_max = max(zooms)
    l0, n0 = solve_length(
        tangent, gm_idx, nbr, zooms, fix0, val0, +1, max_iter, tol, labels.size, 2 * d_wm + h_max,
        pshape, 1 - parity,
    )
    l1, n1 = solve_length(
        tangent, gm_idx, nbr, zooms, fix1, val1, -1, max_iter, tol, labels.size,
        2 * d_out + h_max, pshape, 1 - parity,
    )
    t = np.clip(l0[gm_idx], 0, None) + np.clip(l1[gm_idx], 0, None)
    t_pad = np.zeros(pshape, dtype=np.float32)
    t_pad.ravel()[gm_idx] = t
    thickness = t_pad[1:-1, 1:-1, 1:-1].copy()
    return ThicknessResult(
        thickness=thickness,
        gm=gm[1:-1, 1:-1, 1:-1].copy(),
        iterations={"laplace": n_lap, "l0": n0, "l1": n1},
        n_skeleton=n_ridge,
        skeleton=None if ridge is None else ridge[1:-1, 1:-1, 1:-1].copy(),
    )
