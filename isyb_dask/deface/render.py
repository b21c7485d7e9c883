"""Skin-surface renders of a T1w head without display or GPU (numpy ray caster).

The head's skin is the iso-surface of the Gaussian-smoothed image at a fraction of the Otsu
threshold (robust to the intensity scale). An orthographic camera looks at the face along
the face normal (RAS anterior after reorientation to the closest canonical grid, or a given
vector), and yawed by ±30° about the head's superior axis. Every pixel's ray is marched in
two passes (:mod:`isyb_dask.deface.raymarch`): a coarse pass through a block-max occupancy
grid (never misses the surface) then a fine pass of 0.5 mm steps with linear interpolation
of the crossing, giving a sub-voxel depth map. Normals come from the depth map; shading is
Lambert with two directional lights (key upper-left, fill right) plus a little ambient light.

The render geometry (centre, threshold, face normal) of the original head is reused for its
defaced copies, so the same pixel shows the same place of the head in every render; and
:func:`render_head` re-renders a defaced copy from the original's render, marching again
only the rays that come near what the defacing changed (bit-identical to a full render).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage as ndi

from isyb_dask.blocks import block_reduce, padded_box
from isyb_dask.deface.raymarch import lattice, march, occupancy

__all__ = [
    "HeadRender",
    "RenderGeometry",
    "VIEW_YAWS",
    "otsu_threshold",
    "render_geometry",
    "render_head",
    "render_views",
]

VIEW_YAWS: tuple[float, ...] = (0.0, -30.0, 30.0)
"""Yaw angles (degrees) of the default views: frontal, subject's right, subject's left."""

_TRUNCATE = 2.0
"""The render's Gaussian smoothing is cut at this many sigmas (its reach, voxels: round)."""


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


def _camera(geom: RenderGeometry, yaw_deg: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Right, up and viewing direction (world) of a view yawed about ``geom.up``."""
    n, up = np.asarray(geom.normal), np.asarray(geom.up)
    a = np.deg2rad(yaw_deg)
    # positive yaw moves the camera towards the subject's left (RAS +x for a frontal view)
    n_rot = np.cos(a) * n + np.sin(a) * np.cross(n, up)
    d = -_unit(n_rot)
    right = _unit(np.cross(up, d))
    return right, up, d


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


@dataclasses.dataclass(frozen=True, eq=False)
class HeadRender:
    """A head's renders, with what rendering an edited copy of the same head reuses.

    Attributes
    ----------
    views
        uint8 ``(n_views, size, size)`` shading (row 0 = top).
    depth, reach
        ``(n_views, size * size)``: each ray's depth (mm; NaN: miss) and the ray parameter
        up to which its march read the image (inf: the whole ray).
    data, affine
        The rendered image (the caller's array, not a copy) and its voxel-to-RAS affine.
    smoothed, occupancy
        The Gaussian-smoothed image and its block occupancy grid.
    geometry, yaws, smooth_mm
        What was rendered and how.
    """

    views: np.ndarray
    depth: np.ndarray
    reach: np.ndarray
    data: np.ndarray
    affine: np.ndarray
    smoothed: np.ndarray
    occupancy: np.ndarray
    geometry: RenderGeometry
    yaws: tuple[float, ...]
    smooth_mm: float


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
    return render_head(data, affine, geom, yaws=yaws, smooth_mm=smooth_mm).views


def render_head(
    data: np.ndarray,
    affine: np.ndarray,
    geom: RenderGeometry,
    *,
    yaws: tuple[float, ...] = VIEW_YAWS,
    smooth_mm: float = 1.0,
    like: HeadRender | None = None,
) -> HeadRender:
    """:func:`render_views`, keeping what an edited copy of the head can reuse.

    With ``like`` (the render of the same head before an edit, e.g. the original of a
    defaced copy, same grid, geometry and views), only what the edit can change is
    recomputed, and the result equals a full render bit for bit:

    * the smoothed image only within the Gaussian's reach of the changed voxels;
    * the march only for rays that come, before their recorded ``reach``, within two
      occupancy blocks of a block whose smoothed values or occupancy changed. A ray that
      does not reads, at the same lattice points and fine samples
      (:func:`isyb_dask.deface.raymarch.lattice`), the same occupancy and image values as
      before, so it ends at the same depth. (Two blocks: one for the 3x3x3 dilation of the
      occupancy, one because the fine samples between two lattice points lie within a
      block of either.)

    Parameters
    ----------
    data, affine, geom, yaws, smooth_mm
        As :func:`render_views`.
    like
        Optional render of the unedited head.

    Returns
    -------
    HeadRender

    Raises
    ------
    ValueError
        ``like`` is of another grid (shape or affine), geometry or set of views.
    """
    affine = np.asarray(affine, dtype=float)
    vox = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    vox_mm = float(vox.min())
    data = np.asarray(data)
    if like is not None and (like.data.shape != data.shape
                             or not np.array_equal(like.affine, affine) or like.geometry != geom
                             or tuple(like.yaws) != tuple(yaws) or like.smooth_mm != smooth_mm):
        raise ValueError("render_head: 'like' is a render of another grid, geometry or views")
    vol = _smoothed(data, vox, smooth_mm, like)
    block = max(2, int(round(4.0 / vox_mm)))
    occ = occupancy(vol, geom.threshold, block)
    stale = None if like is None else _stale_blocks(vol, occ, like, block)
    inv = np.linalg.inv(affine)
    size, fov = geom.size, geom.fov_mm
    pix = fov / size
    coords = (np.arange(size) - (size - 1) / 2.0) * pix
    centre = np.asarray(geom.centre)
    half_depth = 0.5 * float(np.linalg.norm(np.array(vol.shape) * vox)) + 10.0
    out = np.zeros((len(yaws), size, size), dtype=np.uint8)
    depths = np.empty((len(yaws), size * size))
    reaches = np.empty((len(yaws), size * size))
    for k, yaw in enumerate(yaws):
        right, up, d = _camera(geom, yaw)
        start = centre - half_depth * d
        grid = (start[None, None, :] + coords[None, :, None] * right[None, None, :]
                - coords[:, None, None] * up[None, None, :]).reshape(-1, 3)
        if like is None:
            depth, reach = march(vol, occ, block, inv, grid, d, geom.threshold, vox_mm)
        else:
            depth, reach = like.depth[k].copy(), like.reach[k].copy()
            redo = _rays_to_redo(stale, block, inv, grid, d, vox_mm, reach)
            depth[redo], reach[redo] = march(vol, occ, block, inv, grid[redo], d,
                                              geom.threshold, vox_mm)
        depths[k], reaches[k] = depth, reach
        out[k] = np.round(255.0 * _shade(depth.reshape(size, size), pix)).astype(np.uint8)
    return HeadRender(out, depths, reaches, data, affine, vol, occ, geom, tuple(yaws),
                      smooth_mm)


def _smoothed(data: np.ndarray, vox: np.ndarray, smooth_mm: float,
              like: HeadRender | None) -> np.ndarray:
    """Gaussian-smoothed float32 image; with ``like``, recomputed only near changed voxels.

    Each output voxel is a fixed sum over the kernel's reach (``_TRUNCATE`` sigmas), so
    filtering the changed box grown by two reaches and keeping its inner part (grown by one
    reach) gives the whole-image values there, and the rest is unchanged.
    """
    sigma = smooth_mm / vox
    if like is None:
        return ndi.gaussian_filter(np.asarray(data, dtype=np.float32), sigma,
                                   truncate=_TRUNCATE)
    changed = data != like.data
    if not changed.any():
        return like.smoothed
    reach = np.array([int(_TRUNCATE * float(s) + 0.5) for s in sigma])  # scipy's kernel radius
    outer = padded_box(changed, 2 * reach)
    inner = padded_box(changed, reach)
    part = ndi.gaussian_filter(np.asarray(data[outer], dtype=np.float32), sigma,
                               truncate=_TRUNCATE)
    vol = like.smoothed.copy()
    vol[inner] = part[tuple(slice(i.start - o.start, i.stop - o.start)
                            for i, o in zip(inner, outer))]
    return vol


def _stale_blocks(vol: np.ndarray, occ: np.ndarray, like: HeadRender, block: int) -> np.ndarray:
    """Occupancy blocks a ray must avoid to keep its old depth (see :func:`render_head`)."""
    blocks = block_reduce(vol != like.smoothed, block, how="max", edge="pad")
    ball = np.ones((3, 3, 3), bool)
    # a fine sample reads its voxel and the next one: a block next to a changed one
    near = ndi.binary_dilation(blocks, ball)
    changed = ndi.binary_dilation(near, ball) | (occ != like.occupancy)
    return ndi.binary_dilation(changed, ball)


def _rays_to_redo(stale: np.ndarray, block: int, inv: np.ndarray, origin: np.ndarray,
                  d: np.ndarray, vox_mm: float, reach: np.ndarray) -> np.ndarray:
    """Rays whose first lattice point in a stale block comes before their reach."""
    o_vox = origin @ inv[:3, :3].T + inv[:3, 3]
    d_vox = inv[:3, :3] @ d
    rays, t, hits = lattice(stale, block, o_vox, d_vox, block * vox_mm)
    redo = np.zeros(origin.shape[0], dtype=bool)
    if rays.size:
        any_hit = hits.any(axis=1)
        first = t[np.arange(rays.size), np.argmax(hits, axis=1)]
        redo[rays[any_hit]] = first[any_hit] <= reach[rays[any_hit]]
    return redo
