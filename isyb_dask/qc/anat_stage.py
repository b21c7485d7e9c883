"""Anatomical QC stage: MRIQC-style IQMs of one T1w from the subject's anatomical reference.

Called by the runner as ``run_qc_anat(t1w, subject, cfg, out_dir, atlas, exclude_masks,
anatomy=anatomy)``. The shared steps live in :mod:`isyb_dask.anat.reference` and run once
per subject: T1w validation and RAS conforming, the template registration (atlas brain mask
and priors), N4, the three-class EM segmentation, the head and rotation masks. This stage
adds, on the canonical grid of the *original* (not defaced) T1w:

1. hat, artifact and air masks (defaced regions excluded from the air mask);
2. WM harmonization (WM median -> 1000; the reference region used, eroded WM, WM or the
   75-95th percentile brain-voxel fallback, is recorded as ``harmonization_route``) and the
   IQMs (:func:`isyb_dask.qc.anat_iqms.anat_iqms`).

It writes the masks only it uses (``desc-rotation_mask``, ``desc-air_mask``,
``desc-artifacts_mask``) and the IQM JSON ``sub-X_desc-iqms_T1w.json``; the anatomy writes
``desc-brain_mask``, ``desc-head_mask``, ``label-{CSF,GM,WM}_probseg`` and
``desc-N4_biasfield`` (:mod:`isyb_dask.io.outputs` owns the names). With the original T1w,
these files reproduce every IQM (tests/test_contract.py).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import nibabel as nb
import numpy as np

from isyb_dask.anat.reference import SubjectAnatomy
from isyb_dask.errors import InputError
from isyb_dask.io.derivatives import provenance, write_json, write_sidecar
from isyb_dask.io.nifti import load_image, save_like
from isyb_dask.io.outputs import ANAT_OUTPUTS, anat_path
from isyb_dask.qc import air_masks as bg
from isyb_dask.qc.anat_iqms import anat_iqms, harmonize
from isyb_dask.anat.masks import rotation_mask
from isyb_dask.qc.config import QCConfig
from isyb_dask.registration import (
    from_canonical,
    resample_to,
    sitk_to_array,
    to_canonical,
    to_sitk,
)

__all__ = ["compute_anat_qc", "run_qc_anat"]

PathLike = str | os.PathLike[str]


def _canonical_mask(mask_img: nb.spatialimages.SpatialImage, ref: nb.Nifti1Image) -> np.ndarray:
    """Face mask (1 = face region) on the canonical grid of ``ref`` (nearest neighbour).

    Outside the mask's field of view nothing counts as face.
    """
    can = to_canonical(mask_img)
    data = np.asarray(can.dataobj)
    if data.shape == ref.shape and np.allclose(can.affine, ref.affine, atol=1e-3):
        return data > 0
    out = resample_to(
        to_sitk(data.astype(np.float32), can.affine), to_sitk(ref), None, "nearest", default=0.0
    )
    return sitk_to_array(out) > 0


def compute_anat_qc(
    anatomy: SubjectAnatomy,
    cfg: QCConfig,
    atlas: Any,
    exclude: Iterable[np.ndarray] = (),
) -> tuple[dict[str, float], dict[str, np.ndarray], dict[str, Any]]:
    """QC-only masks and the IQMs of a subject's anatomical reference (no file output).

    The N4-corrected image, bias field, head and brain masks, tissue posteriors, rotation
    mask and the template registration come from ``anatomy`` (computed once per subject,
    shared with deface and metrics); this function adds the hat, artifact and air masks,
    the WM harmonization and the IQMs.

    Parameters
    ----------
    anatomy
        :class:`isyb_dask.anat.reference.SubjectAnatomy`.
    cfg
        QC settings (thresholds).
    atlas
        :class:`isyb_dask.atlas.ReferenceAtlas` (head -> MNI affine for the landmarks).
    exclude
        Face masks on the canonical grid (1 = face region) whose ones are left out of the
        air mask.

    Returns
    -------
    (iqms, maps, info)
        IQM dict, the QC maps (``air``, ``hat``, ``artifacts``, ``rotation``) and diagnostic
        information.
    """
    timings: dict[str, float] = dict(anatomy.info.get("seconds", {}))
    img = anatomy.canonical
    original = np.ascontiguousarray(np.nan_to_num(np.asarray(img.dataobj, dtype=np.float32)))
    zooms = anatomy.zooms
    rot = anatomy.rotation if anatomy.rotation is not None else rotation_mask(original) > 0
    brain = anatomy.brain_mask
    inu = anatomy.n4
    post = anatomy.posteriors

    t0 = time.perf_counter()
    image_to_atlas = anatomy.t1w_to_atlas
    mni_to_image = np.linalg.inv(image_to_atlas) @ np.linalg.inv(atlas.head_to_mni_affine())
    hat, landmarks = bg.hat_mask(anatomy.head_mask, img.affine, mni_to_image)
    artifacts = bg.artifact_mask(original, hat, anatomy.head_mask, zscore=cfg.artifact_zscore,
                                 zooms=zooms)
    air = bg.air_mask(hat, artifacts, rot, tuple(exclude))
    timings["masks"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    factor, route = bg.wm_harmonize_route(inu, post["wm"], brain=brain)
    data = harmonize(inu, factor)
    iqms = anat_iqms(
        data,
        original,
        head=anatomy.head_mask,
        brain=brain,
        air=air,
        rotation=rot,
        pvms=(post["csf"], post["gm"], post["wm"]),
        zooms=zooms,
        artifacts=artifacts,
        bias=anatomy.bias,
    )
    timings["iqms"] = time.perf_counter() - t0
    maps = {"air": air, "hat": hat, "artifacts": artifacts, "rotation": np.asarray(rot, bool)}
    info = {
        "registration_metric": anatomy.info.get("registration_metric"),
        "registration_plausible": anatomy.info.get("registration_plausible"),
        "registration_checks": anatomy.info.get("registration_checks"),
        "harmonization_factor": factor,
        "harmonization_route": route,
        "segmentation": anatomy.info.get("segmentation"),
        "landmarks": landmarks,
        "seconds": timings,
    }
    return iqms, maps, info


def _bids_meta(t1w: Path, subject: str) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    name = t1w.name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            side = t1w.with_name(name[: -len(ext)] + ".json")
            if side.exists():
                try:
                    meta = json.loads(side.read_text())
                except (OSError, ValueError):
                    meta = {}
            break
    meta.update({"subject_id": subject, "modality": "T1w", "source_file": name})
    return meta


def run_qc_anat(
    t1w: PathLike,
    subject: str,
    cfg: QCConfig,
    out_dir: PathLike,
    atlas: Any,
    exclude_masks: Iterable[PathLike | nb.spatialimages.SpatialImage] = (),
    *,
    anatomy: SubjectAnatomy | None = None,
    info_out: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Anatomical QC of one subject: write the QC masks and IQM JSON; return the IQMs.

    Parameters
    ----------
    t1w
        Original (not defaced) T1w image.
    subject
        Subject label (``"sub-01"`` or ``"01"``).
    cfg
        QC settings.
    out_dir
        Derivatives root.
    atlas
        :class:`isyb_dask.atlas.ReferenceAtlas`.
    exclude_masks
        Face masks of the defacing (files or images, 1 = face region), on any grid; their
        ones are excluded from the air mask.
    anatomy
        The subject's anatomical reference (the runner builds and writes it once). When
        None it is built here from ``cfg`` and its derivatives (brain/head masks, tissue
        posteriors, bias field) are written too, so the outputs are complete either way.
    info_out
        If given, filled with ``harmonization_route`` (``wm_eroded``, ``wm`` or
        ``fallback: brain_p75_p95``) and ``harmonization_factor``.

    Returns
    -------
    dict
        MRIQC IQM name -> float.

    Raises
    ------
    InputError
        Unreadable / degenerate T1w or unusable masks.
    """
    t1w = Path(t1w)
    exclude_masks = list(exclude_masks)
    settings = asdict(cfg)
    if anatomy is None:
        from isyb_dask.anat.derivatives import write_anatomy
        from isyb_dask.anat.reference import build_anatomy

        try:
            anatomy = build_anatomy(t1w, subject, atlas, cfg, threads=cfg.threads)
        except ValueError as exc:
            raise InputError(f"{t1w.name}: anatomical QC failed ({exc})") from None
        write_anatomy(anatomy, out_dir, settings=settings)
    raw = anatomy.image
    img = anatomy.canonical
    exclude = []
    for item in exclude_masks:
        mask_img = (
            item
            if isinstance(item, nb.spatialimages.SpatialImage)
            else load_image(item, ndim=3, check_values=False)
        )
        exclude.append(_canonical_mask(mask_img, img))
    try:
        iqms, maps, info = compute_anat_qc(anatomy, cfg, atlas, exclude)
    except ValueError as exc:
        raise InputError(f"{t1w.name}: anatomical QC failed ({exc})") from None

    if info_out is not None:
        info_out["harmonization_route"] = info["harmonization_route"]
        info_out["harmonization_factor"] = float(info["harmonization_factor"])
    sources = [t1w] + [
        Path(m) for m in exclude_masks if not isinstance(m, nb.spatialimages.SpatialImage)
    ]
    for key in ("rotation", "air", "artifacts"):
        out = ANAT_OUTPUTS[key]
        path = anat_path(out_dir, subject, key)
        arr = from_canonical(np.asarray(maps[key]), raw.affine)
        save_like(arr.astype(np.uint8), raw, path, dtype=np.uint8)
        write_sidecar(
            path,
            {"Description": out.description, "Sources": [t1w.name]},
            sources=sources if key == "air" else [t1w],
            settings=settings,
        )
    payload: dict[str, Any] = {k: float(v) for k, v in iqms.items()}
    payload["bids_meta"] = _bids_meta(t1w, subject)
    prov = provenance(sources, settings)
    prov["qc"] = info
    payload["provenance"] = prov
    write_json(anat_path(out_dir, subject, "iqms"), payload)
    return iqms
