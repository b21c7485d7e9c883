"""Per-subject surface metrics stage: volumetric metrics -> MNI -> fsLR 32k vertices.

``run_metrics`` computes, for one subject, the 13 vertex-wise metrics of
:data:`isyb_dask.metrics.names.SURFACE_METRICS`:

* T1w: registration chain T1w -> head template -> MNI (:mod:`isyb_dask.metrics.spaces`), GM
  segmentation and Jacobian-modulated GMV (:mod:`isyb_dask.metrics.gmv`);
* BOLD (:mod:`isyb_dask.metrics.bold_surface`): ALFF/fALFF, ReHo, VMHC;
* DWI and ASL (:mod:`isyb_dask.metrics.dwi_asl_surface`): FA/MD in the ribbon and the
  superficial white matter, CBF in the ribbon;
* CT/SA/LGI from a derivatives folder when given (:mod:`isyb_dask.metrics.structural`),
  else computed from the T1w's tissue posteriors (:mod:`isyb_dask.metrics.morphometry`);
  ``info["surface_provenance"]`` and the GIFTI sidecars say which.

Files: per-metric GIFTI (:mod:`isyb_dask.metrics.surface_files`), native and standard-space
volumetric maps (:class:`isyb_dask.metrics.volume_writer.VolumeWriter`:
``space-MNI152NLin6Asym`` through the anatomy's SyN normalisation, else
``space-MNI152NLin2009aSym`` through the affine chain).

Failure policy: a corrupt image file (unreadable, truncated, constant, non-finite, wrong
dimensions; every input image is checked before any computation) raises ``InputError``
naming the file, and a failed T1w -> MNI registration raises ``RegistrationError``
(nothing can be projected): the runner records the subject as failed. An absent modality,
one whose content or metadata is unusable for its metrics (too short a BOLD run for the
nuisance model, no b=0 volume, a missing ASL sidecar field: ``InputError`` raised while
processing, message naming the file) or one whose processing fails otherwise (e.g. an
implausible rigid registration) leaves only its metrics NaN with the reason in ``missing``;
the subject still succeeds with the other metrics.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from isyb_dask.errors import InputError, RegistrationError
from isyb_dask.io.nifti import load_image
from isyb_dask.metrics import gmv as gmv_mod
from isyb_dask.metrics.bold_surface import bold_metrics, surface_vmhc
from isyb_dask.metrics.config import MetricsConfig
from isyb_dask.metrics.dwi_asl_surface import asl_metrics, dwi_metrics
from isyb_dask.metrics.fslr import N_VERTICES, FsLR32k, load_fslr32k
from isyb_dask.metrics.names import SURFACE_METRICS
from isyb_dask.metrics.nuisance import bandpass
from isyb_dask.metrics.spaces import chain_from_anatomy
from isyb_dask.metrics.structural import read_structural_metrics
from isyb_dask.metrics.surface_files import write_surface_metric
from isyb_dask.metrics.volume_writer import VolumeWriter

__all__ = ["MODALITY_METRICS", "bandpass", "run_metrics", "surface_vmhc", "write_surface_metric"]

_FAILURES = (RegistrationError, ValueError, RuntimeError, np.linalg.LinAlgError)


def _morphometry(ginfo, t1_img, chain, surf, writer, inputs, found, missing, sources, info,
                 anatomy=None, compute=True):
    """CT, SA, LGI from the T1w's posteriors unless FreeSurfer-derived values were read."""
    from isyb_dask.metrics.morphometry import surface_provenance, t1w_morphometry

    todo = [m for m in ("CT", "SA", "LGI") if m not in found]
    info["surface_provenance"] = surface_provenance(found, sources, computed=())
    if not todo:
        return
    if not compute:
        for m in todo:
            missing[m] = "not computed: metrics.morphometry is off"
        return
    try:
        res = t1w_morphometry(ginfo, t1_img, chain.t1w_to_mni, surf, anatomy=anatomy)
    except _FAILURES as exc:
        for m in todo:
            missing[m] = f"failed: {type(exc).__name__}: {exc}"
        return
    for m in todo:
        found[m] = res[m]
        sources[m] = [inputs.t1w]
    info["surface_provenance"] = surface_provenance(found, sources, computed=todo)
    info["morphometry"] = res["info"]
    writer.write(
        res["thickness"],
        t1_img,
        np.eye(4),
        "anat",
        "T1w",
        desc="thickness",
        sources=[inputs.t1w],
        meta={"Units": "mm", "Description": "cortical thickness, Laplace/Eulerian PDE (GM)"},
    )


def _check_inputs(inp, cfg: MetricsConfig, *, skip: tuple = ()) -> None:
    """Fail fast (before any registration) on a corrupt or truncated image.

    Files in ``skip`` were already read and validated (the shared references).
    """
    for path, ndim in (
        (inp.t1w, 3),
        (inp.bold, 4),
        (inp.dwi, 4),
        (inp.asl, (3, 4)),
        (inp.m0, (3, 4)),
    ):
        if path is not None and path not in skip:
            load_image(path, ndim=ndim)


def _own_anatomy(inputs, cfg: MetricsConfig, out_dir: Path, atlas):
    """Build and write the subject anatomy when the caller did not pass one."""
    from isyb_dask.anat.derivatives import write_anatomy
    from isyb_dask.anat.reference import build_anatomy
    from isyb_dask.qc.config import QCConfig

    qc = QCConfig(seed=cfg.seed, threads=cfg.threads)
    anatomy = build_anatomy(inputs.t1w, inputs.subject, atlas, qc, threads=cfg.threads)
    write_anatomy(anatomy, out_dir)
    return anatomy


_MODALITIES = (
    ("bold", "BOLD run", ("ALFF", "fALFF", "ReHo", "VMHC"), bold_metrics),
    ("dwi", "DWI", ("FA_WM", "MD_WM", "FA_GM", "MD_GM"), dwi_metrics),
    ("asl", "ASL", ("CBF",), asl_metrics),
)
#: modality -> (label, its surface metrics), for reasons given outside this stage.
MODALITY_METRICS = {attr: (label, metrics) for attr, label, metrics, _ in _MODALITIES}


def run_metrics(
    inputs,
    cfg: MetricsConfig,
    out_dir,
    atlas,
    *,
    surf: FsLR32k | None = None,
    anatomy=None,
    bold_ref=None,
) -> dict:
    """Compute and write one subject's surface metrics.

    Parameters
    ----------
    inputs
        :class:`isyb_dask.io.bids.SubjectInputs`.
    cfg
        Metric settings.
    out_dir
        Derivatives root.
    atlas
        :class:`isyb_dask.atlas.ReferenceAtlas`.
    surf
        fsLR 32k surfaces (default :func:`load_fslr32k`).
    anatomy
        The subject's :class:`isyb_dask.anat.reference.SubjectAnatomy` (template registration,
        brain mask, GM/WM/CSF posteriors shared with the QC); built (and its derivatives
        written) here when None.
    bold_ref
        The BOLD run's :class:`isyb_dask.bold.reference.BoldReference` (motion, mask, mean
        shared with the QC), or the exception its construction raised (the BOLD metrics are
        then missing with that reason); built here when None.

    Returns
    -------
    dict
        ``{"values": float32 (13, 64984), "missing": {metric: reason}, "info": {...},
        "provenance": {metric: how it was computed when that is worth recording}}`` (values
        in the order of :data:`SURFACE_METRICS`). A provenance starting with ``"fallback:"``
        (GMV from the atlas GM prior) marks a value the group step leaves out by default.

    Raises
    ------
    InputError
        For a corrupt input image (named in the message).
    RegistrationError
        If the T1w cannot be registered to MNI space.
    """
    surf = surf if surf is not None else load_fslr32k()
    out_dir = Path(out_dir)
    subject = inputs.subject
    values = np.full((len(SURFACE_METRICS), N_VERTICES), np.nan, dtype=np.float32)
    found: dict[str, np.ndarray] = {}
    missing: dict[str, str] = {}
    info: dict[str, Any] = {}
    sources: dict[str, list] = {}
    provenance: dict[str, str] = {}

    skip = tuple(p for p, ref in ((inputs.t1w, anatomy), (inputs.bold, bold_ref))
                 if ref is not None)
    _check_inputs(inputs, cfg, skip=skip)
    struct, miss, src = read_structural_metrics(
        cfg.surface_derivatives, subject, surf=surf, session=inputs.session
    )
    found.update(struct)
    missing.update(miss)
    sources.update(src)

    if inputs.t1w is None:
        for _, _, metrics, _ in _MODALITIES:
            for m in metrics:
                missing[m] = "no T1w image (needed for the registration to MNI)"
        missing["GMV"] = "no T1w image"
    else:
        if anatomy is None:
            anatomy = _own_anatomy(inputs, cfg, out_dir, atlas)
        t1_img = anatomy.canonical
        chain = chain_from_anatomy(anatomy, atlas)
        if getattr(anatomy, "surfaces", None) is not None:
            # sample through the subject's own refined surfaces in T1w space (issue 11)
            from isyb_dask.anat.placement import subject_fslr

            surf = subject_fslr(surf, anatomy.surfaces)
            chain = dataclasses.replace(chain, t1w_to_sampling=np.eye(4))
            info["sampling_surfaces"] = "subject (fsLR 32k placed in T1w space and refined)"
        else:
            info["sampling_surfaces"] = "fsLR 32k in MNI through the T1w->MNI affine"
        info["t1w_to_mni_metric"] = chain.checks.get("metric")
        info["t1w_to_mni_jacobian"] = float(np.linalg.det(chain.t1w_to_mni[:3, :3]))
        writer = VolumeWriter(out_dir, subject, cfg, atlas, inputs.session,
                              t1w_to_mni=chain.t1w_to_mni,
                              standard=getattr(anatomy, "standard", None))
        try:
            gm = np.asarray(anatomy.posteriors["gm"], dtype=np.float32)
            ginfo = {"source": "GM posterior of the subject anatomy's 3-class segmentation "
                     "(the QC's)"}
            info["gm_source"] = ginfo["source"]
            provenance["GMV"] = ginfo["source"]
            found["GMV"] = gmv_mod.gmv_surface(
                gmv_mod.modulated_gm(gm, chain.t1w_to_mni) if chain.t1w_to_sampling is not None
                else gm,
                t1_img.affine,
                chain.sampling_affine,
                brain=chain.brain,
                depths=cfg.gm_depths,
                surf=surf,
            )
            sources["GMV"] = [inputs.t1w]
            writer.write(
                gm,
                t1_img,
                np.eye(4),
                "anat",
                "probseg",
                desc=None,
                label="GM",
                sources=[inputs.t1w],
                meta={"Label": "GM", "Source": ginfo["source"]},
                native=False,  # label-GM_probseg is the anatomy's (io.outputs)
            )
            writer.write(
                gm,
                t1_img,
                np.eye(4),
                "anat",
                "probseg",
                desc="modulated",
                label="GM",
                sources=[inputs.t1w],
                meta={"Label": "GM", "Units": "mm3 GM per mm3 MNI"},
                native_data=gmv_mod.modulated_gm(gm, chain.t1w_to_mni),
                modulate=True,
            )
        except _FAILURES as exc:
            missing["GMV"] = f"failed: {type(exc).__name__}: {exc}"
        else:
            _morphometry(ginfo, t1_img, chain, surf, writer, inputs, found, missing, sources, info,
                         anatomy=anatomy, compute=cfg.morphometry)
        for attr, label, metrics, fn in _MODALITIES:
            if getattr(inputs, attr) is None:
                for m in metrics:
                    missing[m] = f"no {label}"
                continue
            try:
                extra = {"bold_ref": bold_ref, "anatomy": anatomy} if attr == "bold" else {}
                res = fn(inputs, cfg, chain, t1_img, surf, writer, **extra)
            except InputError as exc:  # readable file, unusable content or metadata
                for m in metrics:
                    missing[m] = f"{label} unusable: {exc}"
                continue
            except _FAILURES as exc:
                for m in metrics:
                    missing[m] = f"{label} failed: {type(exc).__name__}: {exc}"
                continue
            found.update(res["values"])
            info.update(res["info"])
            if res["info"].get("vmhc_flat_vertices"):
                provenance["VMHC"] = (f"{res['info']['vmhc_flat_vertices']} homotopic vertex "
                                      "pairs with a flat series: NaN (missing), not 0")
            for m in metrics:
                sources[m] = [getattr(inputs, attr)]

    for i, metric in enumerate(SURFACE_METRICS):
        if metric in found:
            vals = np.asarray(found[metric], dtype=np.float32)
            vals[~surf.cortex] = np.nan
            if not np.isfinite(vals).any():
                missing[metric] = "no vertex could be sampled (no overlap with the cortex)"
                continue
            values[i] = vals
            missing.pop(metric, None)
            if cfg.write_gifti:
                write_surface_metric(
                    vals,
                    out_dir,
                    subject,
                    metric,
                    sources=sources.get(metric, ()),
                    settings={
                        "depths_gm": cfg.gm_depths,
                        "depths_wm": cfg.wm_depths,
                        **({"provenance": info["surface_provenance"][metric]}
                           if metric in info.get("surface_provenance", {}) else {}),
                    },
                    session=inputs.session,
                )
    return {"values": values, "missing": missing, "info": info,
            "provenance": {m: provenance[m] for m in provenance if m not in missing}}
