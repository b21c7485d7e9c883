"""Volume-to-surface sampling onto fsLR 32k between the white and pial surfaces.

Variant: *trilinear at several cortical depths, averaged* (the CCS route samples trilinearly
at mid-thickness only, ``mri_vol2surf --projfrac 0.5``; we average ``depths`` to be less
sensitive to the surface position). A point at depth ``d`` is
``white + d * (pial - white)`` in MNI mm (``d = 0`` white, ``d = 1`` pial; negative depths go
into the white matter, which is how the superficial-WM diffusion metrics are sampled).

Masked trilinear interpolation: when a brain (or tissue) mask is given, only the in-mask
corners of the 2x2x2 interpolation cell contribute and their weights are renormalised; a
sample whose in-mask weight is below ``min_weight`` (default 0.5, i.e. the point lies mostly
outside the mask) or which falls outside the volume is ignored. The vertex value is the mean
of its valid samples; a vertex with no valid sample, and every medial-wall vertex, is NaN.

The sampling is a sparse ``(n_vertices, n_voxels)`` matrix built once per geometry, so a
4-D series is projected with one sparse product.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from isyb_dask.metrics.fslr import FsLR32k, load_fslr32k

__all__ = [
    "GM_DEPTHS",
    "WM_DEPTHS",
    "SurfaceSampler",
    "build_sampler",
    "ribbon_points",
    "sample_to_surface",
]

#: Relative cortical depths used for grey-matter metrics (white = 0, pial = 1).
GM_DEPTHS: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9)
#: Depths below the white surface (in units of local thickness) for superficial WM.
WM_DEPTHS: tuple[float, ...] = (-1.0, -0.75, -0.5, -0.25)


@dataclass(frozen=True)
class SurfaceSampler:
    """A precomputed volume-to-surface projection.

    Attributes
    ----------
    matrix
        ``(n_vertices, n_voxels)`` CSR matrix; ``matrix @ volume.reshape(n_voxels, -1)``
        gives the vertex values (rows of invalid vertices are empty).
    valid
        ``(n_vertices,) bool``: vertices with at least one valid sample, off the medial wall.
    vol_shape
        Spatial shape of the volumes this sampler accepts.
    """

    matrix: sp.csr_matrix
    valid: np.ndarray
    vol_shape: tuple[int, int, int]

    def apply(self, data: np.ndarray) -> np.ndarray:
        """Project a 3-D volume or a 4-D series (last axis = time or maps).

        Parameters
        ----------
        data
            Array with spatial shape ``vol_shape`` (plus an optional 4th axis).

        Returns
        -------
        np.ndarray
            ``(n_vertices,)`` or ``(n_vertices, n_t)`` float32, NaN where not valid.
        """
        data = np.asarray(data)
        if tuple(data.shape[:3]) != self.vol_shape:
            raise ValueError(f"volume shape {data.shape[:3]} != sampler shape {self.vol_shape}")
        flat = data.reshape(int(np.prod(self.vol_shape)), -1).astype(np.float64, copy=False)
        out = np.asarray(self.matrix @ flat, dtype=np.float32)
        out[~self.valid] = np.nan
        return out[:, 0] if data.ndim == 3 else out


def ribbon_points(surf: FsLR32k, depths: tuple[float, ...] = GM_DEPTHS) -> np.ndarray:
    """MNI coordinates of the sampling points.

    Parameters
    ----------
    surf
        fsLR 32k surfaces.
    depths
        Relative depths (0 = white, 1 = pial).

    Returns
    -------
    np.ndarray
        ``(n_depths, n_vertices, 3)`` float64.
    """
    white = surf.coords["white"]
    pial = surf.coords["pial"]
    d = np.asarray(depths, dtype=np.float64)[:, None, None]
    return white[None] + d * (pial - white)[None]


def _trilinear(points_vox: np.ndarray, shape: tuple[int, int, int]) -> tuple[np.ndarray, ...]:
    """Corner flat indices (n, 8), weights (n, 8) and in-volume flags (n,)."""
    base = np.floor(points_vox).astype(np.int64)
    frac = points_vox - base
    inside = np.all((points_vox >= 0) & (points_vox <= np.asarray(shape) - 1), axis=1)
    idx = np.empty((points_vox.shape[0], 8), dtype=np.int64)
    wts = np.empty((points_vox.shape[0], 8), dtype=np.float64)
    k = 0
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                c = base + np.array([dx, dy, dz])
                c = np.clip(c, 0, np.asarray(shape) - 1)
                idx[:, k] = np.ravel_multi_index((c[:, 0], c[:, 1], c[:, 2]), shape)
                wx = frac[:, 0] if dx else 1.0 - frac[:, 0]
                wy = frac[:, 1] if dy else 1.0 - frac[:, 1]
                wz = frac[:, 2] if dz else 1.0 - frac[:, 2]
                wts[:, k] = wx * wy * wz
                k += 1
    return idx, wts, inside


def build_sampler(
    vol_shape: tuple[int, ...],
    affine: np.ndarray,
    *,
    native_to_mni: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    depths: tuple[float, ...] = GM_DEPTHS,
    surf: FsLR32k | None = None,
    min_weight: float = 0.5,
) -> SurfaceSampler:
    """Build the sparse projection of a volume grid onto fsLR 32k.

    Parameters
    ----------
    vol_shape
        Spatial shape of the volume (extra axes are ignored).
    affine
        Voxel-to-world affine of the volume.
    native_to_mni
        World-to-world affine (``x_mni = A @ x_native``) when the volume is in native
        space; ``None`` when its world coordinates already are MNI mm.
    mask
        Optional boolean mask on the volume grid (brain or tissue); samples are taken only
        from in-mask voxels (masked trilinear, see module docstring).
    depths
        Relative depths between white (0) and pial (1).
    surf
        Surfaces; default :func:`~isyb_dask.metrics.fslr.load_fslr32k`.
    min_weight
        Smallest in-mask trilinear weight for a sample to count.

    Returns
    -------
    SurfaceSampler
    """
    surf = surf if surf is not None else load_fslr32k()
    shape = tuple(int(s) for s in vol_shape[:3])
    world_to_vox = np.linalg.inv(np.asarray(affine, dtype=np.float64))
    if native_to_mni is not None:
        world_to_vox = world_to_vox @ np.linalg.inv(np.asarray(native_to_mni, dtype=np.float64))
    pts = ribbon_points(surf, depths)
    n_d, n_v, _ = pts.shape
    flat = pts.reshape(-1, 3)
    vox = flat @ world_to_vox[:3, :3].T + world_to_vox[:3, 3]
    idx, wts, inside = _trilinear(vox, shape)
    if mask is not None:
        m = np.asarray(mask, dtype=bool).reshape(-1)
        if m.size != int(np.prod(shape)):
            raise ValueError("mask shape does not match the volume")
        wts = wts * m[idx]
    total = wts.sum(axis=1)
    ok = inside & (total >= min_weight)
    wts = np.where(ok[:, None], wts / np.where(total > 0, total, 1.0)[:, None], 0.0)
    ok = ok.reshape(n_d, n_v)
    cortex = surf.cortex
    n_ok = ok.sum(axis=0)
    valid = cortex & (n_ok > 0)
    scale = np.where(valid, 1.0 / np.maximum(n_ok, 1), 0.0)
    rows = np.broadcast_to(np.tile(np.arange(n_v), n_d)[:, None], idx.shape)
    vals = wts * np.tile(scale, n_d)[:, None]
    keep = vals != 0
    mat = sp.csr_matrix((vals[keep], (rows[keep], idx[keep])), shape=(n_v, int(np.prod(shape))))
    mat.sum_duplicates()
    return SurfaceSampler(matrix=mat, valid=valid, vol_shape=shape)


def sample_to_surface(
    data: np.ndarray,
    affine: np.ndarray,
    *,
    native_to_mni: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    depths: tuple[float, ...] = GM_DEPTHS,
    surf: FsLR32k | None = None,
    min_weight: float = 0.5,
) -> np.ndarray:
    """Sample a 3-D volume (or 4-D series) onto the 64,984 fsLR 32k vertices.

    Parameters
    ----------
    data
        3-D volume or 4-D array (last axis: time or several maps).
    affine, native_to_mni, mask, depths, surf, min_weight
        See :func:`build_sampler`.

    Returns
    -------
    np.ndarray
        ``(64984,)`` or ``(64984, n_t)`` float32; NaN on the medial wall and where no
        sample was valid.
    """
    sampler = build_sampler(
        np.shape(data),
        affine,
        native_to_mni=native_to_mni,
        mask=mask,
        depths=depths,
        surf=surf,
        min_weight=min_weight,
    )
    return sampler.apply(data)
