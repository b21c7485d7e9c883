"""Block reduction of 3-D voxel grids by integer factors, and padded bounding boxes (one copy each).

Coarse grids speed up registration, N4 and mask morphology. A coarse voxel is the mean (or
max) of a ``f0 x f1 x f2`` block of fine voxels and sits at the centre of its block, so the
coarse image occupies the same physical space (:func:`block_affine`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

__all__ = ["block_affine", "block_factor", "block_reduce", "block_upsample", "padded_box"]


def _factors(factor: int | Sequence[int]) -> np.ndarray:
    return np.broadcast_to(np.asarray(factor, dtype=int), (3,)).copy()


def block_factor(zooms: Sequence[float], grid_mm: float) -> int:
    """Integer factor that brings the finest voxel size in ``zooms`` to about ``grid_mm``."""
    return max(1, round(grid_mm / min(zooms)))


def block_reduce(
    arr: np.ndarray,
    factor: int | Sequence[int],
    *,
    how: Literal["mean", "max"] = "mean",
    edge: Literal["crop", "pad"] = "crop",
) -> np.ndarray:
    """Mean or max over ``factor`` blocks of the first three axes.

    Parameters
    ----------
    arr
        3-D array.
    factor
        One factor for all axes or one per axis (>= 1).
    how
        ``"mean"`` (dtype follows numpy's mean) or ``"max"`` (dtype kept; max of a boolean
        mask is its dilation to the coarse grid).
    edge
        ``"crop"``: drop the last partial block of each axis; ``"pad"``: complete it by
        repeating the edge voxels (every fine voxel lands in a block).

    Returns
    -------
    np.ndarray
        The coarse array (``arr`` itself when every factor is 1).
    """
    f = _factors(factor)
    if np.all(f == 1):
        return arr
    a = np.asarray(arr)
    if edge == "pad":
        a = np.pad(a, [(0, int((-n) % k)) for n, k in zip(a.shape[:3], f)], mode="edge")
    shape = [int(n // k) for n, k in zip(a.shape[:3], f)]
    a = a[: shape[0] * f[0], : shape[1] * f[1], : shape[2] * f[2]]
    a = a.reshape(shape[0], f[0], shape[1], f[1], shape[2], f[2])
    return a.mean(axis=(1, 3, 5)) if how == "mean" else a.max(axis=(1, 3, 5))


def block_affine(affine: np.ndarray, factor: int | Sequence[int]) -> np.ndarray:
    """Voxel-to-world affine of the coarse grid (each voxel at the centre of its block)."""
    f = _factors(factor)
    out = np.array(affine, dtype=float, copy=True)
    out[:3, 3] = affine[:3, :3] @ ((f - 1) / 2.0) + affine[:3, 3]
    out[:3, :3] = affine[:3, :3] * f
    return out


def block_upsample(arr: np.ndarray, factor: int, shape: Sequence[int]) -> np.ndarray:
    """Nearest-neighbour inverse of :func:`block_reduce` (``edge="pad"``), cropped to ``shape``."""
    if factor == 1:
        return arr
    out = arr
    for axis in range(3):
        out = np.repeat(out, factor, axis=axis)
    return np.ascontiguousarray(out[: shape[0], : shape[1], : shape[2]])


def padded_box(mask: np.ndarray, pad: int | Sequence[int]) -> tuple[slice, ...]:
    """Bounding box of the true voxels of ``mask``, grown by ``pad`` voxels and clipped.

    Parameters
    ----------
    mask
        Non-empty boolean array.
    pad
        Voxels added on both sides, one number or one per axis.

    Returns
    -------
    tuple of slice
        One slice per axis of ``mask``.
    """
    mask = np.asarray(mask, dtype=bool)
    pads = np.broadcast_to(np.asarray(pad), (mask.ndim,))
    out = []
    # the extent along each axis from the mask's projection onto that axis (no index list
    # of every true voxel: a face region or brain has millions)
    for ax in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != ax)))
        if hit.size == 0:
            raise ValueError("padded_box needs a mask with at least one true voxel")
        out.append(slice(int(max(hit[0] - pads[ax], 0)),
                         int(min(hit[-1] + 1 + pads[ax], mask.shape[ax]))))
    return tuple(out)
