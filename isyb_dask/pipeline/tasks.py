"""The per-subject task: run every participant-level stage, persist, write the store region.

One Dask task per subject receives a :class:`~isyb_dask.io.bids.SubjectInputs` (paths and
small metadata), the run configuration and output locations, never image arrays. It

1. runs the stages in order (deface -> qc_anat -> qc_func -> metrics); a stage that fails
   records its error and the others still run where they can;
2. writes a per-subject result artefact ``sub-X/sub-X_desc-isyb_results.json`` (+ the surface
   values ``sub-X/sub-X_desc-surface_values.npy``) next to the BIDS derivatives: the store can
   always be rebuilt from these, and their presence with matching input checksums and config
   hash is what makes a re-run skip the subject;
3. writes its own region of every per-subject group of ``results.zarr``.

Expected problems (:class:`~isyb_dask.errors.IsybError`) become one-line messages and the
numerical errors bad data can cause (:data:`isyb_dask.outcome.DATA_ERRORS`) become
``"<stage>: <Type>: <message>"``, with the traceback in the subject's log; the subject ends
``ok``, ``partial`` or ``failed`` (:func:`isyb_dask.outcome.subject_outcome`). Any other
exception (``TypeError``, ``AttributeError``... a bug) is logged and re-raised: the task
fails and Dask reports it, nothing is recorded as a result.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from isyb_dask import __version__
from isyb_dask.config import RunConfig
from isyb_dask.errors import IsybError, RegistrationError
from isyb_dask.io.bids import SubjectInputs, missing_metadata
from isyb_dask.io.derivatives import write_json
from isyb_dask.io.jsonable import jsonable
from isyb_dask.io.nifti import file_sha256
from isyb_dask.io.validate import repair_provenance, validate_subject
from isyb_dask.outcome import DATA_ERRORS, subject_outcome
from isyb_dask.pipeline.store_writes import store_result, surface_values_path

__all__ = ["SubjectJob", "process_subject", "result_path", "load_result", "is_complete", "store_result"]

RESULT_SCHEMA = "1"


@dataclass(frozen=True)
class SubjectJob:
    """What one subject task needs: inputs, configuration and where to write."""

    inputs: SubjectInputs
    config: RunConfig
    out_dir: Path
    store_path: Path
    templates: tuple[Any, ...]
    atlas: Any
    config_digest: str


def result_path(out_dir: Path, subject: str) -> Path:
    """Path of a subject's result artefact."""
    return Path(out_dir) / subject / f"{subject}_desc-isyb_results.json"


def load_result(out_dir: Path, subject: str) -> dict[str, Any] | None:
    """The subject's result artefact, or None if absent or unreadable."""
    path = result_path(out_dir, subject)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def input_checksums(inputs: SubjectInputs) -> dict[str, str]:
    """SHA-256 of every input file of the subject (keys are file names)."""
    return {p.name: file_sha256(p) for p in inputs.input_files()}


def is_complete(out_dir: Path, inputs: SubjectInputs, config_digest: str) -> bool:
    """True if the subject finished before with the same inputs, config and software."""
    result = load_result(out_dir, inputs.subject)
    if result is None or result.get("schema") != RESULT_SCHEMA:
        return False
    if result.get("config_digest") != config_digest or result.get("version") != __version__:
        return False
    if result.get("inputs") != input_checksums(inputs):
        return False
    if "value" in result.get("stores", {}) and not surface_values_path(out_dir, inputs.subject).exists():
        return False
    return True


def _subject_logger(out_dir: Path, subject: str) -> tuple[logging.Logger, logging.Handler]:
    log_dir = Path(out_dir) / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(f"isyb.subject.{subject}.{os.getpid()}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handler = logging.FileHandler(log_dir / f"{subject}.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    return logger, handler


def _message(stage: str, exc: BaseException) -> str:
    if isinstance(exc, IsybError):
        return f"{stage}: {exc}"
    return f"{stage}: {type(exc).__name__}: {exc}"


def _with_threads(section: Any, threads: int) -> Any:
    """A stage config with its ``threads`` set to the task's share of the worker."""
    if any(f.name == "threads" for f in dataclasses.fields(section)):
        return dataclasses.replace(section, threads=threads)
    return section


def _anatomy(inp: SubjectInputs, cfg: RunConfig, job: SubjectJob, threads: int, image=None):
    """Build the subject's anatomical reference and write its derivatives (once)."""
    from isyb_dask.anat.derivatives import write_anatomy
    from isyb_dask.anat.reference import build_anatomy

    from isyb_dask.deface.templates import grid_head_for

    anatomy = build_anatomy(inp.t1w, inp.subject, job.atlas, cfg, threads=threads, image=image,
                            atlas_grid_head=grid_head_for(job.templates, job.atlas.head))
    write_anatomy(anatomy, job.out_dir,
                  settings={"qc": dataclasses.asdict(cfg.qc), "registration_seed": cfg.deface.seed})
    if "metrics" in cfg.stages:
        # non-linear normalisation + subject surfaces: what every vertex-wise metric samples
        # through (deface and the QC do not need them)
        from isyb_dask.anat.placement import attach_standard_space

        attach_standard_space(anatomy, job.out_dir, seed=cfg.deface.seed, threads=threads,
                              cache_dir=cfg.cache_dir, atlas=job.atlas)
    return anatomy


def _run_stages(job: SubjectJob, logger: logging.Logger) -> dict[str, Any]:
    """Run the configured stages; return the result dict (errors included).

    The subject's references come first, once: the anatomy (T1w read, validated and hashed
    once; template registration, N4, masks, segmentation: :mod:`isyb_dask.anat.reference`)
    and the BOLD reference (read once, motion, mean, mask, FD: :mod:`isyb_dask.bold.reference`).
    Every stage receives them instead of recomputing. If the T1w is missing or unreadable the
    subject fails with that one message, and only the stages that do not need it (BOLD QC)
    still run.
    """
    run_cfg = job.config
    threads = run_cfg.task_threads
    cfg = dataclasses.replace(
        run_cfg,
        deface=_with_threads(run_cfg.deface, threads),
        qc=_with_threads(run_cfg.qc, threads),
        metrics=_with_threads(run_cfg.metrics, threads),
    )
    inp = job.inputs
    result: dict[str, Any] = {"errors": {}, "timings": {}, "notes": []}
    problems = missing_metadata(inp)
    # Every input a configured stage reads is validated once, up front (isyb_dask.io.validate):
    # a T1w fault fails the subject; a fault of another modality skips that modality only.
    report = validate_subject(inp, cfg.stages, dummy_volumes=cfg.metrics.dummy_volumes)
    t1w_ok = report.t1w_error is None and inp.t1w is not None
    if report.t1w_error is not None:
        result["errors"]["inputs"] = report.t1w_error
    for modality, msg in report.modality_errors.items():
        result["errors"][f"inputs:{modality}"] = msg
    if report.repairs:
        result["repairs"] = dict(report.repairs)
    usable = dataclasses.replace(inp, **{m: None for m in report.modality_errors})
    for problem in problems:
        result["notes"].append(problem)
        logger.warning(problem)

    def timed(name: str, fn, *args, **kwargs):
        """Run one step; on failure record its error and return the exception."""
        t0 = time.perf_counter()
        logger.info("start %s", name)
        try:
            out = fn(*args, **kwargs)
        except DATA_ERRORS as exc:  # bad data: recorded per step; other stages go on
            logger.error("%s failed: %s\n%s", name, exc, traceback.format_exc())
            out = exc
        except Exception:  # a programming error: logged, then fails the task loudly
            logger.error("%s raised an internal error\n%s", name, traceback.format_exc())
            raise
        result["timings"][name] = round(time.perf_counter() - t0, 3)
        logger.info("end %s (%.1f s)", name, result["timings"][name])
        return out

    def stage(name: str, fn, *args, **kwargs):
        if name not in cfg.stages:
            return None
        out = timed(name, fn, *args, **kwargs)
        if isinstance(out, Exception):
            result["errors"][name] = _message(name, out)
            return None
        return out

    # The subject's references, computed once and handed to every stage (issue 11).
    anatomy = None
    if t1w_ok and {"deface", "qc_anat", "metrics"} & set(cfg.stages):
        out = timed("anatomy", _anatomy, inp, cfg, job, threads,
                    image=report.images.get(str(inp.t1w)))
        from isyb_dask.anat.reference import AnatomyError

        if isinstance(out, IsybError) and not isinstance(out, (RegistrationError, AnatomyError)):
            result["errors"]["inputs"] = str(out)  # unreadable / no head: nothing T1w runs
            t1w_ok = False
        elif isinstance(out, Exception):
            result["errors"]["anatomy"] = _message("anatomy", out)
        else:
            anatomy = out
    bold_ref: Any = None
    if usable.bold is not None and {"qc_func", "metrics"} & set(cfg.stages):
        from isyb_dask.bold.reference import build_bold_reference

        bold_ref = timed("bold_reference", build_bold_reference, inp.bold, inp.bold_meta, cfg.qc,
                         threads=threads, image=report.images.get(str(inp.bold)))
    face_masks: list[Path] = []

    if "deface" in cfg.stages and t1w_ok:
        from isyb_dask.deface.stage import run_deface

        out = stage("deface", run_deface, inp.t1w, inp.subject, list(job.templates), cfg.deface,
                    job.out_dir, job.atlas, anatomy=anatomy)
        if out is not None:
            result["deface"] = out.get("templates", {})
            face_masks = [Path(p) for p in out.get("face_masks", {}).values()]
            if out.get("audit_note"):  # audit off, its extra missing or no face on the original
                result["notes"].append(str(out["audit_note"]))
                logger.warning("%s", out["audit_note"])
            from isyb_dask.deface.truth import add_truth_metrics  # generated data only

            t_truth = time.perf_counter()
            try:
                if add_truth_metrics(result["deface"], inp.t1w, inp.subject, job.out_dir,
                                     original_image=getattr(anatomy, "image", None)):
                    result["timings"]["deface_truth"] = round(time.perf_counter() - t_truth, 3)
                    logger.info("deface truth scores (%.1f s)", result["timings"]["deface_truth"])
            except (OSError, ValueError) as exc:  # scoring must not fail the subject
                result["notes"].append(f"deface truth metrics: {exc}")
    if "qc_anat" in cfg.stages and t1w_ok and anatomy is not None:
        from isyb_dask.qc.anat_stage import run_qc_anat

        anat_info: dict[str, Any] = {}
        out = stage("qc_anat", run_qc_anat, inp.t1w, inp.subject, cfg.qc, job.out_dir, job.atlas,
                    exclude_masks=face_masks, anatomy=anatomy, info_out=anat_info)
        if out is not None:
            result["qc_anat"] = out
            result["qc_anat_route"] = anat_info.get("harmonization_route", "")
    if "qc_func" in cfg.stages and usable.bold is not None:
        if isinstance(bold_ref, Exception):
            result["errors"]["qc_func"] = _message("qc_func", bold_ref)
        else:
            from isyb_dask.qc.func_stage import run_qc_func

            out = stage("qc_func", run_qc_func, inp.bold, inp.bold_meta, inp.subject, cfg.qc,
                        job.out_dir, bold_ref=bold_ref)
            if out is not None:
                result["qc_func"] = out
    if "metrics" in cfg.stages and t1w_ok and anatomy is not None:
        from isyb_dask.metrics.stage import run_metrics

        out = stage("metrics", run_metrics, usable, cfg.metrics, job.out_dir, job.atlas,
                    anatomy=anatomy, bold_ref=bold_ref)
        if out is not None:
            _explain_skipped(out, report.modality_errors)
            values = np.asarray(out["values"], dtype=np.float32)
            path = surface_values_path(job.out_dir, inp.subject)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
            with open(tmp, "wb") as fh:
                np.save(fh, values)
            os.replace(tmp, path)
            write_json(path.with_suffix(".json"), {
                "Description": "Surface values of the subject (metric x vertex, float32), "
                               "the source of its region of results.zarr",
                "Metrics": list(_surface_metrics()),
                "Shape": list(values.shape),
            })
            result["surface_missing"] = dict(out.get("missing", {}))
            result["metrics_info"] = dict(out.get("info", {}))
            prov = dict(out.get("provenance", {}))
            for metric, text in repair_provenance(inp, report.repairs).items():
                if metric not in result["surface_missing"]:
                    prov[metric] = "; ".join(filter(None, [prov.get(metric), text]))
            result["surface_provenance"] = prov
            result["stores"] = {"value": path.name}
    return result


def _explain_skipped(out: dict[str, Any], modality_errors: dict[str, str]) -> None:
    """Missing reason of the metrics of a modality that validation refused."""
    from isyb_dask.metrics.stage import MODALITY_METRICS

    for modality, msg in modality_errors.items():
        label, metrics = MODALITY_METRICS[modality]
        for metric in metrics:
            out.setdefault("missing", {})[metric] = f"{label} unusable: {msg}"


def process_subject(job: SubjectJob) -> dict[str, Any]:
    """Dask task: process one subject end to end (see module docstring).

    Returns
    -------
    dict
        ``{"subject", "status", "error", "seconds"}`` for progress reporting.
    """
    from isyb_dask.pipeline.threads import limit_threads

    inp = job.inputs
    logger, handler = _subject_logger(job.out_dir, inp.subject)
    t0 = time.perf_counter()
    try:
        with limit_threads(job.config.task_threads):
            result = _run_stages(job, logger)
        try:
            checksums = input_checksums(inp)
        except OSError as exc:
            checksums = {}
            result["errors"]["inputs"] = f"inputs: {exc}"
        result.update(
            schema=RESULT_SCHEMA,
            subject=inp.subject,
            version=__version__,
            config_digest=job.config_digest,
            inputs=checksums,
            seconds=round(time.perf_counter() - t0, 3),
        )
        outcome = subject_outcome(result)
        result["status"] = outcome.status
        result["failed_stages"] = list(outcome.failed_stages)
        payload = jsonable(result)
        # Store region first, completion marker last: a kill in between leaves the subject
        # incomplete, so a re-run computes it again instead of skipping a missing region.
        store_result(
            job.store_path,
            job.out_dir,
            inp.subject,
            payload,
            templates=[t.name for t in job.templates],
            surface_metrics=_surface_metrics(),
        )
        write_json(result_path(job.out_dir, inp.subject), payload)
        logger.info("subject %s: %s in %.1f s", inp.subject, result["status"], result["seconds"])
        return {
            "subject": inp.subject,
            "status": result["status"],
            "error": outcome.error,
            "seconds": result["seconds"],
        }
    finally:
        logger.removeHandler(handler)
        handler.close()


def _surface_metrics() -> tuple[str, ...]:
    from isyb_dask.metrics.names import SURFACE_METRICS

    return tuple(SURFACE_METRICS)

