"""``reface``: replace the subject's face by the registered template's face (METHODS §3).

In the manner of AFNI's ``@afni_refacer`` and ``mri_reface``, with the template chosen by
the user (CN200 or a built Chinese template give a population-matched average face):

1. the template head, already registered to the subject (12-parameter affine), is resampled
   onto the subject grid (linear);
2. intensity matching: in the border zone of the face region (where the blending weight is
   strictly between 0 and 1) on voxels that both images call head, or both call air, the
   template's intensity
   quantiles (5th..95th, every 5) are fitted to the subject's by least squares,
   ``subject ~ a * template + b`` (a quantile-quantile line is robust to residual
   misregistration, unlike a voxel-wise fit);
3. blending: ``out = (1 - w) I + w (a T + b)`` with the smooth weight ``w`` of
   :func:`region_weight` (1 inside the face region and ``margin_mm`` around it, falling to
   0 over ``ramp_mm``).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from isyb_dask.blocks import padded_box
from isyb_dask.deface.skin import FaceRegionError

__all__ = ["intensity_fit", "reface", "region_weight"]


def region_weight(
    region: np.ndarray, voxel_mm: np.ndarray, *, margin_mm: float = 8.0, ramp_mm: float = 10.0
) -> np.ndarray:
    """Smooth weight: 1 within ``margin_mm`` of the region, 0 beyond ``margin_mm + ramp_mm``."""
    region = np.asarray(region, dtype=bool)
    w = np.zeros(region.shape, dtype=np.float32)
    if not region.any():
        return w
    vox = np.asarray(voxel_mm, dtype=float)
    pad = np.ceil((margin_mm + ramp_mm) / vox).astype(int) + 1
    box = padded_box(region, pad)
    dist = ndi.distance_transform_edt(~region[box], sampling=vox)
    x = np.clip(1.0 - (dist - margin_mm) / max(ramp_mm, 1e-6), 0.0, 1.0)
    w[box] = (x * x * (3.0 - 2.0 * x)).astype(np.float32)
    return w


def intensity_fit(subject: np.ndarray, template: np.ndarray) -> tuple[float, float]:
    """Quantile-quantile least-squares line ``subject ~ a * template + b`` (a > 0).

    Raises
    ------
    FaceRegionError
        With fewer than 50 samples.
    """
    s = np.asarray(subject, dtype=np.float64).ravel()
    t = np.asarray(template, dtype=np.float64).ravel()
    if s.size < 50 or t.size < 50:
        raise FaceRegionError(f"reface: too few border voxels to match intensities ({min(s.size, t.size)})")
    q = np.arange(5, 96, 5)
    qs, qt = np.percentile(s, q), np.percentile(t, q)
    if np.ptp(qt) <= 0:
        return 0.0, float(np.median(s))
    a, b = np.polyfit(qt, qs, 1)
    if a <= 0:
        a = float(np.ptp(qs) / np.ptp(qt))
        b = float(np.median(qs) - a * np.median(qt))
    return float(a), float(b)


def reface(
    volume: np.ndarray,
    face_region: np.ndarray,
    template_on_subject: np.ndarray,
    template_valid: np.ndarray,
    head: np.ndarray,
    template_head: np.ndarray,
    voxel_mm: np.ndarray,
    *,
    margin_mm: float = 8.0,
    ramp_mm: float = 10.0,
    base: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Blend the intensity-matched template face into the subject's face region.

    Parameters
    ----------
    volume
        Subject image (canonical grid).
    face_region
        Boolean face region (extended, see :func:`skin.extend_face_region`).
    template_on_subject
        Template head resampled onto the subject grid.
    template_valid
        Subject voxels covered by the template's grid (elsewhere ``base`` stays).
    head, template_head
        Head masks of the subject and of the mapped template (for the intensity fit).
    voxel_mm
        Voxel sizes.
    margin_mm, ramp_mm
        Blending weight geometry (:func:`region_weight`). Outside the template's field of
        view the weight is 0 (``base`` stays).
    base
        Image the template face is blended into (default ``volume``); the stage passes the
        ``maskface`` result so that face parts outside the template's field of view (a FOV
        that cuts the chin) are obscured as well.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray, dict)
        Refaced volume (float64), mask of replaced voxels, ``{"scale", "offset"}`` of the fit.

    Raises
    ------
    FaceRegionError
        Empty face region or too few border voxels for the intensity fit.
    """
    vol = np.asarray(volume, dtype=np.float64)
    if not np.asarray(face_region).any():
        raise FaceRegionError("resulting ROI is too small for defacing: the face region is empty")
    w = region_weight(face_region, voxel_mm, margin_mm=margin_mm, ramp_mm=ramp_mm)
    valid = np.asarray(template_valid, dtype=bool)
    # border zone voxels where both images agree on head vs air: the quantile line then maps
    # air to air and tissue to tissue
    h, th = np.asarray(head, bool), np.asarray(template_head, bool)
    border = (w > 0) & (w < 1) & (h == th) & valid
    tpl = np.asarray(template_on_subject, dtype=np.float64)
    a, b = intensity_fit(vol[border], tpl[border])
    # where the template has no data (a FOV that cuts the nose tip or the chin) the base
    # (the stage's smooth maskface face) stays
    changed = w > 0
    w = w * valid
    ref = vol if base is None else np.asarray(base, dtype=np.float64)
    out = ref + w * (a * tpl + b - ref)
    if base is None:
        changed = w > 0
    return out, changed, {"scale": a, "offset": b}
