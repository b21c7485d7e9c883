"""The subject's own skin: head mask, face region and the debris in front of the face.

Pure functions on canonical (RAS-ordered) arrays, shared by the masking methods
(:mod:`isyb_dask.deface.maskface`, :mod:`isyb_dask.deface.reface`) and by the tests that
measure how far the facial surface moved:

* :func:`noisy_background` / :func:`skin_image`: whether isolated voxels above the skin
  threshold are common (a noisy background), and the image the skin is found on (a 3x3x3
  median of it then, the image itself otherwise);
* :func:`skin_threshold` / :func:`head_mask_full`: the head (object) mask of the whole image,
  with the cavities that open to the outside in front of the face (nostrils, mouth) filled
  by a ray along the face normal;
* :func:`extend_face_region`: the template's face region carried to the subject, continued
  outside the template's field of view by its nearest value (a template whose FOV cuts the
  nose tip must not keep the subject's nose tip) and towards the volume edge on the face
  side (as mask_face extends its box);
* :func:`air_debris`: bright specks detached from the head in the air in front of the face
  (they survive a skin-layer replacement and can read as eyes on a render) and the air
  level they are set to;

Distances and depths measured from the skin are in :mod:`isyb_dask.deface.skin_depth`.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from isyb_dask.blocks import padded_box

__all__ = [
    "FaceRegionError",
    "ISOLATED_LIMIT",
    "air_debris",
    "extend_face_region",
    "head_mask_full",
    "isolated_share",
    "noisy_background",
    "opening_in_box",
    "skin_image",
    "skin_threshold",
]


class FaceRegionError(ValueError):
    """The face region is empty or holds no skin ("resulting ROI is too small")."""


ISOLATED_LIMIT = 0.005
"""Share of the grid's voxels above the skin threshold with no 6-neighbour above it, beyond
which the background counts as noisy (:func:`noisy_background`). Measured: 0-0.0002 on the
volunteer, the template heads and the generated heads; 0.0088 on the volunteer with Rician
noise of sigma 80 (its WM mean is 950) and 0.023 at sigma 100, where the plain threshold's
head mask grows through the noise (its face 18 mm too far out at the 90th percentile)."""


def skin_threshold(data: np.ndarray, bins: int = 256) -> float:
    """Half the Otsu threshold of the positive voxels (skin/air boundary of a T1w).

    Otsu's threshold separates air from tissue as a whole; half of it lies on the air side of
    the (darker) skin and subcutaneous layers, so thin skin is not lost.
    """
    v = np.asarray(data, dtype=np.float32).ravel()
    if v.size > 2_000_000:  # a regular subsample is enough for a histogram threshold
        v = v[:: v.size // 1_000_000]
    v = v[np.isfinite(v) & (v > 0)]
    if v.size == 0:
        raise FaceRegionError("image has no positive voxels: no skin to find")
    hi = float(np.percentile(v, 99.9))
    counts, edges = np.histogram(np.clip(v, None, hi), bins=bins, range=(0.0, hi))
    centres = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(counts).astype(np.float64)
    w1 = w0[-1] - w0
    m0 = np.cumsum(counts * centres) / np.maximum(w0, 1)
    m1 = ((counts * centres).sum() - np.cumsum(counts * centres)) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return 0.5 * float(centres[int(np.argmax(between))])


def isolated_share(data: np.ndarray, threshold: float) -> float:
    """Share of the grid's voxels above ``threshold`` with none of their six neighbours above it.

    Noise above the skin threshold is scattered single voxels; tissue above it is solid.
    """
    above = np.asarray(data) > threshold
    neighbour = np.zeros_like(above)
    for ax in range(above.ndim):
        a, b = np.moveaxis(above, ax, 0), np.moveaxis(neighbour, ax, 0)
        b[1:] |= a[:-1]
        b[:-1] |= a[1:]
    return float(np.count_nonzero(above & ~neighbour)) / max(above.size, 1)


def noisy_background(data: np.ndarray, threshold: float) -> bool:
    """True when :func:`isolated_share` exceeds :data:`ISOLATED_LIMIT`."""
    return isolated_share(data, threshold) > ISOLATED_LIMIT


def skin_image(data: np.ndarray, denoise: bool) -> np.ndarray:
    """The image the skin is found on: a 3x3x3 median of ``data`` when ``denoise``, else it.

    The median removes scattered noise above the skin threshold (at 13 % of the air above
    it, a median of 27 is above it with probability ~1e-6) and keeps the skin's edge where
    it is, where a Gaussian would move it by the threshold's offset from the edge's middle.
    """
    d = np.asarray(data, dtype=np.float32)
    return ndi.median_filter(d, size=3, mode="nearest") if denoise else d


def median_at(data: np.ndarray, mask: np.ndarray, chunk: int = 200_000) -> np.ndarray:
    """The 3x3x3 median of ``data`` (edge-replicated, as :func:`skin_image`) at ``mask``'s voxels.

    Equal to ``skin_image(data, True)[mask]`` but costs per voxel of the mask, not of the
    grid: for a few scattered voxels in a large box it is far cheaper than the whole filter.
    """
    d = np.pad(np.asarray(data, dtype=np.float32), 1, mode="edge")
    # flat indices into the padded grid: a voxel's neighbourhood starts at its own index
    # there (the +1 of the padding and the -1 of the offset cancel)
    flat = np.ravel_multi_index(np.nonzero(mask), d.shape)
    offs = np.ravel_multi_index(np.indices((3, 3, 3)).reshape(3, -1), d.shape)
    values = d.ravel()
    out = np.empty(len(flat), dtype=np.float32)
    for a in range(0, len(flat), chunk):
        out[a:a + chunk] = np.median(values[flat[a:a + chunk, None] + offs[None]], axis=1)
    return out


def opening_in_box(mask: np.ndarray, iterations: int) -> np.ndarray:
    """``ndi.binary_opening(mask, iterations=iterations)`` on the mask's bounding box.

    An opening lies inside the mask, and neither its erosion nor its dilation reaches past
    the box grown by ``iterations + 1`` voxels (outside the mask the box holds zeros, as the
    whole grid's border value does), so the result equals the whole grid's; the face region
    is a sixth of a head's grid.
    """
    mask = np.asarray(mask, dtype=bool)
    out = np.zeros(mask.shape, dtype=bool)
    if not mask.any():
        return out
    box = padded_box(mask, iterations + 1)
    out[box] = ndi.binary_opening(mask[box], iterations=iterations)
    return out


def _ray_fill(mask: np.ndarray, axis: int, sign: int) -> np.ndarray:
    """Everything behind the first mask voxel met by a ray coming from the face side."""
    m = np.moveaxis(mask, axis, -1)
    if sign > 0:
        m = m[..., ::-1]
    filled = np.logical_or.accumulate(m, axis=-1)
    if sign > 0:
        filled = filled[..., ::-1]
    return np.moveaxis(filled, -1, axis)


def head_mask_full(
    data: np.ndarray,
    voxel_mm: np.ndarray,
    normal: tuple[int, int],
    *,
    threshold: float | None = None,
    close_mm: float = 3.0,
    denoise: bool | None = None,
) -> np.ndarray:
    """Head mask of the whole image whose outer border is the skin.

    Threshold (:func:`skin_threshold`) of :func:`skin_image` (the 3x3x3 median when the
    background is noisy: scattered noise voxels above the threshold would otherwise join the
    head through the closing and the face would move to the volume's edge), closing (``round(close_mm / voxel)`` iterations of
    the 6-connected structure), largest connected component, 3-D hole filling (background
    components not touching the border), then filling along the face normal: a voxel is
    head when a head voxel lies in front of it on its column (so the nostrils, the open
    mouth and the air under the jaw count as head: the skin is what a ray from the front
    meets first).

    Parameters
    ----------
    data
        Image (canonical grid).
    voxel_mm
        Voxel sizes of the three axes.
    normal
        Face normal (voxel axis, sign).
    threshold
        Skin threshold (default :func:`skin_threshold`).
    close_mm
        Radius of the closing.
    denoise
        Find the skin on the median-filtered image; by default when
        :func:`noisy_background` says so.
    """
    d = np.asarray(data, dtype=np.float32)
    thr = skin_threshold(d) if threshold is None else float(threshold)
    if denoise is None:
        denoise = noisy_background(d, thr)
    m = skin_image(d, denoise) > thr
    r = int(max(1, round(close_mm / float(np.min(voxel_mm)))))
    m = ndi.binary_closing(np.pad(m, r), iterations=r)[r:-r, r:-r, r:-r]
    lab, n = ndi.label(m)
    if n == 0:
        raise FaceRegionError("no head found above the skin threshold")
    if n > 1:
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        m = lab == int(np.argmax(sizes))
    # fill holes: background components that do not touch the image border
    bg, nb_ = ndi.label(~m)
    border = np.unique(np.concatenate([
        bg[0].ravel(), bg[-1].ravel(), bg[:, 0].ravel(), bg[:, -1].ravel(),
        bg[:, :, 0].ravel(), bg[:, :, -1].ravel()]))
    m = ~np.isin(bg, border[border > 0]) if nb_ else m
    return m | _ray_fill(m, *normal)


def extend_face_region(
    region: np.ndarray,
    inside_fov: np.ndarray | None,
    normal: tuple[int, int],
    *,
    head: np.ndarray | None = None,
    voxel_mm: np.ndarray | None = None,
    open_mm: float = 3.0,
    up_mm: float = 0.0,
    template_tissue: np.ndarray | None = None,
    extrapolated: bool = False,
) -> np.ndarray:
    """Face region continued outside the template FOV and towards the face-side volume edge.

    Parameters
    ----------
    region
        Boolean face region (template face mapped to the subject).
    inside_fov
        Boolean: subject voxels that the template's grid covers (None: all).
    normal
        Face normal (voxel axis, sign).
    head
        Optional subject head mask: the region is first reduced to the subject's tissue it
        covers, opened with a ball of ``open_mm`` (thin slivers of scalp left by a template
        whose KEEP mask hugs its own head go; ``round(open_mm / voxel)`` iterations of the
        6-connected structure), then continued in front of that tissue. This
        makes masks that mark all air as "remove" (niimath/mydeface style) act on the face
        only.
    voxel_mm
        Voxel sizes (needed with ``head`` and ``up_mm``).
    template_tissue
        Optional template head tissue mapped to the subject: the region is reduced to it as
        well (a KEEP mask that marks all air as "remove" then marks the template's face).
    extrapolated
        ``region`` was already continued outside the template FOV (for example resampled
        from an edge-padded mask): skip the nearest-value extrapolation.
    up_mm
        Continue the region this far upwards (superior = +third axis of a canonical grid)
        so that the eyes and the brow are covered whatever the template's mask leaves.
    """
    region = np.asarray(region, dtype=bool)
    inside = np.ones(region.shape, bool) if inside_fov is None else np.asarray(inside_fov, bool)
    out = region.copy()
    if inside.any() and not inside.all() and not extrapolated:
        _, idx = ndi.distance_transform_edt(~inside, return_indices=True)
        out = np.where(inside, region, region[tuple(idx)])
    if head is not None:
        vox = np.ones(3) if voxel_mm is None else np.asarray(voxel_mm, dtype=float)
        r = int(max(1, round(open_mm / float(vox.min()))))
        out = out & np.asarray(head, dtype=bool)
        if template_tissue is not None:  # no restriction where the template has no data
            out &= np.asarray(template_tissue, dtype=bool) | ~inside
        out = opening_in_box(out, r)
    if not out.any():
        return out
    if up_mm > 0:
        vox = np.ones(3) if voxel_mm is None else np.asarray(voxel_mm, dtype=float)
        n = int(round(up_mm / vox[2]))
        cs = np.cumsum(out, axis=2, dtype=np.int32)
        lagged = np.zeros_like(cs)
        if n + 1 < cs.shape[2]:
            lagged[:, :, n + 1:] = cs[:, :, : -(n + 1)]
        out = (cs - lagged) > 0
    axis, sign = normal
    return out | _ray_fill(out, axis, -sign)


def air_debris(
    image: np.ndarray,
    region: np.ndarray,
    head: np.ndarray,
    replaced: np.ndarray,
    threshold: float,
    *,
    denoise: bool = False,
    faint_fraction: float | None = 0.5,
) -> tuple[np.ndarray, float]:
    """Tissue-bright voxels in the air of the face region, and the region's air level.

    A masking method that replaces the facial skin layer leaves everything farther out
    untouched. Voxels there that are brighter than the skin threshold belong to nothing
    connected to the head (the head mask holds the largest component and everything behind
    it along the face normal): noise spikes, ghosts, small detached specks or frames. They
    stay visible in front of the new, smooth face; on a skin render two of them read as eyes
    to a face detector, and whether a ray caster steps onto such a speck depends on its
    sampling phase. The caller sets them to the air level (``image[mask] = level``).

    Parameters
    ----------
    image
        The masked image (not modified).
    region
        Boolean face region, continued to the volume edge on the face side.
    head
        Boolean head mask of the original image (:func:`head_mask_full`).
    replaced
        Boolean voxels the masking method wrote (the new skin layer): never debris.
    threshold
        Skin threshold (:func:`skin_threshold`) of the original image.
    denoise
        A noisy background (:func:`noisy_background`): debris is what is bright on the
        3x3x3 median (:func:`skin_image`), so scattered noise stays as it is.
    faint_fraction
        Also debris: voxels whose 3x3x3 median exceeds this fraction of ``threshold``, i.e.
        faint frames or ghosts that a renderer with a lower iso-level than the skin
        threshold still shows (the generated heads' faint frame in front of the eyes: a
        dlib score of +0.30 at a quarter of the Otsu threshold before, none after). The
        median leaves single noise voxels out; what it finds is grown by one voxel into
        neighbours above the same level (the median erodes a structure's rim), and only
        what is detached from the head mask counts (the head's own faint rim, e.g. the neck
        where the field of view ends, stays). Not used on a noisy background, where the
        noise's own median reaches that level. ``None``: off.

    Returns
    -------
    (numpy.ndarray, float)
        Boolean mask of the debris and the median of the region's remaining air (0 when the
        region holds no other air).
    """
    region = np.asarray(region, dtype=bool)
    debris = np.zeros(region.shape, dtype=bool)
    if not region.any():
        return debris, 0.0
    box = padded_box(region, 0)
    sub = np.asarray(image)[box]
    head_box = np.asarray(head, dtype=bool)[box]
    air = region[box] & ~head_box & ~np.asarray(replaced, dtype=bool)[box]
    bright = air & (skin_image(sub, denoise) > threshold)
    if faint_fraction is not None and not denoise:
        level = faint_fraction * threshold
        faint = air & (sub > level)
        if faint.sum() < 0.05 * faint.size:  # a few voxels: their medians only
            core = np.zeros_like(faint)
            core[faint] = median_at(sub, faint) > level
        else:
            core = faint & (skin_image(sub, True) > level)
        # the median erodes a structure's rim: grow the core into its faint neighbours
        cube = np.ones((3, 3, 3), bool)
        found = core | (ndi.binary_dilation(core, cube) & faint)
        # only what is detached from the head: the faint rim of the head itself (the neck
        # where the field of view ends, partial-volume skin) stays
        labels, n = ndi.label(found, cube)
        if n:
            touching = np.unique(labels[ndi.binary_dilation(head_box, cube) & found])
            bright |= found & ~np.isin(labels, touching[touching > 0])
    if not bright.any():
        return debris, 0.0
    rest = sub[air & ~bright]
    debris[box] = bright
    return debris, float(np.median(rest)) if rest.size else 0.0
