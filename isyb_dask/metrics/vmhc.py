"""Voxel-/vertex-mirrored homotopic connectivity (METHODS §10).

VMHC is the Pearson correlation between a series and the series at the mirrored location,
Fisher-transformed: ``z = atanh(clip(r, -(1 - 1e-7), 1 - 1e-7))``. A zero-variance (flat)
series has no correlation: its VMHC is NaN (missing), not 0 ("no homotopic connectivity"),
and the metrics stage records how many vertices that concerns (``surface/provenance``). No detrending is applied here (CCS ``3dTcorrelate -polort -1``): the input is the
preprocessed series.

* :func:`vmhc_pairs` correlates matched rows, e.g. fsLR 32k left vertex ``i`` with right
  vertex ``i`` (the two meshes are in vertex correspondence); the result is assigned to both
  hemispheres by the caller.
* :func:`vmhc_volume` works on a grid in a space that is symmetric about ``x = 0`` (a
  symmetric template such as MNI152 2009 sym): the mirror of world point ``(x, y, z)`` is
  ``(-x, y, z)``. When the mirrored grid coordinate falls between voxels it is linearly
  interpolated along x. Voxels whose mirror is outside the mask (mask AND mirrored mask) and
  voxels on the mid-sagittal plane (their mirror is themselves, DPABI convention) are 0;
  voxels with a flat series or a flat mirror are NaN.
"""

from __future__ import annotations

import numpy as np

from isyb_dask.errors import InputError

__all__ = ["R_CLIP", "fisher_z", "vmhc_pairs", "mirror_x", "vmhc_volume"]

R_CLIP = 1.0 - 1e-7
_CHUNK = 4096


def fisher_z(r: np.ndarray) -> np.ndarray:
    """Fisher transform with ``r`` clipped to ``±(1 - 1e-7)``; NaN stays NaN.

    Parameters
    ----------
    r
        Correlation coefficients.

    Returns
    -------
    numpy.ndarray
        ``atanh(clip(r))`` as float64.
    """
    r = np.asarray(r, dtype=np.float64)
    return np.arctanh(np.clip(r, -R_CLIP, R_CLIP))


def _pearson_block(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    a -= a.mean(axis=-1, keepdims=True)
    b -= b.mean(axis=-1, keepdims=True)
    saa = np.einsum("...t,...t->...", a, a)
    sbb = np.einsum("...t,...t->...", b, b)
    sab = np.einsum("...t,...t->...", a, b)
    den = np.sqrt(saa * sbb)
    return np.where(den > 0, sab / np.where(den > 0, den, 1.0), np.nan)


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Pearson r of two ``(V, T)`` arrays, in cache-sized chunks; NaN if flat."""
    r = np.full(a.shape[0], np.nan)
    for start in range(0, a.shape[0], _CHUNK):
        sl = slice(start, start + _CHUNK)
        r[sl] = _pearson_block(a[sl], b[sl])
    return r


def vmhc_pairs(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Fisher-z correlation of matched series (surface VMHC).

    Parameters
    ----------
    left, right
        ``(V, T)`` series in vertex correspondence.

    Returns
    -------
    numpy.ndarray
        float32 ``(V,)`` Fisher z; NaN where either series has zero variance.

    Raises
    ------
    InputError
        If the shapes differ or there are fewer than 3 time points.
    """
    left = np.asarray(left)
    right = np.asarray(right)
    if left.shape != right.shape or left.ndim != 2:
        raise InputError(f"VMHC needs two (V, T) arrays of equal shape, got {left.shape}, "
                         f"{right.shape}")
    if left.shape[1] < 3:
        raise InputError(f"VMHC needs at least 3 time points, got {left.shape[1]}")
    return fisher_z(_pearson_rows(left, right)).astype(np.float32)


def _mirror_index(affine: np.ndarray, nx: int) -> np.ndarray:
    """Fractional x index of the mirror of each x index (the grid must be x-aligned)."""
    aff = np.asarray(affine, dtype=np.float64)
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    m = np.linalg.inv(aff) @ flip @ aff
    expected = np.diag([-1.0, 1.0, 1.0, 1.0])
    if not np.allclose(m[:3, :3], expected[:3, :3], atol=1e-4) or not np.allclose(
        m[1:3, 3], 0, atol=1e-3
    ):
        raise InputError(
            "VMHC volume: the grid's first axis is not the left-right axis of a space symmetric "
            "about x=0; resample to a symmetric template first"
        )
    return m[0, 3] - np.arange(nx)


def _mirror_weights(affine: np.ndarray, nx: int) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                          np.ndarray]:
    """Lower/upper source x indices, weight of the upper one, and in-grid flags."""
    src = _mirror_index(affine, nx)
    inside = (src >= -1e-6) & (src <= nx - 1 + 1e-6)
    src_c = np.clip(src, 0, nx - 1)
    lo = np.clip(np.floor(src_c + 1e-9).astype(int), 0, nx - 1)
    hi = np.clip(lo + 1, 0, nx - 1)
    w = np.clip(src_c - lo, 0.0, 1.0)
    return lo, hi, w, inside


def mirror_x(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror an array about world ``x = 0`` along its first axis.

    Parameters
    ----------
    data
        Array with the grid on its first three axes (extra axes, e.g. time, follow).
    affine
        4x4 voxel-to-world affine; its first axis must be the x axis.

    Returns
    -------
    mirrored, inside
        The mirrored array (linear interpolation along x, float64; 0 where the mirror is off
        the grid) and a boolean ``(X,)`` vector telling which x indices have their mirror
        inside the grid.
    """
    data = np.asarray(data)
    lo, hi, w, inside = _mirror_weights(affine, data.shape[0])
    w = w.reshape((-1,) + (1,) * (data.ndim - 1))
    mirrored = (1.0 - w) * data[lo] + w * data[hi]
    mirrored[~inside] = 0
    return mirrored, inside


def vmhc_volume(
    data: np.ndarray,
    affine: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    zstat: bool = False,
) -> np.ndarray:
    """Voxel-wise VMHC on a grid in a symmetric space.

    Parameters
    ----------
    data
        ``(X, Y, Z, T)`` preprocessed series in symmetric-template space.
    affine
        Voxel-to-world affine of ``data``.
    mask
        Boolean brain mask ``(X, Y, Z)``; default all voxels.
    zstat
        Return ``z * sqrt(T - 3)`` (CCS z-stat) instead of the Fisher z.

    Returns
    -------
    numpy.ndarray
        float32 ``(X, Y, Z)`` map.

    Raises
    ------
    InputError
        On a wrong shape or an affine whose first axis is not left-right symmetric.
    """
    data = np.asarray(data)
    if data.ndim != 4 or data.shape[-1] < 3:
        raise InputError(f"VMHC needs a 4-D series with >= 3 volumes, got {data.shape}")
    m = np.ones(data.shape[:3], bool) if mask is None else np.asarray(mask, bool)
    if m.shape != data.shape[:3]:
        raise InputError(f"VMHC mask shape {m.shape} does not match data {data.shape[:3]}")
    nx = data.shape[0]
    src = _mirror_index(affine, nx)
    lo, hi, w, inside = _mirror_weights(affine, nx)
    m_mirror, _ = mirror_x(m.astype(np.float64), affine)
    use = m & (m_mirror > 0.999) & inside[:, None, None]
    midline = np.abs(src - np.arange(nx)) < 0.5
    use &= ~midline[:, None, None]
    ix, iy, iz = np.nonzero(use)
    out = np.zeros(data.shape[:3], np.float32)
    z = np.zeros(ix.size)
    for start in range(0, ix.size, _CHUNK):
        sl = slice(start, start + _CHUNK)
        cx, cy, cz = ix[sl], iy[sl], iz[sl]
        partner = data[lo[cx], cy, cz]
        wv = w[cx]
        if np.any(wv > 0):  # fractional mirror: interpolate along x
            partner = (1.0 - wv[:, None]) * partner + wv[:, None] * data[hi[cx], cy, cz]
        z[sl] = fisher_z(_pearson_block(data[cx, cy, cz], partner))
    if zstat:
        z = z * np.sqrt(data.shape[-1] - 3)
    out[use] = z
    return out
