"""Deface stage: one T1w, every template -> defaced images, face masks and NMI.

For each template the head is registered to the subject (12-parameter affine, see
:mod:`isyb_dask.registration`) on the subject reoriented to the closest canonical (RAS)
orientation; the face and brain masks are carried to the subject; the face is obscured
(``maskface`` surface blur or ``zero``); voxels of the dilated brain mask are restored; the
result goes back onto the original voxel grid and dtype. After all templates, the NMI of
the removed face is computed inside one face mask per subject (the union of the voxels any
template changed, METHODS §4 option (i)).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from isyb_dask import registration as reg
from isyb_dask.deface.config import DefaceConfig
from isyb_dask.deface.maskface import normfilter, protect_mask, zero_face
from isyb_dask.deface.nmi import normalized_mutual_information, union_face_mask
from isyb_dask.deface.templates import Template
from isyb_dask.errors import InputError, RegistrationError
from isyb_dask.io.derivatives import derivative_path, write_sidecar
from isyb_dask.io.nifti import load_image, save_like

__all__ = ["deface_array", "face_normal", "run_deface"]

_REG_STEP_MM = 2.0


@functools.lru_cache(maxsize=8)
def _template_images(
    head: str, face: str, brain: str | None, mtime: float
) -> tuple[sitk.Image, sitk.Image, sitk.Image | None]:
    """Canonical template head (down-sampled to the finest registration level) and masks."""
    del mtime  # part of the cache key only
    head_img = reg.to_canonical(load_image(head, ndim=3))
    head_s = reg.downsample(reg.to_sitk(head_img), _REG_STEP_MM)
    face_s = reg.to_sitk(reg.to_canonical(load_image(face, ndim=3, check_values=False)), dtype=np.float32)
    brain_s = None
    if brain is not None:
        b_img = reg.to_canonical(load_image(brain, ndim=3, check_values=False))
        brain_s = reg.to_sitk(np.asarray(b_img.dataobj) > 0.5, b_img.affine, dtype=np.uint8)
    return head_s, face_s, brain_s


def face_normal(transform: sitk.Transform, subject_affine: np.ndarray) -> tuple[int, int]:
    """Voxel axis and sign of the subject's face normal (template anterior mapped to subject).

    Parameters
    ----------
    transform
        Subject (fixed) -> template (moving) physical transform.
    subject_affine
        Voxel-to-RAS affine of the subject grid on which the masking runs.
    """
    lin = reg.matrix_ras(transform)[:3, :3]
    d_ras = np.linalg.solve(lin, np.array([0.0, 1.0, 0.0]))
    d_vox = np.linalg.solve(subject_affine[:3, :3], d_ras)
    axis = int(np.argmax(np.abs(d_vox)))
    return axis, int(np.sign(d_vox[axis]) or 1)


def deface_array(
    data: np.ndarray,
    affine: np.ndarray,
    template: Template,
    cfg: DefaceConfig,
    *,
    fixed: sitk.Image | None = None,
    initial_registration: reg.AffineRegistration | None = None,
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
    initial_registration
        A registration of this template's head to the same subject grid, already computed
        (the subject anatomy's ``atlas_registration`` for the built-in head); used instead of
        registering again.

    Returns
    -------
    dict
        ``defaced`` (float64), ``changed`` (bool, voxels the method replaced), ``protect``
        (bool, dilated brain), ``brain`` (bool), ``registration`` (AffineRegistration),
        ``normal`` (axis, sign).

    Raises
    ------
    RegistrationError
        When the template-to-subject transform is implausible.
    ValueError
        When the face region is empty or has no skin.
    """
    if template.face_mask is None:
        raise InputError(f"template {template.name}: no face mask (resolve templates first)")
    fixed = fixed if fixed is not None else reg.to_sitk(data, affine)
    head_s, face_s, brain_s = _template_images(
        str(template.head), str(template.face_mask),
        None if template.brain_mask is None else str(template.brain_mask),
        os.path.getmtime(template.head),
    )
    res = initial_registration or reg.register_affine(fixed, head_s, seed=cfg.seed, threads=cfg.threads)
    if not res.plausible:
        raise RegistrationError(
            f"template {template.name}: implausible transform ({'; '.join(res.checks['violations'])})"
        )
    with reg.sitk_threads(cfg.threads):
        keep = reg.sitk_to_array(
            reg.resample_to(face_s, fixed, res.transform, "linear", default=1.0, threads=cfg.threads)
        )
        if brain_s is not None:
            brain = reg.sitk_to_array(
                reg.resample_to(sitk.Cast(brain_s, sitk.sitkFloat32), fixed, res.transform, "linear",
                                threads=cfg.threads)
            ) > 0.5
        else:
            brain = np.zeros(data.shape, dtype=bool)
    vox = voxel_sizes_affine(affine)
    protect = protect_mask(brain, vox, cfg.brain_dilate_mm)
    normal = face_normal(res.transform, affine)
    if cfg.method == "zero":
        defaced, changed = zero_face(data, keep)
    else:
        rng = np.random.default_rng(cfg.seed)
        defaced, changed = normfilter(
            data, keep < 0.5, vox, normal[0], normal[1], layer_mm=cfg.layer_mm,
            grid_mm=cfg.grid_mm, margin_mm=cfg.roi_margin_mm, jitter_vox=cfg.jitter_vox, rng=rng,
        )
    defaced[protect] = np.asarray(data, dtype=np.float64)[protect]
    changed &= ~protect
    return {"defaced": defaced, "changed": changed, "protect": protect, "brain": brain,
            "registration": res, "normal": normal}


def voxel_sizes_affine(affine: np.ndarray) -> np.ndarray:
    """Voxel sizes (mm) of the three axes of an affine."""
    return np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))


def _cast_like(arr: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(arr), info.min, info.max).astype(dtype)
    return arr.astype(dtype)


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
        Reference atlas: a template whose head is ``atlas.head`` reuses
        ``anatomy.atlas_registration`` (the same registration) when ``anatomy`` is given.
    anatomy
        The subject's :class:`isyb_dask.anat.reference.SubjectAnatomy`: its loaded T1w is used
        and it owns the subject brain mask (not written here then).

    Returns
    -------
    dict
        ``templates``: per template ``nmi``, ``face_voxels_changed``, ``brain_voxels_changed``,
        ``registration_metric``, ``seconds``, ``transform_plausible``, ``error`` (None or a
        message), ``checks``; ``face_masks``: template -> written mask path; ``brain_mask``:
        path of the subject brain mask (from the first successful template) or None;
        ``nmi_mask_voxels``: size of the shared NMI face mask.
    """
    t1w = Path(t1w)
    img = anatomy.image if anatomy is not None else load_image(t1w, ndim=3)
    shared_head = None if anatomy is None or atlas is None else Path(atlas.head).resolve()
    raw = np.asarray(img.dataobj)
    dtype = img.get_data_dtype()
    slope, inter = img.header.get_slope_inter()
    if slope is not None and (slope != 1.0 or (inter or 0.0) != 0.0):
        dtype = np.dtype(np.float32)  # scaled integers cannot round-trip: keep the real values
    original = raw.astype(np.float64)
    canon = reg.to_canonical(img)
    data_c = np.asarray(canon.dataobj, dtype=np.float64)
    fixed = reg.to_sitk(data_c.astype(np.float32), canon.affine)
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "templates"}
    results: dict[str, dict[str, Any]] = {}
    defaced_all: dict[str, np.ndarray] = {}
    face_masks: dict[str, Path] = {}
    brain_path: Path | None = None
    for t in templates:
        t0 = time.perf_counter()
        row: dict[str, Any] = {
            "nmi": float("nan"), "face_voxels_changed": 0, "brain_voxels_changed": 0,
            "registration_metric": float("nan"), "seconds": float("nan"),
            "transform_plausible": False, "error": None, "checks": {},
        }
        results[t.name] = row
        try:
            same = shared_head is not None and Path(t.head).resolve() == shared_head
            out = deface_array(data_c, canon.affine, t, cfg, fixed=fixed,
                               initial_registration=anatomy.atlas_registration if same else None)
        except (RegistrationError, ValueError, InputError) as exc:
            row["error"] = str(exc)
            row["seconds"] = time.perf_counter() - t0
            continue
        res = out["registration"]
        row.update(registration_metric=res.metric, transform_plausible=True, checks=res.checks)
        protect = reg.from_canonical(out["protect"], img.affine)
        changed = reg.from_canonical(out["changed"], img.affine)
        d = _cast_like(reg.from_canonical(out["defaced"], img.affine), dtype)
        if dtype == raw.dtype:
            d[protect] = raw[protect]  # exact restore in stored units
        row["brain_voxels_changed"] = int((d[protect].astype(np.float64) != original[protect]).sum())
        diff = d.astype(np.float64) != original
        row["face_voxels_changed"] = int(diff.sum())
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
            "Defaced": True,
        }
        sources = [t1w, t.head] + [p for p in (t.face_mask, t.brain_mask) if p is not None]
        path = derivative_path(out_dir, subject, "anat", "T1w", desc=f"defaced{t.name}")
        save_like(d, img, path, dtype=dtype)
        write_sidecar(path, meta, sources=sources, settings=settings)
        mpath = derivative_path(out_dir, subject, "anat", "mask", desc=f"face{t.name}")
        save_like(changed.astype(np.uint8), img, mpath, dtype=np.uint8)
        write_sidecar(mpath, {"Description": f"voxels the {cfg.method} method replaced with "
                              f"template {t.name} (1 = face region)", "Template": t.name},
                      settings=settings)
        face_masks[t.name] = mpath
        if brain_path is None and anatomy is None:
            brain_path = derivative_path(out_dir, subject, "anat", "mask", desc="brain")
            save_like(reg.from_canonical(out["brain"], img.affine).astype(np.uint8), img,
                      brain_path, dtype=np.uint8)
            write_sidecar(brain_path, {"Description": f"brain mask carried over from template {t.name}"},
                          settings=settings)
        if cfg.keep_removed_face:
            rpath = derivative_path(out_dir, subject, "anat", "T1w", desc=f"removedface{t.name}")
            save_like((original - d.astype(np.float64)).astype(np.float32), img, rpath,
                      dtype=np.float32, mode=0o600)
        row["seconds"] = time.perf_counter() - t0
    # NMI inside one face mask shared by all templates of the subject
    t0 = time.perf_counter()
    mask = union_face_mask(original, list(defaced_all.values()), epsilon=cfg.nmi_epsilon,
                           dilate=cfg.nmi_dilate)
    nmi_time = (time.perf_counter() - t0) / max(len(defaced_all), 1)
    for name, d in defaced_all.items():
        t1 = time.perf_counter()
        removed = original[mask] - d[mask].astype(np.float64)
        results[name]["nmi"] = normalized_mutual_information(
            original[mask], removed, bins=cfg.nmi_bins, average=cfg.nmi_average
        )
        results[name]["seconds"] += nmi_time + time.perf_counter() - t1
    return {"templates": results, "face_masks": face_masks, "brain_mask": brain_path,
            "nmi_mask_voxels": int(mask.sum())}
