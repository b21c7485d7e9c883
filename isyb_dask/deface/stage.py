"""Deface stage: one T1w, every template -> defaced images, face masks and NMI.

For each template the head is registered to the subject (12-parameter affine, see
:mod:`isyb_dask.registration`) on the subject reoriented to the closest canonical (RAS)
orientation; the face and brain masks are carried to the subject; the face is obscured
(``maskface``: the subject's facial skin replaced by a smooth one, ``zero`` or ``reface``);
voxels of the dilated subject brain mask are restored; the result goes back onto the original
voxel grid and dtype. After all templates, the NMI of the removed face is computed inside each
template's changed voxels (``nmi_mask="template"``) or their union (``"union"``).
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from nibabel.affines import voxel_sizes

from isyb_dask import registration as reg
from isyb_dask.deface.apply import deface_array
from isyb_dask.deface.brainmask import subject_brain_mask
from isyb_dask.deface.config import DefaceConfig
from isyb_dask.deface.nmi import normalized_mutual_information, union_face_mask
from isyb_dask.deface.skin import (
    FaceRegionError,
    head_mask_full,
    noisy_background,
    skin_threshold,
)
from isyb_dask.deface.skin_depth import skin_depth_map, surface_depth_change
from isyb_dask.deface.storage import cast_like, output_dtype
from isyb_dask.deface.template_fit import (
    _images,
    face_normal,
    template_registration,
)
from isyb_dask.deface.templates import BUILTIN_NAME, Template
from isyb_dask.errors import InputError, RegistrationError
from isyb_dask.io.derivatives import write_sidecar
from isyb_dask.io.nifti import load_image, save_like
from isyb_dask.io.outputs import anat_path, deface_path

__all__ = ["deface_array", "face_normal", "run_deface", "template_registration"]


def _subject_brain(
    data: np.ndarray, affine: np.ndarray, fixed: sitk.Image, templates: list[Template],
    cfg: DefaceConfig, atlas: Any | None,
) -> tuple[np.ndarray, reg.AffineRegistration | None, str]:
    """Subject brain without an anatomy: the atlas brain carried by the built-in head."""
    from isyb_dask.deface.templates import builtin_template

    builtin = next((t for t in templates if t.name == BUILTIN_NAME), None)
    builtin = builtin if builtin is not None else builtin_template(atlas)
    res = template_registration(fixed, builtin, cfg)
    brain_s = _images(builtin)[2]
    if brain_s is None:
        raise InputError(f"template {builtin.name}: no brain mask to estimate the subject's brain")
    brain = subject_brain_mask(data, affine, res, brain_s, grow_mm=cfg.brain_grow_mm,
                               threads=cfg.threads)
    return brain, res, (f"reference atlas brain mask carried by the {BUILTIN_NAME} head "
                        f"registration, grown by up to {cfg.brain_grow_mm} mm into brain tissue")


def run_deface(
    t1w: str | os.PathLike[str],
    subject: str,
    templates: list[Template],
    cfg: DefaceConfig,
    out_dir: str | os.PathLike[str],
    atlas: Any | None = None,
    *,
    anatomy: Any | None = None,
) -> dict[str, Any]:
    """Deface one T1w with every template and measure the NMI of the removed face.

    Parameters
    ----------
    t1w
        The subject's T1w image.
    subject
        Subject label (``"sub-01"`` or ``"01"``).
    templates
        Resolved templates (:func:`isyb_dask.deface.templates.resolve_templates`).
    cfg
        Deface settings.
    out_dir
        Derivatives root.
    atlas
        Reference atlas (for the built-in template when it is not in ``templates``).
    anatomy
        Optional :class:`isyb_dask.anat.reference.SubjectAnatomy`: its ``canonical`` image,
        its ``brain_mask`` (the subject's own brain, protected) and its
        ``atlas_registration`` (reused for the built-in template) are used. Without it the
        brain is estimated here (:mod:`isyb_dask.deface.brainmask`).

    Returns
    -------
    dict
        ``templates``: per template ``nmi``, ``face_voxels_changed``, ``brain_voxels_changed``
        (voxels of the dilated subject brain that differ from the original: 0 by
        construction), ``surface_depth_change_mm`` (median move of the facial skin along the
        face normal), ``registration_metric``, ``seconds``, ``transform_plausible``,
        ``error`` (None or a message), ``checks``; ``face_masks``: template -> written mask
        path; ``brain_mask``: path of the subject brain mask; ``nmi_mask_voxels``: size of
        the NMI face mask (per template with ``nmi_mask="template"``: a dict).
    """
    t1w = Path(t1w)
    img = anatomy.image if anatomy is not None else load_image(t1w, ndim=3)
    raw = np.asarray(img.dataobj)
    dtype = output_dtype(img, raw)
    if dtype != raw.dtype and not np.issubdtype(dtype, np.integer):
        raw = raw.astype(dtype)  # the values as the output stores them (scaled integers)
    original = raw.astype(np.float64)
    canon = anatomy.canonical if anatomy is not None else reg.to_canonical(img)
    data_c = np.asarray(canon.dataobj, dtype=np.float64)
    fixed = reg.to_sitk(data_c.astype(np.float32), canon.affine)
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "templates"}
    results: dict[str, dict[str, Any]] = {}
    defaced_all: dict[str, np.ndarray] = {}
    face_masks: dict[str, Path] = {}
    seeded: dict[str, reg.AffineRegistration] = {}
    try:
        if anatomy is not None:
            brain_c = np.asarray(anatomy.brain_mask, dtype=bool)
            brain_note = "subject brain mask of the anatomical reference"
            ar = getattr(anatomy, "atlas_registration", None)
            if ar is not None and ar.plausible:
                seeded[BUILTIN_NAME] = ar
        else:
            brain_c, res0, brain_note = _subject_brain(data_c, canon.affine, fixed, templates,
                                                       cfg, atlas)
            if res0 is not None:
                seeded[BUILTIN_NAME] = res0
    except (RegistrationError, InputError) as exc:
        brain_c, brain_note = None, f"no subject brain mask ({exc})"
    heads: dict[tuple[int, int], np.ndarray] = {}
    skin_before: dict[tuple[int, int], np.ndarray] = {}
    skin_thr: float | None = None
    noisy = False
    vox_c = voxel_sizes(canon.affine)
    for t in templates:
        t0 = time.perf_counter()
        row: dict[str, Any] = {
            "nmi": float("nan"), "face_voxels_changed": 0, "brain_voxels_changed": 0,
            "surface_depth_change_mm": float("nan"), "registration_metric": float("nan"),
            "debris_voxels_cleared": 0,
            "seconds": float("nan"), "transform_plausible": False, "error": None, "checks": {},
        }
        results[t.name] = row
        try:
            if brain_c is None:
                raise InputError(f"template {t.name}: {brain_note}")
            res = seeded.get(t.name) or template_registration(
                fixed, t, cfg, atlas_registration=seeded.get(BUILTIN_NAME))
            normal = face_normal(res.transform, canon.affine)
            if skin_thr is None:  # the original's skin threshold and background: once
                skin_thr = skin_threshold(data_c)
                noisy = noisy_background(data_c, skin_thr)
            if normal not in heads:
                heads[normal] = head_mask_full(data_c, vox_c, normal, threshold=skin_thr,
                                               denoise=noisy)
            out = deface_array(data_c, canon.affine, t, cfg, fixed=fixed, subject_brain=brain_c,
                               head=heads.get(normal), registration=res, denoise=noisy,
                               skin_thr=skin_thr)
        except (RegistrationError, InputError, FaceRegionError) as exc:
            row["error"] = str(exc)
            row["seconds"] = time.perf_counter() - t0
            continue
        res = out["registration"]
        row.update(registration_metric=res.metric, transform_plausible=True, checks=res.checks)
        if out["normal"] not in skin_before:  # the original's skin: once per face normal
            skin_before[out["normal"]] = skin_depth_map(data_c, skin_thr, out["normal"], vox_c,
                                                        denoise=noisy)
        row["surface_depth_change_mm"] = surface_depth_change(
            data_c, out["defaced"], out["region"], out["normal"], vox_c, threshold=skin_thr,
            before=skin_before[out["normal"]], denoise=noisy)["median_mm"]
        protect = reg.from_canonical(out["protect"], img.affine)
        changed = reg.from_canonical(out["changed"], img.affine)
        d = cast_like(reg.from_canonical(out["defaced"], img.affine), dtype)
        if dtype == raw.dtype:
            d[protect] = raw[protect]  # exact restore in stored units
        row["brain_voxels_changed"] = int((d[protect] != original[protect]).sum())
        diff = d != original  # exact: numpy compares in float64 without a float64 copy of d
        row["face_voxels_changed"] = int(diff.sum())
        row["debris_voxels_cleared"] = out["debris"]
        defaced_all[t.name] = d
        meta = {
            "Description": f"T1w defaced with template {t.name} ({cfg.method})",
            "Template": t.name,
            "TemplateProvenance": t.provenance,
            "Method": cfg.method,
            "SubjectToTemplateRAS": reg.matrix_ras(res.transform).tolist(),
            "RegistrationMetric": res.metric,
            "PlausibilityChecks": res.checks,
            "FaceNormalAxis": list(out["normal"]),
            "BrainVoxelsChanged": row["brain_voxels_changed"],
            "FaceVoxelsChanged": row["face_voxels_changed"],
            "SurfaceDepthChangeMedianMM": row["surface_depth_change_mm"],
            "DebrisVoxelsCleared": out["debris"],
            "BrainMask": brain_note,
            "Defaced": True,
        }
        if out["info"]:
            meta["RefaceIntensityFit"] = out["info"]
        sources = [t1w, t.head] + [p for p in (t.face_mask, t.brain_mask) if p is not None]
        path = deface_path(out_dir, subject, "defaced", t.name)
        save_like(d, img, path, dtype=dtype)
        write_sidecar(path, meta, sources=sources, settings=settings)
        mpath = deface_path(out_dir, subject, "face", t.name)
        save_like(changed.astype(np.uint8), img, mpath, dtype=np.uint8)
        write_sidecar(mpath, {"Description": f"voxels the {cfg.method} method replaced with "
                              f"template {t.name} (1 = face region)", "Template": t.name},
                      settings=settings)
        face_masks[t.name] = mpath
        if cfg.keep_removed_face:
            rpath = deface_path(out_dir, subject, "removedface", t.name)
            save_like((original - d.astype(np.float64)).astype(np.float32), img, rpath,
                      dtype=np.float32, mode=0o600)
        row["seconds"] = time.perf_counter() - t0
    brain_path: Path | None = None
    if brain_c is not None and defaced_all and anatomy is None:
        # with the anatomical reference, its writer owns desc-brain_mask (io/outputs.py)
        brain_path = anat_path(out_dir, subject, "brain")
        save_like(reg.from_canonical(brain_c, img.affine).astype(np.uint8), img, brain_path,
                  dtype=np.uint8)
        write_sidecar(brain_path, {"Description": f"subject brain mask protected by defacing: "
                                   f"{brain_note}"}, settings=settings)
    nmi_voxels = _nmi(original, defaced_all, results, cfg)
    # Face audit (issue 10): renders of every defaced head, face detection and the
    # re-identification embedding; the original's render stays in memory.
    from isyb_dask.deface.audit import attach_audit

    if cfg.audit:
        audit_note = attach_audit(results, original, img.affine, defaced_all, out_dir,
                                  subject, keep_original=cfg.keep_removed_face,
                                  denoise=noisy)  # the masking's decision, made once
    else:
        audit_note = "face audit skipped: switched off (deface.audit: false)"
    return {"templates": results, "face_masks": face_masks, "brain_mask": brain_path,
            "nmi_mask_voxels": nmi_voxels, "audit_note": audit_note}


def _nmi(original: np.ndarray, defaced_all: dict[str, np.ndarray],
         results: dict[str, dict[str, Any]], cfg: DefaceConfig) -> int | dict[str, int]:
    """NMI of the removed face per template, inside the per-template or the union mask."""
    t0 = time.perf_counter()
    union = None
    if cfg.nmi_mask == "union":
        union = union_face_mask(original, list(defaced_all.values()), epsilon=cfg.nmi_epsilon,
                                dilate=cfg.nmi_dilate)
    shared = (time.perf_counter() - t0) / max(len(defaced_all), 1)
    sizes: dict[str, int] = {}
    for name, d in defaced_all.items():
        t1 = time.perf_counter()
        mask = union if union is not None else union_face_mask(
            original, [d], epsilon=cfg.nmi_epsilon, dilate=cfg.nmi_dilate)
        sizes[name] = int(mask.sum())
        removed = original[mask] - d[mask].astype(np.float64)
        results[name]["nmi"] = normalized_mutual_information(
            original[mask], removed, bins=cfg.nmi_bins, average=cfg.nmi_average
        )
        results[name]["seconds"] += shared + time.perf_counter() - t1
    if union is not None:
        return int(union.sum())
    return sizes
