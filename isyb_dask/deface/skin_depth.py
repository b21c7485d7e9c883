"""Distances and depths measured from the subject's skin.

* :func:`signed_distance`: signed distance (mm) to the skin, negative inside the head (the
  blur method's shell and the tests of how far the face moved);
* :func:`skin_depth_map` / :func:`surface_depth_change`: the outermost skin point of every
  column along the face normal and the change of that depth between two images (the deface
  stage's ``surface_depth_change_mm``).

The skin itself (threshold, the image it is found on) comes from
:mod:`isyb_dask.deface.skin`.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from isyb_dask.deface.skin import skin_image, skin_threshold

__all__ = ["signed_distance", "skin_depth_map", "surface_depth_change"]


def signed_distance(head: np.ndarray, voxel_mm: np.ndarray) -> np.ndarray:
    """Signed Euclidean distance (mm) to the skin: positive in air, negative in the head.

    Voxel centres on the border get +-half a voxel so the zero level lies between them.
    """
    head = np.asarray(head, dtype=bool)
    vox = np.asarray(voxel_mm, dtype=float)
    out = ndi.distance_transform_edt(~head, sampling=vox).astype(np.float32)
    inside = ndi.distance_transform_edt(head, sampling=vox).astype(np.float32)
    half = np.float32(0.5 * float(vox.min()))
    return np.where(head, -inside + half, out - half)


def skin_depth_map(
    data: np.ndarray, threshold: float, normal: tuple[int, int], voxel_mm: np.ndarray,
    *, denoise: bool = False,
) -> np.ndarray:
    """Position (mm along the face normal, outwards) of the outermost skin point per column.

    The image (:func:`skin_image`: its 3x3x3 median with ``denoise``) is lightly smoothed
    (Gaussian, sigma 1 mm) and the crossing of ``threshold`` is located with linear
    interpolation between the last voxel above it and the next one. Columns without tissue
    are NaN. The map has the image shape without the normal axis.
    """
    axis, sign = normal
    vox = np.asarray(voxel_mm, dtype=float)
    d = ndi.gaussian_filter(skin_image(data, denoise), 1.0 / vox)
    d = np.moveaxis(d, axis, -1)
    if sign < 0:
        d = d[..., ::-1]
    above = d > threshold
    n = d.shape[-1]
    has = above.any(axis=-1)
    last = n - 1 - np.argmax(above[..., ::-1], axis=-1)
    nxt = np.minimum(last + 1, n - 1)
    v0 = np.take_along_axis(d, last[..., None], -1)[..., 0]
    v1 = np.take_along_axis(d, nxt[..., None], -1)[..., 0]
    frac = np.where((nxt > last) & (v0 > v1), (v0 - threshold) / np.maximum(v0 - v1, 1e-6), 0.0)
    pos = (last + np.clip(frac, 0.0, 1.0)) * vox[axis]
    return np.where(has, pos, np.nan)


def surface_depth_change(
    original: np.ndarray,
    changed: np.ndarray,
    region: np.ndarray,
    normal: tuple[int, int],
    voxel_mm: np.ndarray,
    *,
    threshold: float | None = None,
    before: np.ndarray | None = None,
    denoise: bool = False,
) -> dict[str, float]:
    """How far the facial surface moved along the face normal between two images.

    The columns measured are those whose original outermost skin point lies inside
    ``region`` (the face). A column without skin after defacing counts as moved by its
    original depth (its whole extent was removed). ``before`` is the original's
    :func:`skin_depth_map` at ``threshold`` along ``normal`` when already computed (one per
    subject and normal, shared by the templates). ``denoise``: both depth maps on the
    median-filtered images (a noisy background, :func:`noisy_background` of the original).

    Returns
    -------
    dict
        ``median_mm``, ``p25_mm``, ``p75_mm``, ``frac_ge4mm`` (fraction of columns moved by
        at least 4 mm) and ``columns``.
    """
    axis, sign = normal
    thr = skin_threshold(original) if threshold is None else float(threshold)
    if before is None:
        before = skin_depth_map(original, thr, normal, voxel_mm, denoise=denoise)
    after = skin_depth_map(changed, thr, normal, voxel_mm, denoise=denoise)
    vox = np.asarray(voxel_mm, dtype=float)
    reg = np.moveaxis(np.asarray(region, dtype=bool), axis, -1)
    if sign < 0:
        reg = reg[..., ::-1]
    k = np.clip(np.nan_to_num(before / vox[axis]).round().astype(int), 0, reg.shape[-1] - 1)
    on_face = np.isfinite(before) & np.take_along_axis(reg, k[..., None], -1)[..., 0]
    if not on_face.any():
        nan = float("nan")
        return {"median_mm": nan, "p25_mm": nan, "p75_mm": nan, "frac_ge4mm": nan, "columns": 0}
    diff = np.where(np.isfinite(after), np.abs(after - before), before)[on_face]
    return {
        "median_mm": float(np.median(diff)),
        "p25_mm": float(np.percentile(diff, 25)),
        "p75_mm": float(np.percentile(diff, 75)),
        "frac_ge4mm": float(np.mean(diff >= 4.0)),
        "columns": int(on_face.sum()),
    }
