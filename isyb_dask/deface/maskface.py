"""Face obscuring on arrays: the former grid surface blur (``normfilter``), zeroing, brain mask.

``normfilter`` is no longer the default ``maskface`` (see :mod:`isyb_dask.deface.blur`, issue
10: on real heads its coarse height field left faces detectable); it is kept for comparison
(benchmark) and reference. The surface blur follows Milchenko & Marcus (2013) / NRG ``mask_face`` (METHODS §2) on a
regular grid instead of a triangulated mesh:

1. the face region (template face mask mapped to the subject) gives a box that is extended
   to the volume edge on the face side and enlarged by a margin;
2. the box is reoriented so that the face normal is the last axis, pointing outwards;
3. a head mask: three slabs along the second axis, each thresholded with the Ridler-Calvard
   iteration using the geometric mean update on a 1024-bin histogram, then a 2-D opening and
   closing with a disk of radius ``max(1, round(4 / ||voxel size||))``;
4. a skin height field: one ray per node of a regular grid (15 mm x grain) cast from outside
   along the normal to the first head voxel, interpolated bilinearly between nodes (the
   coarse surface does not follow nose, lips or eyes);
5. the layer of ``t = round(8 mm x grain / dz)`` voxels on both sides of that surface is
   resampled into a flat slab of depth ``2t + 1``, low-pass filtered with the §2.5 box kernel
   (half-widths ``ceil(0.1 nx)``, ``ceil(0.1 ny)``, ``max(2, ceil(t/2))``, edge replication;
   the inner ``t`` layers use smaller boxes growing on a sine ramp) and written back inside
   the face region.

Differences from mask_face: a voxel face mask instead of the CAPIIO point lists defines the
region; the layer follows a bilinear height field instead of tetrahedral prisms; jitter is off
by default and seeded when on; the "inflate" pass is replaced by raising each outer node
above the highest head voxel of the face region within one grid cell.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi
from scipy.interpolate import RegularGridInterpolator

from isyb_dask.blocks import padded_box
from isyb_dask.deface.skin import FaceRegionError

__all__ = [
    "head_mask",
    "normfilter",
    "protect_mask",
    "ridler_calvard_geometric",
    "skin_height",
]


def ridler_calvard_geometric(values: np.ndarray, bins: int = 1024, max_iter: int = 15) -> float:
    """Iterative threshold with the geometric-mean update (mask_face ``select_threshold``).

    Works on 1-based histogram bin indices: start at the histogram mean, then
    ``T <- round(sqrt(mean_below * mean_above))`` until it stops changing (at most
    ``max_iter`` times). Returns the threshold as an intensity.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    lo, hi = float(v.min()), float(v.max())
    if not hi > lo:
        return hi
    counts, _ = np.histogram(v, bins=bins, range=(lo, hi))
    idx = np.arange(1, bins + 1, dtype=np.float64)
    total = counts.sum()
    t = round(float((counts * idx).sum() / total))
    for _ in range(max_iter):
        below = counts[:t].sum()
        above = counts[t:].sum()
        if below == 0 or above == 0:
            break
        mb = float((counts[:t] * idx[:t]).sum() / below)
        ma = float((counts[t:] * idx[t:]).sum() / above)
        new = int(round(math.sqrt(mb * ma)))
        if new == t:
            break
        t = new
    return lo + t * (hi - lo) / bins


def _disk(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    return (r[:, None] ** 2 + r[None, :] ** 2) <= radius**2


def head_mask(vol: np.ndarray, voxel_mm: np.ndarray) -> np.ndarray:
    """Head (object) mask of a reoriented face box (METHODS §2.3).

    Parameters
    ----------
    vol
        Box with the face normal as last axis.
    voxel_mm
        Voxel sizes of the box axes (same order).
    """
    mask = np.zeros(vol.shape, dtype=bool)
    edges = np.linspace(0, vol.shape[1], 4).round().astype(int)
    for a, b in zip(edges[:-1], edges[1:]):
        if b <= a:
            continue
        slab = vol[:, a:b, :]
        mask[:, a:b, :] = slab > ridler_calvard_geometric(slab)
    radius = max(1, int(round(4.0 / float(np.linalg.norm(voxel_mm)))))
    st = _disk(radius)[:, :, None]
    mask = ndi.binary_opening(mask, structure=st)
    mask = ndi.binary_closing(mask, structure=st)
    return mask


def _nodes(n: int, step: int) -> np.ndarray:
    return np.unique(np.r_[np.arange(0, n, step), n - 1])


def skin_height(mask: np.ndarray, step: tuple[int, int]) -> np.ndarray:
    """Outermost head voxel along the last axis, sampled on a grid and interpolated.

    Parameters
    ----------
    mask
        Head mask with the outward normal along increasing last index.
    step
        Grid node spacing (voxels) along the first two axes.

    Returns
    -------
    numpy.ndarray
        Float height (last-axis index of the skin) per column, shape ``mask.shape[:2]``.

    Raises
    ------
    ValueError
        When no node ray hits the head ("ROI too small for defacing").
    """
    nx, ny, nz = mask.shape
    k = np.arange(nz)
    top = np.where(mask.any(axis=2), np.where(mask, k, -1).max(axis=2), -1).astype(np.float64)
    nodes_x, nodes_y = _nodes(nx, step[0]), _nodes(ny, step[1])
    h = top[np.ix_(nodes_x, nodes_y)]
    valid = h >= 0
    if not valid.any():
        raise FaceRegionError("resulting ROI is too small for defacing: no skin found in the face box")
    if not valid.all():
        _, (ix, iy) = ndi.distance_transform_edt(~valid, return_indices=True)
        h = h[ix, iy]
    if len(nodes_x) < 2 or len(nodes_y) < 2:
        return np.full((nx, ny), float(np.median(h)))
    interp = RegularGridInterpolator((nodes_x, nodes_y), h, method="linear")
    gx, gy = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
    return interp(np.stack([gx.ravel(), gy.ravel()], axis=1)).reshape(nx, ny)


def _interp_nodes(values: np.ndarray, shape: tuple[int, int], step: tuple[int, int]) -> np.ndarray:
    nodes_x, nodes_y = _nodes(shape[0], step[0]), _nodes(shape[1], step[1])
    vals = values
    if len(nodes_x) < 2 or len(nodes_y) < 2:
        return np.full(shape, float(vals.mean()))
    interp = RegularGridInterpolator((nodes_x, nodes_y), vals, method="linear")
    gx, gy = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    return interp(np.stack([gx.ravel(), gy.ravel()], axis=1)).reshape(shape)


def _box_filter_slab(slab: np.ndarray, t: int) -> np.ndarray:
    """§2.5 low-pass of the flat slab (depth axis last, inner side at index 0)."""
    nx, ny, nz = slab.shape
    fx, fy = math.ceil(0.1 * nx), math.ceil(0.1 * ny)
    fz = max(2, math.ceil(t / 2))
    out = ndi.uniform_filter(slab, size=(2 * fx + 1, 2 * fy + 1, 2 * fz + 1), mode="nearest")
    a0, b0 = max(2, math.ceil(t / 2)), max(1, math.ceil(0.05 * t))
    cache: dict[tuple[int, int, int], np.ndarray] = {}
    for m in range(min(t, nz)):
        w = math.sin(0.5 * math.pi * m / max(t, 1))
        hx = min(fx, int(round(a0 + w * (fx - a0))))
        hy = min(fy, int(round(a0 + w * (fy - a0))))
        hz = int(round(b0 + w * (fz - b0)))
        key = (hx, hy, hz)
        if key == (fx, fy, fz):
            continue
        if key not in cache:
            cache[key] = ndi.uniform_filter(
                slab, size=(2 * hx + 1, 2 * hy + 1, 2 * hz + 1), mode="nearest"
            )
        out[:, :, m] = cache[key][:, :, m]
    return out


def normfilter(
    volume: np.ndarray,
    face_region: np.ndarray,
    voxel_mm: np.ndarray,
    normal_axis: int,
    normal_sign: int,
    *,
    layer_mm: float = 8.0,
    grid_mm: float = 15.0,
    margin_mm: float = 6.0,
    jitter_vox: float = 0.0,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Flatten and low-pass the layer around the facial skin (mask_face ``normfilter``).

    Parameters
    ----------
    volume
        3-D image (any orientation; voxel axes with sizes ``voxel_mm``).
    face_region
        Boolean face region on the same grid (the template's face, mapped to the subject).
    voxel_mm
        Voxel sizes (mm) of the three axes.
    normal_axis, normal_sign
        Voxel axis of the face normal and its outward direction (+1 towards larger index).
    layer_mm
        Half-thickness of the layer (8 mm x grain in mask_face).
    grid_mm
        Node spacing of the skin height field (15 mm x grain).
    margin_mm
        Margin around the face region.
    jitter_vox
        Uniform jitter amplitude (voxels) of the outer and inner layer surfaces at grid nodes.
    rng
        Generator of the jitter (``numpy.random.default_rng(seed)``).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        The obscured volume (float64) and the boolean mask of replaced voxels.

    Raises
    ------
    ValueError
        Empty face region or no skin found in it.
    """
    vol = np.asarray(volume, dtype=np.float64)
    region = np.asarray(face_region, dtype=bool)
    if not region.any():
        raise FaceRegionError("resulting ROI is too small for defacing: the face region is empty")
    voxel_mm = np.asarray(voxel_mm, dtype=np.float64)
    margin = [max(1, int(round(margin_mm / v))) for v in voxel_mm]
    idx = np.argwhere(region)
    lo = idx.min(axis=0)
    hi = idx.max(axis=0) + 1
    if normal_sign > 0:
        hi[normal_axis] = vol.shape[normal_axis]
    else:
        lo[normal_axis] = 0
    lo = np.maximum(lo - margin, 0)
    hi = np.minimum(hi + margin, vol.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    sub = np.moveaxis(vol[box], normal_axis, 2)
    reg = np.moveaxis(region[box], normal_axis, 2)
    vox = np.r_[np.delete(voxel_mm, normal_axis), voxel_mm[normal_axis]]
    if normal_sign < 0:
        sub, reg = sub[:, :, ::-1], reg[:, :, ::-1]
    nx, ny, nz = sub.shape
    # dilate the region by the margin so that the layer edge is covered
    reg = ndi.binary_dilation(reg, iterations=max(1, int(round(margin_mm / vox.min()))))
    t = max(1, int(round(layer_mm / vox[2])))
    step = (
        max(1, min(int(round(grid_mm / vox[0])), nx // 2)),
        max(1, min(int(round(grid_mm / vox[1])), ny // 2)),
    )
    hmask = head_mask(sub, vox)
    height = skin_height(hmask, step)
    inner, outer = height - t, height + t
    # "inflate": the outer surface must clear every head voxel of the face region (nose tip,
    # lips) that the coarse grid missed; node values take the maximum over their cells.
    kk = np.arange(nz)
    face_top = np.where(
        (hmask & reg).any(axis=2), np.where(hmask & reg, kk, -1).max(axis=2), -1
    ).astype(np.float64)
    cell_max = ndi.maximum_filter(face_top, size=(2 * step[0] + 1, 2 * step[1] + 1), mode="nearest")
    need = _interp_nodes(
        cell_max[np.ix_(_nodes(nx, step[0]), _nodes(ny, step[1]))] + 1.0, (nx, ny), step
    )
    outer = np.maximum(outer, need)
    if jitter_vox > 0:
        rng = rng if rng is not None else np.random.default_rng(0)
        n_nodes = (len(_nodes(nx, step[0])), len(_nodes(ny, step[1])))
        inner = inner + _interp_nodes(rng.uniform(-jitter_vox, jitter_vox, n_nodes), (nx, ny), step)
        outer = outer + _interp_nodes(rng.uniform(-jitter_vox, jitter_vox, n_nodes), (nx, ny), step)
        outer = np.maximum(outer, inner + 2.0)
    depth = 2 * t + 1
    frac = np.linspace(0.0, 1.0, depth)
    kpos = inner[:, :, None] + (outer - inner)[:, :, None] * frac[None, None, :]
    gx, gy = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
    coords = np.stack(
        [np.broadcast_to(gx[:, :, None], kpos.shape), np.broadcast_to(gy[:, :, None], kpos.shape), kpos]
    )
    slab = ndi.map_coordinates(sub, coords, order=1, mode="nearest")
    filtered = _box_filter_slab(slab, t)
    # back-projection: each voxel inside the layer takes the filtered value at its depth
    k = np.arange(nz, dtype=np.float64)[None, None, :]
    mpos = (k - inner[:, :, None]) / np.maximum(outer - inner, 1e-6)[:, :, None] * (depth - 1)
    in_layer = (mpos >= 0) & (mpos <= depth - 1) & reg
    m0 = np.clip(np.floor(mpos).astype(np.int64), 0, depth - 1)
    m1 = np.clip(m0 + 1, 0, depth - 1)
    w = np.clip(mpos - m0, 0.0, 1.0)
    ii = np.broadcast_to(gx[:, :, None], mpos.shape)
    jj = np.broadcast_to(gy[:, :, None], mpos.shape)
    newval = (1 - w) * filtered[ii, jj, m0] + w * filtered[ii, jj, m1]
    out_sub = np.where(in_layer, newval, sub)
    changed_sub = in_layer
    if normal_sign < 0:
        out_sub, changed_sub = out_sub[:, :, ::-1], changed_sub[:, :, ::-1]
    out = vol.copy()
    out[box] = np.moveaxis(out_sub, 2, normal_axis)
    changed = np.zeros(vol.shape, dtype=bool)
    changed[box] = np.moveaxis(changed_sub, 2, normal_axis)
    return out, changed


def protect_mask(brain: np.ndarray, voxel_mm: np.ndarray, radius_mm: float = 4.0) -> np.ndarray:
    """Brain mask dilated by an ellipsoid of ``max(2 voxels, radius_mm)`` (METHODS §2.5)."""
    brain = np.asarray(brain, dtype=bool)
    if not brain.any():
        return brain
    voxel_mm = np.asarray(voxel_mm, dtype=np.float64)
    radius = max(radius_mm, 2.0 * float(voxel_mm.min()))
    pad = np.ceil(radius / voxel_mm).astype(int) + 1
    box = padded_box(brain, pad)
    out = np.zeros(brain.shape, dtype=bool)
    out[box] = ndi.distance_transform_edt(~brain[box], sampling=voxel_mm) <= radius
    return out
