"""Anatomical QC stage: masks, tissue maps and MRIQC-style IQMs of one T1w.

Called by the runner as ``run_qc_anat(t1w, subject, cfg, out_dir, atlas, exclude_masks)``
(docs/dev-contracts.md). Steps, all on the RAS-conformed grid of the *original* (not
defaced) T1w:

1. rotation (zero-padding) mask of the original image;
2. 12-dof registration of the reference atlas head to the T1w; atlas brain mask and
   CSF/GM/WM priors warped onto the T1w;
3. N4 INU correction (coarse grid, one thread);
4. head mask (MRIQC gradient recipe) and three-class EM segmentation with the priors;
5. harmonization (WM median -> 1000; the reference region used, eroded WM, WM or the
   75-95th percentile brain-voxel fallback, is recorded as ``harmonization_route``),
   hat/artifact/air masks (defaced regions excluded);
6. IQMs (:func:`isyb_dask.qc.anat_iqms.anat_iqms`).

Every mask and tissue map is written as a BIDS derivative on the original voxel grid
(``desc-head_mask``, ``desc-brain_mask``, ``desc-air_mask``, ``label-{CSF,GM,WM}_probseg``)
and the N4 bias field (``desc-N4_biasfield``), each with a sidecar, plus the IQM JSON
``sub-X_desc-iqms_T1w.json``: with the original T1w, these files reproduce every IQM.
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

from isyb_dask.errors import InputError
from isyb_dask.io.derivatives import derivative_path, provenance, write_json, write_sidecar
from isyb_dask.io.nifti import load_image, save_like
from isyb_dask.qc import anat_masks as am
from isyb_dask.qc.anat_iqms import anat_iqms, harmonize
from isyb_dask.qc.common import rotation_mask
from isyb_dask.qc.config import QCConfig
from isyb_dask.qc.segmentation import register_atlas, segment_tissues, warp_atlas
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
    img: nb.Nifti1Image,
    cfg: QCConfig,
    atlas: Any,
    exclude: Iterable[np.ndarray] = (),
) -> tuple[dict[str, float], dict[str, np.ndarray], dict[str, Any]]:
    """Masks, tissue maps and IQMs of a RAS-conformed T1w (no file output).

    Parameters
    ----------
    img
        T1w on a RAS-conformed grid.
    cfg
        QC settings (seed, threads, registration levels, thresholds).
    atlas
        :class:`isyb_dask.atlas.ReferenceAtlas`.
    exclude
        Face masks on the same grid (1 = face region) whose ones are left out of the air mask.

    Returns
    -------
    (iqms, maps, info)
        IQM dict, the maps (``head``, ``brain``, ``air``, ``hat``, ``artifacts``,
        ``rotation``, ``bias``, ``csf``, ``gm``, ``wm``) and diagnostic information.
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    original = np.ascontiguousarray(np.nan_to_num(np.asarray(img.dataobj, dtype=np.float32)))
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    rot = rotation_mask(original)
    timings["rotation"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    reg = register_atlas(
        img,
        str(atlas.head),
        seed=cfg.seed,
        threads=cfg.threads,
        levels_mm=cfg.registration_levels_mm,
    )
    priors_img = tuple(nb.load(str(p)) for p in (atlas.csf_prob, atlas.gm_prob, atlas.wm_prob))
    warped = warp_atlas(img, reg, nb.load(str(atlas.brain_mask)), priors_img, threads=cfg.threads)
    timings["registration"] = time.perf_counter() - t0
    if not reg.plausible:
        raise InputError(
            f"T1w: atlas registration implausible after retries ({reg.checks.get('violations')})"
        )
    if int(warped.brain.sum()) < 1000:
        raise InputError("T1w: brain mask from the atlas registration is (nearly) empty")

    t0 = time.perf_counter()
    positive = np.clip(original, 0, None)
    inu, bias = am.n4_correct(
        positive, zooms, warped.brain, grid_mm=cfg.inu_grid_mm, threads=cfg.threads
    )
    inu[inu < 0] = 0
    timings["inu"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    posteriors, seg_info = segment_tissues(
        inu, warped.brain, warped.priors, prior_weight=cfg.prior_weight
    )
    csf, gm, wm = posteriors
    timings["segmentation"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    enhanced = am.enhance(inu, warped.priors[2], rng)
    head = am.head_mask(enhanced, warped.brain, zooms, threshold=cfg.head_threshold)
    image_to_atlas = warped.image_to_atlas
    mni_to_image = np.linalg.inv(image_to_atlas) @ np.linalg.inv(atlas.head_to_mni_affine())
    hat, landmarks = am.hat_mask(head, img.affine, mni_to_image)
    artifacts = am.artifact_mask(original, hat, head, zscore=cfg.artifact_zscore, zooms=zooms)
    air = am.air_mask(hat, artifacts, rot, tuple(exclude))
    timings["masks"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    factor, route = am.wm_harmonize_route(inu, wm, brain=warped.brain)
    data = harmonize(inu, factor)
    iqms = anat_iqms(
        data,
        original,
        head=head,
        brain=warped.brain,
        air=air,
        rotation=rot,
        pvms=(csf, gm, wm),
        zooms=zooms,
        artifacts=artifacts,
        bias=bias,
    )
    timings["iqms"] = time.perf_counter() - t0
    maps = {
        "head": head,
        "brain": warped.brain,
        "air": air,
        "hat": hat,
        "artifacts": artifacts,
        "rotation": rot.astype(bool),
        "bias": bias,
        "csf": csf,
        "gm": gm,
        "wm": wm,
    }
    info = {
        "registration_metric": reg.metric,
        "registration_plausible": bool(reg.plausible),
        "registration_checks": reg.checks,
        "harmonization_factor": factor,
        "harmonization_route": route,
        "segmentation": seg_info,
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
    info_out: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Anatomical QC of one subject: write masks, tissue maps and IQM JSON; return the IQMs.

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
        Keep-masks of the defacing (files or images, 1 = kept, 0 = removed face), on any
        grid (1 = face region); their ones are excluded from the air mask.
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
    raw = load_image(t1w, ndim=3)
    img = to_canonical(raw)
    img = nb.Nifti1Image(np.asarray(img.dataobj, dtype=np.float32), img.affine, img.header)
    exclude = []
    for item in exclude_masks:
        mask_img = (
            item
            if isinstance(item, nb.spatialimages.SpatialImage)
            else load_image(item, ndim=3, check_values=False)
        )
        exclude.append(_canonical_mask(mask_img, img))
    try:
        iqms, maps, info = compute_anat_qc(img, cfg, atlas, exclude)
    except ValueError as exc:
        raise InputError(f"{t1w.name}: anatomical QC failed ({exc})") from None

    if info_out is not None:
        info_out["harmonization_route"] = info["harmonization_route"]
        info_out["harmonization_factor"] = float(info["harmonization_factor"])
    settings = asdict(cfg)
    sources = [t1w] + [
        Path(m) for m in exclude_masks if not isinstance(m, nb.spatialimages.SpatialImage)
    ]
    outputs = {
        "head": ("mask", {"desc": "head"}, "Head mask (MRIQC gradient recipe)."),
        "brain": (
            "mask",
            {"desc": "brain"},
            "Brain mask (atlas mask through affine registration).",
        ),
        "air": (
            "mask",
            {"desc": "air"},
            "Air mask: hat mask minus artifacts, zero padding and defaced regions.",
        ),
        "artifacts": (
            "mask",
            {"desc": "artifacts"},
            "Artifact voxels of the hat mask (background / MAD > z-score), used by qi_1.",
        ),
        "csf": ("probseg", {"label": "CSF"}, "CSF posterior of the 3-class EM segmentation."),
        "gm": ("probseg", {"label": "GM"}, "GM posterior of the 3-class EM segmentation."),
        "wm": ("probseg", {"label": "WM"}, "WM posterior of the 3-class EM segmentation."),
        "bias": (
            "biasfield",
            {"desc": "N4"},
            (
                "Multiplicative N4 bias field: IQM input = clip(T1w / field * "
                "harmonization_factor, 0) (factor in the IQM JSON provenance)."
            ),
        ),
    }
    for key, (suffix, entities, text) in outputs.items():
        path = derivative_path(out_dir, subject, "anat", suffix, **entities)
        arr = from_canonical(np.asarray(maps[key]), raw.affine)
        dtype = np.uint8 if suffix == "mask" else np.float32  # float32 = values used
        save_like(arr.astype(dtype), raw, path, dtype=dtype)
        write_sidecar(
            path,
            {"Description": text, "Sources": [t1w.name]},
            sources=[t1w],
            settings=settings,
        )
    payload: dict[str, Any] = {k: float(v) for k, v in iqms.items()}
    payload["bids_meta"] = _bids_meta(t1w, subject)
    prov = provenance(sources, settings)
    prov["qc"] = info
    payload["provenance"] = prov
    write_json(
        derivative_path(out_dir, subject, "anat", "T1w", desc="iqms", extension=".json"), payload
    )
    return iqms
