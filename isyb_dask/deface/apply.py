"""Obscure the face of one T1w with one template (the deface stage's per-template step).

:func:`deface_array` takes the subject image on its canonical (RAS) grid and one template:
it registers the template head (or takes a given registration), carries the template's face
and brain masks to the subject, obscures the face with the configured method (``maskface``,
``zero`` or ``reface``), restores the protected brain and returns the defaced array with its
masks and measures. :mod:`isyb_dask.deface.stage` runs it for every template of a subject.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import SimpleITK as sitk
from nibabel.affines import voxel_sizes
from scipy import ndimage as ndi

from isyb_dask import registration as reg
from isyb_dask.deface.blur import maskface_blur
from isyb_dask.deface.config import DefaceConfig
from isyb_dask.deface.maskface import protect_mask
from isyb_dask.deface.reface import reface
from isyb_dask.deface.skin import (
    air_debris,
    extend_face_region,
    head_mask_full,
    noisy_background,
    skin_threshold,
)
from isyb_dask.deface.template_fit import (
    _images,
    _template_head_full,
    face_normal,
    template_registration,
)
from isyb_dask.deface.templates import Template
from isyb_dask.deface.zero import coat_cut, cover_protected, zero_face
from isyb_dask.errors import InputError

__all__ = ["deface_array"]


def deface_array(
    data: np.ndarray,
    affine: np.ndarray,
    template: Template,
    cfg: DefaceConfig,
    *,
    fixed: sitk.Image | None = None,
    subject_brain: np.ndarray | None = None,
    head: np.ndarray | None = None,
    registration: reg.AffineRegistration | None = None,
    denoise: bool | None = None,
    skin_thr: float | None = None,
) -> dict[str, Any]:
    """Deface a canonical (RAS-ordered) array with one template.

    Parameters
    ----------
    data
        Subject image on a closest-canonical grid.
    affine
        Its voxel-to-RAS affine.
    template
        Template with face and brain masks.
    cfg
        Settings (method, layer geometry, seed, threads).
    fixed
        The subject as a SimpleITK image (built from ``data`` when None).
    subject_brain
        The subject's own brain mask. The union of it and of the template's brain mask
        carried over by the registration is protected after dilation by
        ``cfg.brain_dilate_mm``.
    head
        The subject's head mask (:func:`skin.head_mask_full`; computed when None).
    registration
        A plausible subject -> template registration to use instead of registering again.
    denoise
        The background is noisy (:func:`skin.noisy_background`): the skin and the debris
        are found on the 3x3x3 median. Decided from ``data`` when None.
    skin_thr
        :func:`skin.skin_threshold` of ``data`` when already known (computed when None).

    Returns
    -------
    dict
        ``defaced`` (float64), ``changed`` (bool, voxels the method replaced), ``protect``
        (bool, dilated brain), ``brain`` (bool), ``registration`` (AffineRegistration),
        ``normal`` (axis, sign), ``region`` (bool face region), ``info`` (method details),
        ``debris`` (voxels of the face region's air cleared, ``cfg.clear_debris``).

    Raises
    ------
    RegistrationError
        When the template-to-subject transform is implausible.
    InputError
        A template without a face mask.
    FaceRegionError
        When the face region is empty or has no skin.
    """
    if template.face_mask is None:
        raise InputError(f"template {template.name}: no face mask (resolve templates first)")
    fixed = fixed if fixed is not None else reg.to_sitk(data, affine)
    head_s, face_s, brain_s = _images(template)
    res = registration if registration is not None else template_registration(fixed, template, cfg)
    with reg.sitk_threads(cfg.threads):
        keep = reg.sitk_to_array(
            reg.resample_to(face_s, fixed, res.transform, "linear", default=1.0, threads=cfg.threads)
        )
        brain = np.zeros(data.shape, dtype=bool)
        if brain_s is not None:  # the template's brain carried over: protected as well
            brain = reg.sitk_to_array(
                reg.resample_to(sitk.Cast(brain_s, sitk.sitkFloat32), fixed, res.transform, "linear",
                                threads=cfg.threads)
            ) > 0.5
        if subject_brain is not None:
            brain |= np.asarray(subject_brain, dtype=bool)
        src = _template_head_full(str(template.head), os.path.getmtime(template.head)) \
            if cfg.method == "reface" else head_s
        tpl = reg.sitk_to_array(reg.resample_to(sitk.Cast(src, sitk.sitkFloat32), fixed,
                                                res.transform, "linear", default=-1e30,
                                                threads=cfg.threads))
        inside = tpl > -1e29  # subject voxels the template's grid covers
        tpl = np.where(inside, tpl, 0.0)
    vox = voxel_sizes(np.asarray(affine))
    protect = protect_mask(brain, vox, cfg.brain_dilate_mm)
    normal = face_normal(res.transform, affine)
    info: dict[str, Any] = {}
    n_debris = 0
    skin_thr = skin_threshold(data) if skin_thr is None else float(skin_thr)
    if denoise is None:
        denoise = noisy_background(data, skin_thr)
    head = head if head is not None else head_mask_full(data, vox, normal, threshold=skin_thr,
                                                        denoise=denoise)
    tpl_tissue = tpl > skin_threshold(reg.sitk_to_array(head_s))
    region = extend_face_region(keep < 0.5, inside, normal, head=head, voxel_mm=vox,
                                up_mm=cfg.face_up_mm, template_tissue=tpl_tissue,
                                extrapolated=True)
    if cfg.method == "zero":
        # the template's region (also air, as the KEEP mask says) plus the subject's face
        # continued in front and upwards (eyes, brow)
        # smooth the cut (a jagged cut that follows the face's shape still looks like one)
        f = max(1, int(round(2.0 / float(vox.min()))))
        cut = ndi.zoom(ndi.gaussian_filter(region[::f, ::f, ::f].astype(np.float32),
                                           4.0 / (vox * f)), f, order=1)
        cut = np.pad(cut, [(0, max(0, n - c)) for n, c in zip(region.shape, cut.shape)],
                     mode="edge")[: region.shape[0], : region.shape[1], : region.shape[2]] > 0.5
        region = region | cut
        weight = np.where(region & (keep >= 0.5), 0.0, keep)
        defaced, changed = zero_face(data, weight)
        if cfg.zero_coat_mm > 0:  # plain wall at the cut (no orbits / cavities showing)
            thr = skin_thr
            defaced, coat = coat_cut(defaced, weight < 0.5, head, vox, coat_mm=cfg.zero_coat_mm,
                                     threshold=thr)
            changed |= coat
            # a smooth shell over the protected brain where the cut reaches it (its gyri and
            # orbital roofs would otherwise be the exposed, face-like relief)
            value = float(defaced[coat][0]) if coat.any() else float(np.median(data[head & (data > thr)]))
            defaced, cover = cover_protected(defaced, weight < 0.5, protect, vox, value)
            changed |= cover
        region = region | (keep < 0.5)
    else:
        defaced, changed = maskface_blur(
            data, region, head, vox, depth_mm=cfg.skin_depth_mm, smooth_mm=cfg.skin_smooth_mm,
            shift_mm=cfg.skin_shift_mm, margin_mm=cfg.blend_margin_mm,
            ramp_mm=cfg.blend_ramp_mm, border_mm=cfg.blend_border_mm,
            # the layer fades out at the volume's faces except across the face normal: a
            # nose or lips cut by the field of view are replaced up to the cut
            fade_axes=tuple(a for a in range(3) if a != normal[0]),
            # opaque up to a multiple of the tissue/air Otsu threshold (twice the skin
            # threshold): no iso-level a renderer would pick sees through the thin layer
            opaque_level=2.0 * cfg.opaque_otsu * skin_thr if cfg.opaque_otsu > 0 else None,
        )
        if cfg.method == "reface":  # the template's face, blended into the smooth face
            defaced, ch, info = reface(
                data, region, tpl, inside, head, tpl_tissue, vox,
                margin_mm=cfg.blend_margin_mm, ramp_mm=cfg.blend_ramp_mm, base=defaced,
            )
            changed |= ch
        if cfg.clear_debris:  # detached bright specks in front of the new face
            debris, air_level = air_debris(defaced, region, head, changed, skin_thr,
                                           denoise=denoise)
            defaced[debris] = air_level  # defaced is this call's own array
            changed |= debris
            n_debris = int(debris.sum())
    defaced[protect] = np.asarray(data, dtype=np.float64)[protect]
    changed &= ~protect
    return {"defaced": defaced, "changed": changed, "protect": protect, "brain": brain,
            "registration": res, "normal": normal, "region": region, "info": info,
            "debris": n_debris}
