"""Validate one subject's inputs before any stage runs (the BIDS and modality checks).

:func:`validate_subject` loads every image a configured stage will use through
:func:`isyb_dask.io.nifti.load_image` (so each fault is named the same way everywhere) and
checks the companions of each modality:

* **T1w** (any stage but ``qc_func``): a readable 3-D image (a 4-D file with one volume is
  accepted), then a head in the field of view. A T1w fault fails the subject.
* **BOLD** (``qc_func`` or ``metrics``): 4-D, ``RepetitionTime`` in the sidecar, and at
  least as many volumes as the stages need: ``metrics`` needs ``dummy_volumes + 10`` (the
  24-parameter nuisance model with spike regressors needs >= 8 volumes left after the
  dummies, see :func:`isyb_dask.metrics.func_preproc.preprocess_bold`), ``qc_func`` needs
  :data:`isyb_dask.qc.func_stage.MIN_VOLUMES`.
* **DWI** (``metrics``): 4-D; ``.bval`` and ``.bvec`` present, one b-value and one b-vector
  per volume.
* **ASL** (``metrics``): 3-D or 4-D; ``aslcontext.tsv`` present with one row per volume; the
  M0 scan, if any, readable.

A fault in another modality leaves the T1w results standing: the subject ends ``partial``
(see :mod:`isyb_dask.outcome`). Messages start with the file relative to the BIDS root.
"""

from __future__ import annotations

from typing import Any

from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from isyb_dask.errors import IsybError, InputError
from isyb_dask.io.bids import SubjectInputs
from isyb_dask.io.image_checks import display_name
from isyb_dask.io.nifti import check_head_in_view, load_image

__all__ = [
    "InputReport",
    "MODALITY_STAGES",
    "bold_min_volumes",
    "repair_provenance",
    "validate_subject",
]

#: Which stages read each modality.
MODALITY_STAGES: dict[str, tuple[str, ...]] = {
    "t1w": ("deface", "qc_anat", "metrics"),
    "bold": ("qc_func", "metrics"),
    "dwi": ("metrics",),
    "asl": ("metrics",),
}


@dataclass
class InputReport:
    """Outcome of :func:`validate_subject`.

    Attributes
    ----------
    t1w_error
        Why the T1w cannot be used (None if it can, or if no configured stage reads it).
    modality_errors
        ``{"bold" | "dwi" | "asl": message}`` for each unusable modality.
    repairs
        ``{file: description}`` of images whose few non-finite voxels were repaired.
    """

    t1w_error: str | None = None
    modality_errors: dict[str, str] = field(default_factory=dict)
    #: ``{path: image}`` of the images read here, handed to the subject references so that
    #: each input is read (decompressed and checked) once per subject.
    images: dict[str, Any] = field(default_factory=dict)
    repairs: dict[str, str] = field(default_factory=dict)


def bold_min_volumes(stages: Collection[str], dummy_volumes: int) -> int:
    """Smallest BOLD length the configured stages can use."""
    from isyb_dask.qc.func_stage import MIN_VOLUMES

    need = MIN_VOLUMES if "qc_func" in stages else 0
    if "metrics" in stages:
        need = max(need, dummy_volumes + 10)
    return need


def _load(path: Path, report: InputReport, **kwargs):
    img = load_image(path, **kwargs)
    report.images[str(path)] = img
    rec = img.extra.get("isyb_repair")
    if rec:
        report.repairs[rec["file"]] = rec["description"]
    return img


def _n_volumes(img) -> int:
    return int(img.shape[3]) if len(img.shape) > 3 else 1


def _check_bold(inp: SubjectInputs, report: InputReport, min_volumes: int, why: str) -> None:
    name = display_name(inp.bold)
    img = _load(inp.bold, report, ndim=4)
    tr = (inp.bold_meta or {}).get("RepetitionTime")
    if tr is None:
        raise InputError(f"{name}: 'RepetitionTime' is missing from the BOLD sidecar")
    try:
        ok = np.isfinite(float(tr)) and float(tr) > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError(f"{name}: RepetitionTime {tr!r} is not a positive number")
    n = _n_volumes(img)
    if n < min_volumes:
        raise InputError(f"{name}: too short, {n} volumes; at least {min_volumes} are needed "
                         f"({why})")


def _check_dwi(inp: SubjectInputs, report: InputReport) -> None:
    name = display_name(inp.dwi)
    img = _load(inp.dwi, report, ndim=4)
    n = _n_volumes(img)
    for path, kind in ((inp.bval, ".bval"), (inp.bvec, ".bvec")):
        if path is None:
            raise InputError(f"{name}: no {kind} file")
    try:
        bvals = np.loadtxt(inp.bval, dtype=np.float64, ndmin=1).ravel()
        bvecs = np.loadtxt(inp.bvec, dtype=np.float64, ndmin=2)
    except (OSError, ValueError) as exc:
        raise InputError(f"{name}: unreadable .bval/.bvec ({exc})") from None
    if bvals.size != n:
        raise InputError(f"{display_name(inp.bval)}: {bvals.size} b-values for {n} volumes "
                         f"in {inp.dwi.name}")
    n_vec = bvecs.shape[1] if bvecs.shape[0] == 3 else bvecs.shape[0]
    if 3 not in bvecs.shape or n_vec != n:
        raise InputError(f"{display_name(inp.bvec)}: {n_vec} b-vectors (array {bvecs.shape}) "
                         f"for {n} volumes in {inp.dwi.name}")
    if not np.all(np.isfinite(bvals)):
        raise InputError(f"{display_name(inp.bval)}: non-finite b-values")


def _check_asl(inp: SubjectInputs, report: InputReport) -> None:
    from isyb_dask.metrics.cbf import read_aslcontext

    name = display_name(inp.asl)
    img = _load(inp.asl, report, ndim=(3, 4))
    n = _n_volumes(img)
    if inp.aslcontext is None:
        raise InputError(f"{name}: no aslcontext.tsv (the volume types are unknown)")
    types = read_aslcontext(inp.aslcontext)
    if len(types) != n:
        raise InputError(f"{display_name(inp.aslcontext)}: {len(types)} rows for {n} volumes "
                         f"in {inp.asl.name}")
    if inp.m0 is not None:
        _load(inp.m0, report, ndim=(3, 4))


def validate_subject(
    inp: SubjectInputs, stages: Collection[str], *, dummy_volumes: int = 5
) -> InputReport:
    """Check every input of a subject that one of ``stages`` reads.

    Parameters
    ----------
    inp
        The subject's inputs.
    stages
        Configured stages (``deface``, ``qc_anat``, ``qc_func``, ``metrics``).
    dummy_volumes
        BOLD volumes the metrics stage drops (``MetricsConfig.dummy_volumes``).

    Returns
    -------
    InputReport
        Faults by modality and repairs; nothing raises for bad data.
    """
    report = InputReport()
    why = (f"the nuisance model of the metrics stage: {dummy_volumes} dummy volumes dropped, "
           "then >= 10" if "metrics" in stages else "BOLD QC")
    if any(s in stages for s in MODALITY_STAGES["t1w"]):
        if inp.t1w is None:
            report.t1w_error = (f"{inp.subject}: no T1w image (expected "
                                f"{inp.subject}/anat/{inp.subject}_T1w.nii.gz)")
        else:
            try:
                img = _load(inp.t1w, report, ndim=3)
                check_head_in_view(img)
            except IsybError as exc:
                report.t1w_error = str(exc)
    checks = (
        ("bold", inp.bold, lambda: _check_bold(inp, report, bold_min_volumes(stages, dummy_volumes),
                                               why)),
        ("dwi", inp.dwi, lambda: _check_dwi(inp, report)),
        ("asl", inp.asl, lambda: _check_asl(inp, report)),
    )
    for modality, path, check in checks:
        if path is None or not any(s in stages for s in MODALITY_STAGES[modality]):
            continue
        try:
            check()
        except IsybError as exc:
            report.modality_errors[modality] = str(exc)
    return report


#: Surface metrics computed from each input file (for the provenance of repaired inputs).
_FILE_METRICS = {
    "t1w": ("GMV",),
    "bold": ("ALFF", "fALFF", "ReHo", "VMHC"),
    "dwi": ("FA_WM", "MD_WM", "FA_GM", "MD_GM"),
    "asl": ("CBF",),
    "m0": ("CBF",),
}


def repair_provenance(inp: SubjectInputs, repairs: dict[str, str]) -> dict[str, str]:
    """``{metric: "repaired input: ..."}`` for the metrics computed from a repaired file."""
    out: dict[str, str] = {}
    for attr, metrics in _FILE_METRICS.items():
        path = getattr(inp, attr)
        text = repairs.get(display_name(path)) if path is not None else None
        if text:
            for metric in metrics:
                out[metric] = "; ".join(filter(None, [out.get(metric), f"repaired input: {text}"]))
    return out
