"""Skin-surface renders of a T1w head without display or GPU (numpy ray caster).

The head's skin is the iso-surface of the Gaussian-smoothed image at a fraction of the Otsu
threshold (robust to the intensity scale). An orthographic camera looks at the face along
the face normal (RAS anterior after reorientation to the closest canonical grid, or a given
vector), and yawed by ±30° about the head's superior axis. Every pixel's ray is marched in
two passes: a coarse pass through a block-max occupancy grid (never misses the surface)
then a fine pass of 0.25-voxel steps with linear interpolation of the crossing, giving a
sub-voxel depth map. Normals come from the depth map; shading is Lambert with two
directional lights (key upper-left, fill right) plus a little ambient light.

The render geometry (centre, threshold, face normal) of the original head is reused for its
defaced copies, so the same pixel shows the same place of the head in every render.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from nibabel.affines import voxel_sizes
from scipy import ndimage as ndi

__all__ = ["RenderGeometry", "render_geometry", "render_views", "otsu_threshold", "view_camera",
           "VIEW_YAWS"]

VIEW_YAWS: tuple[float, ...] = (0.0, -30.0, 30.0)
"""Yaw angles (degrees) of the default views: frontal, subject's right, subject's left."""


@dataclasses.dataclass(frozen=True)
class RenderGeometry:
    """Where and how a head is rendered (world RAS mm).

    Attributes
    ----------
    centre
        Point the camera looks at (mm).
    normal
        Unit face normal (mm, RAS), the frontal viewing direction reversed.
    up
        Unit vector pointing to the top of the image (orthogonal to ``normal``).
    threshold
        Skin iso-value in image units.
    fov_mm
        Width and height of the field of view (mm).
    size
        Image width and height (pixels).
    """

    centre: tuple[float, float, float]
    normal: tuple[float, float, float]
    up: tuple[float, float, float]
    threshold: float
    fov_mm: float = 240.0
    size: int = 256


def otsu_threshold(data: np.ndarray, bins: int = 256) -> float:
    """Otsu threshold of the positive, finite voxels (histogram up to the 99.9th percentile).

    Raises
    ------
    ValueError
        If the image has no positive voxels.
    """
    v = np.asarray(data, dtype=np.float32)[::2, ::2, ::2].ravel()
    v = v[np.isfinite(v) & (v > 0)]
    if v.size < 100:
        raise ValueError("image has (almost) no positive voxels: nothing to render")
    top = float(np.percentile(v, 99.9))
    hist, edges = np.histogram(np.minimum(v, top), bins=bins, range=(0.0, top))
    mids = 0.5 * (edges[1:] + edges[:-1])
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * mids)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(mids[int(np.argmax(between[:-1]))])


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    if n == 0:
        raise ValueError("zero-length direction")
    return np.asarray(v, dtype=float) / n


def _canonical_axes(affine: np.ndarray) -> np.ndarray:
    """World unit vectors (rows R, A, S) of the voxel axes of the closest canonical grid.

    For an axis-aligned image these are the RAS unit vectors; for an oblique one they follow
    the prescription (the voxel axis closest to anterior, with its sign, and so on), as the
    grid of :func:`isyb_dask.registration.to_canonical` does.
    """
    from nibabel.orientations import io_orientation

    lin = np.asarray(affine, dtype=float)[:3, :3]
    out = np.zeros((3, 3))
    for vox_axis, (world_axis, sign) in enumerate(io_orientation(affine)):
        out[int(world_axis)] = sign * lin[:, vox_axis] / np.linalg.norm(lin[:, vox_axis])
    return out


def render_geometry(
    data: np.ndarray,
    affine: np.ndarray,
    *,
    normal: np.ndarray | None = None,
    threshold_fraction: float = 0.5,
    fov_mm: float = 240.0,
    size: int = 256,
) -> RenderGeometry:
    """Geometry of a head's renders: skin threshold, centre and face direction.

    Parameters
    ----------
    data
        The head image (any voxel order; world coordinates come from ``affine``).
    affine
        Voxel-to-RAS affine.
    normal
        Face normal (RAS mm). Default: the anterior axis of the closest canonical grid
        (:func:`isyb_dask.registration.to_canonical`) in world coordinates, i.e. RAS
        anterior for axis-aligned images and the prescribed anterior for oblique ones; the
        image's up is that grid's superior axis.
    threshold_fraction
        Skin iso-value as a fraction of the Otsu threshold (skin is darker than brain).
    fov_mm, size
        Field of view (mm) and image size (pixels).
    """
    thr = threshold_fraction * otsu_threshold(data)
    axes = _canonical_axes(affine)
    n = _unit(axes[1] if normal is None else np.asarray(normal, float))
    sup = axes[2]
    up = sup - n * float(sup @ n)
    if np.linalg.norm(up) < 1e-3:  # normal along S-I: use anterior as up
        up = axes[1] - n * float(axes[1] @ n)
    up = _unit(up)
    sub = np.asarray(data)[::2, ::2, ::2] > thr
    idx = np.argwhere(sub) * 2
    if idx.size == 0:
        raise ValueError("no voxel above the skin threshold")
    centre = (np.asarray(affine)[:3, :3] @ idx.mean(axis=0)) + np.asarray(affine)[:3, 3]
    return RenderGeometry(tuple(map(float, centre)), tuple(map(float, n)), tuple(map(float, up)),
                          float(thr), float(fov_mm), int(size))


def view_camera(geom: RenderGeometry, yaw_deg: float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Right, up and viewing direction (world unit vectors) of a view yawed about ``geom.up``.

    The camera every render of :func:`render_views` uses; other renderers (for example an
    outside reviewer's mesh renderer) take it to look at the head from the same place.

    Parameters
    ----------
    geom
        The head's render geometry (:func:`render_geometry`).
    yaw_deg
        Yaw about ``geom.up``; positive moves the camera towards the subject's left.

    Returns
    -------
    tuple of np.ndarray
        ``(right, up, direction)``, each of shape (3,).
    """
    n, up = np.asarray(geom.normal), np.asarray(geom.up)
    a = np.deg2rad(yaw_deg)
    # positive yaw moves the camera towards the subject's left (RAS +x for a frontal view)
    n_rot = np.cos(a) * n + np.sin(a) * np.cross(n, up)
    d = -_unit(n_rot)
    right = _unit(np.cross(up, d))
    return right, up, d


def _occupancy(vol: np.ndarray, threshold: float, block: int) -> np.ndarray:
    """Block-max occupancy grid of the skin (True where any voxel of the block, or of a
    neighbouring block, is above the threshold); specks (connected groups of blocks smaller
    than 1 % of the largest, e.g. noise or ghosts outside the head) are dropped."""
    pad = [(0, (-s) % block) for s in vol.shape]
    v = np.pad(vol > threshold, pad)
    s = v.shape
    occ = v.reshape(s[0] // block, block, s[1] // block, block, s[2] // block, block)
    occ = occ.any(axis=(1, 3, 5))
    lab, nlab = ndi.label(occ)
    if nlab > 1:
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        occ = (sizes >= 0.01 * sizes.max())[lab]
    return ndi.binary_dilation(occ, np.ones((3, 3, 3), bool))


def _march(
    vol: np.ndarray,
    occ: np.ndarray,
    block: int,
    inv: np.ndarray,
    origin: np.ndarray,
    d: np.ndarray,
    threshold: float,
    depth_mm: float,
    vox_mm: float,
) -> np.ndarray:
    """Depth (mm from ``origin`` plane) of the first skin crossing of each ray (NaN: miss)."""
    n_rays = origin.shape[0]
    lin, off = inv[:3, :3], inv[:3, 3]
    o_vox = origin @ lin.T + off
    d_vox = lin @ d
    depth = np.full(n_rays, np.nan)
    # coarse pass: occupancy of every (ray, step) at one block per step inside the
    # occupied bounding box; a ray passing through a skin block lands in its dilation
    step = block * vox_mm
    nz = np.argwhere(occ)
    lo, hi = nz.min(axis=0) * block, (nz.max(axis=0) + 1) * block  # voxel units
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (lo - o_vox) / d_vox
        t2 = (hi - o_vox) / d_vox
    t_in = np.nanmax(np.where(d_vox == 0, -np.inf, np.minimum(t1, t2)), axis=1)
    t_out = np.nanmin(np.where(d_vox == 0, np.inf, np.maximum(t1, t2)), axis=1)
    flat_ok = np.all((d_vox != 0) | ((o_vox >= lo) & (o_vox <= hi)), axis=1)
    rays = np.flatnonzero(flat_ok & (t_out > t_in) & (t_out > 0))
    if rays.size == 0:
        return depth
    t0 = np.maximum(t_in[rays], 0.0) - step
    n_steps = int(np.ceil((t_out[rays] - t0).max() / step)) + 2
    t_coarse = t0[:, None] + step * np.arange(n_steps)[None, :]
    padded = np.pad(occ, 1)
    flat = padded.ravel()
    top = np.array(padded.shape) - 1
    hits = np.zeros((rays.size, n_steps), bool)
    o_r = o_vox[rays]
    for j in range(n_steps):
        ip = np.floor((o_r + t_coarse[:, j, None] * d_vox) / block).astype(np.int64) + 1
        np.clip(ip, 0, top, out=ip)
        hits[:, j] = flat[np.ravel_multi_index(ip.T, padded.shape)]
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
        rays, hits, t_end, t_coarse = rays[left], hits[left], t_end[left], t_coarse[left]
        hits &= t_coarse > t_end[:, None] - step
    return depth


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


def _shade(depth: np.ndarray, pixel_mm: float) -> np.ndarray:
    """Lambert shading (two lights + ambient) of a depth map; background 0."""
    hit = np.isfinite(depth)
    far = np.nanmax(depth) + 5.0 if hit.any() else 0.0
    z = np.where(hit, depth, far)
    z = ndi.gaussian_filter(z, 0.7)
    gy, gx = np.gradient(z, pixel_mm)  # rows go down (image -up), columns go right
    # camera frame: x right, y up, z towards the viewer; depth grows away from the viewer
    nx, ny, nz = gx, -gy, np.ones_like(z)
    norm = np.sqrt(nx**2 + ny**2 + nz**2)
    normals = np.stack([nx, ny, nz]) / norm
    lights = ((_unit(np.array([-0.5, 0.6, 1.0])), 0.75), (_unit(np.array([0.7, 0.1, 1.0])), 0.35))
    shade = np.full(z.shape, 0.08)
    for ldir, w in lights:
        shade += w * np.clip(np.tensordot(ldir, normals, axes=1), 0.0, None)
    shade = np.clip(shade, 0.0, 1.0)
    shade[~hit] = 0.0
    return shade


def render_views(
    data: np.ndarray,
    affine: np.ndarray,
    geom: RenderGeometry,
    *,
    yaws: tuple[float, ...] = VIEW_YAWS,
    smooth_mm: float = 1.0,
) -> np.ndarray:
    """Render a head's skin surface from several yaw angles.

    Parameters
    ----------
    data
        Head image (any voxel order, float or integer).
    affine
        Voxel-to-RAS affine.
    geom
        Render geometry (:func:`render_geometry`, usually of the original head).
    yaws
        Yaw angles in degrees (0 = frontal, negative = towards the subject's right).
    smooth_mm
        Gaussian sigma (mm) applied before extracting the iso-surface.

    Returns
    -------
    numpy.ndarray
        uint8 array ``(len(yaws), size, size)``, grey-level shading (row 0 = top).
    """
    affine = np.asarray(affine, dtype=float)
    vox = voxel_sizes(affine)
    vox_mm = float(vox.min())
    vol = ndi.gaussian_filter(np.asarray(data, dtype=np.float32), smooth_mm / vox, truncate=2.0)
    block = max(2, int(round(4.0 / vox_mm)))
    occ = _occupancy(vol, geom.threshold, block)
    inv = np.linalg.inv(affine)
    size, fov = geom.size, geom.fov_mm
    pix = fov / size
    coords = (np.arange(size) - (size - 1) / 2.0) * pix
    centre = np.asarray(geom.centre)
    half_depth = 0.5 * float(np.linalg.norm(np.array(vol.shape) * vox)) + 10.0
    out = np.zeros((len(yaws), size, size), dtype=np.uint8)
    for k, yaw in enumerate(yaws):
        right, up, d = view_camera(geom, yaw)
        start = centre - half_depth * d
        grid = (start[None, None, :] + coords[None, :, None] * right[None, None, :]
                - coords[:, None, None] * up[None, None, :])
        depth = _march(vol, occ, block, inv, grid.reshape(-1, 3), d, geom.threshold,
                       2.0 * half_depth, vox_mm).reshape(size, size)
        out[k] = np.round(255.0 * _shade(depth, pix)).astype(np.uint8)
    return out
