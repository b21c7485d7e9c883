"""Ray casting of a skin iso-surface through a block occupancy grid (numpy, no GPU).

Every ray is marched in two passes: a coarse pass that reads a block-max occupancy grid at
the ray parameters ``t = k * step`` (one lattice per ray, whatever the grid, so that two
renders of the same head read the same points), then a fine pass of 0.5 mm steps with
linear interpolation of the crossing. Used by :mod:`isyb_dask.deface.render`.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from isyb_dask.blocks import block_reduce

__all__ = ["lattice", "march", "occupancy"]


def occupancy(vol: np.ndarray, threshold: float, block: int) -> np.ndarray:
    """Block-max occupancy grid of the skin (True where any voxel of the block, or of a
    neighbouring block, is above the threshold); specks (connected groups of blocks smaller
    than 1 % of the largest, e.g. noise or ghosts outside the head) are dropped."""
    occ = block_reduce(vol > threshold, block, how="max", edge="pad")
    lab, nlab = ndi.label(occ)
    if nlab > 1:
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        occ = (sizes >= 0.01 * sizes.max())[lab]
    return ndi.binary_dilation(occ, np.ones((3, 3, 3), bool))


def lattice(
    grid: np.ndarray, block: int, o_vox: np.ndarray, d_vox: np.ndarray, step: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A block grid's values along each ray, at the ray parameters ``t = k * step``.

    The points sit on one lattice per ray (integer ``k``, whatever the grid), so two grids
    of the same head are read at the same points. Only rays crossing the bounding box of the
    grid's true blocks are returned (a point outside the box reads False).

    Returns
    -------
    rays, t, hits
        Indices of those rays, ``(n, n_steps)`` ray parameters (mm) and grid values.
    """
    nz = np.argwhere(grid)
    if nz.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 1)), np.zeros((0, 1), dtype=bool)
    lo, hi = nz.min(axis=0) * block, (nz.max(axis=0) + 1) * block  # voxel units
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (lo - o_vox) / d_vox
        t2 = (hi - o_vox) / d_vox
    t_in = np.nanmax(np.where(d_vox == 0, -np.inf, np.minimum(t1, t2)), axis=1)
    t_out = np.nanmin(np.where(d_vox == 0, np.inf, np.maximum(t1, t2)), axis=1)
    flat_ok = np.all((d_vox != 0) | ((o_vox >= lo) & (o_vox <= hi)), axis=1)
    rays = np.flatnonzero(flat_ok & (t_out > t_in) & (t_out > 0))
    if rays.size == 0:
        return rays, np.zeros((0, 1)), np.zeros((0, 1), dtype=bool)
    k0 = np.floor(np.maximum(t_in[rays], 0.0) / step) - 1.0
    n_steps = int(np.ceil((t_out[rays] - k0 * step).max() / step)) + 2
    t_coarse = (k0[:, None] + np.arange(n_steps)[None, :]) * step
    padded = np.pad(grid, 1)
    flat = padded.ravel()
    top = np.array(padded.shape) - 1
    hits = np.zeros((rays.size, n_steps), bool)
    o_r = o_vox[rays]
    for j in range(n_steps):
        ip = np.floor((o_r + t_coarse[:, j, None] * d_vox) / block).astype(np.int64) + 1
        np.clip(ip, 0, top, out=ip)
        hits[:, j] = flat[np.ravel_multi_index(ip.T, padded.shape)]
    return rays, t_coarse, hits


def march(
    vol: np.ndarray,
    occ: np.ndarray,
    block: int,
    inv: np.ndarray,
    origin: np.ndarray,
    d: np.ndarray,
    threshold: float,
    vox_mm: float,
) -> tuple[np.ndarray, np.ndarray]:
    """First skin crossing of each ray.

    Returns
    -------
    depth, reach
        Depth (mm from the ``origin`` plane; NaN: miss) and the ray parameter (mm) up to
        which the march read the volume and the occupancy (inf for a miss: the whole ray).
    """
    n_rays = origin.shape[0]
    lin, off = inv[:3, :3], inv[:3, 3]
    o_vox = origin @ lin.T + off
    d_vox = lin @ d
    depth = np.full(n_rays, np.nan)
    reach = np.full(n_rays, np.inf)
    # coarse pass: occupancy at one block per step; a ray passing through a skin block
    # lands in its dilation
    step = block * vox_mm
    rays, t_coarse, hits = lattice(occ, block, o_vox, d_vox, step)
    keep = hits.any(axis=1)
    rays, hits, t_coarse = rays[keep], hits[keep], t_coarse[keep]
    for _ in range(16):  # a ray that only grazes an occupied block resumes after it
        if rays.size == 0:
            break
        j = np.argmax(hits, axis=1)
        found = hits[np.arange(rays.size), j]
        rays, hits, j, t_coarse = rays[found], hits[found], j[found], t_coarse[found]
        if rays.size == 0:
            break
        t_hit = t_coarse[np.arange(rays.size), j]
        t_end = _fine(vol, o_vox[rays], d_vox, t_hit, threshold, step, depth, rays)
        left = ~np.isfinite(depth[rays])
        reach[rays[~left]] = t_end[~left]
        rays, hits, t_end, t_coarse = rays[left], hits[left], t_end[left], t_coarse[left]
        hits &= t_coarse > t_end[:, None] - step
    return depth, reach


def _fine(vol: np.ndarray, o_vox: np.ndarray, d_vox: np.ndarray, t_hit: np.ndarray,
          threshold: float, block_mm: float, depth: np.ndarray, rays: np.ndarray) -> np.ndarray:
    """Fine search of the crossing after a coarse hit; fills ``depth[rays]``; returns end depth."""
    fine = 0.5
    n_steps = int(np.ceil(3.0 * block_mm / fine)) + 1
    ts = t_hit[:, None] - block_mm + fine * np.arange(n_steps)[None, :]
    pts = o_vox[:, None, :] + ts[..., None] * d_vox[None, None, :]
    vals = ndi.map_coordinates(vol, pts.reshape(-1, 3).T, order=1, mode="constant", cval=0.0,
                               prefilter=False).reshape(ts.shape)
    above = vals > threshold
    first = np.argmax(above, axis=1)
    ok = above[np.arange(rays.size), first] & (first > 0)
    f = first[ok]
    v0 = vals[ok, f - 1]
    v1 = vals[ok, f]
    frac = (threshold - v0) / np.maximum(v1 - v0, 1e-12)
    depth[rays[ok]] = ts[ok, f - 1] + np.clip(frac, 0.0, 1.0) * fine
    return ts[:, -1]
