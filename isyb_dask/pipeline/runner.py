"""The BIDS-App runner: participant level (one Dask task per subject) and group level.

Data flow::

    BIDS_DIR --index_bids--> table --subject_inputs--> [SubjectInputs]   (client)
        --> init results.zarr (metadata only)                            (client)
        --> client.submit(process_subject, job) per subject              (workers)
              writes BIDS derivatives + sub-X result artefact + its store region
        --> consolidate metadata                                         (client)
    group: qc exclusion -> group maps -> statistics -> report            (client + Dask)

Resuming: a subject whose result artefact matches its input checksums, the configuration
hash and the software version is not recomputed; if the store had to be recreated its region
is refilled from the artefact. The final store equals that of an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from isyb_dask import __version__
from isyb_dask.config import RunConfig
from isyb_dask.io import store as results_store
from isyb_dask.io.bids import (
    check_output_dir,
    index_bids,
    participant_columns,
    select_participants,
    subject_inputs,
)
from isyb_dask.io.derivatives import write_dataset_description
from isyb_dask.pipeline.progress import Progress
from isyb_dask.pipeline.tasks import SubjectJob, is_complete, load_result, process_subject, store_result

__all__ = ["RunSummary", "run_pipeline", "run_participant_level", "run_group_level"]

#: How often a subject task is retried after its worker died (not after an error in the
#: subject's data: those are recorded, deterministic, and not retried).
TASK_RETRIES = 2


@dataclass
class RunSummary:
    """Outcome of a run; ``exit_code`` is 0 only if every subject and group step succeeded.

    ``failed`` holds failed subjects and those whose task raised an internal error (also in
    ``internal_errors``); ``partial`` the subjects with partial results.
    """

    total: int = 0
    processed: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)
    group_errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    partial: list[str] = field(default_factory=list)
    internal_errors: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 all ok; 1 a subject failed or a group step failed; 3 only partial results;
        4 a task raised an internal error (a bug; takes precedence)."""
        if self.internal_errors:
            return 4
        if self.failed or self.group_errors:
            return 1
        return 3 if self.partial else 0


def _bidsignore(out_dir: Path) -> None:
    path = out_dir / ".bidsignore"
    if not path.exists():
        path.write_text(
            "\n".join(
                ["logs/", "results.zarr/", "templates/", "figures/", "*.html", "*.tsv",
                 "*_desc-isyb_results.json", "*_desc-surface_values.npy"]
            )
            + "\n"
        )


def _participants_frame(table: pd.DataFrame, subjects: Sequence[str]) -> pd.DataFrame:
    cols = participant_columns(table)
    if not cols:
        return pd.DataFrame(index=list(subjects))
    return table.drop_duplicates("subject").set_index("subject")[cols].reindex(list(subjects))


def _store_layout() -> dict[str, Any]:
    from isyb_dask.metrics.fslr import N_VERTICES_HEMI
    from isyb_dask.metrics.names import SURFACE_METRICS
    from isyb_dask.qc.anat_iqms import ANAT_IQMS
    from isyb_dask.qc.func_stage import IQM_NAMES as FUNC_IQMS

    return {
        "anat_iqms": list(ANAT_IQMS),
        "func_iqms": list(FUNC_IQMS),
        "surface_metrics": list(SURFACE_METRICS),
        "hemi": ["L"] * N_VERTICES_HEMI + ["R"] * N_VERTICES_HEMI,
    }


def run_participant_level(
    bids_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    cfg: RunConfig,
    *,
    participant_labels: Sequence[str] | None = None,
    cluster: Any = None,
    progress: Progress | None = None,
    write: Callable[[str], None] | None = None,
) -> RunSummary:
    """Run every participant-level stage for the selected subjects.

    Parameters
    ----------
    bids_dir, out_dir
        Input BIDS dataset and output (derivatives) folder; the output may not be inside the
        input except under ``derivatives/``.
    cfg
        Run configuration.
    participant_labels
        Subset of subjects (``01`` or ``sub-01``); unknown labels are an error.
    cluster
        :class:`isyb_dask.pipeline.cluster.ClusterSpec`; default: a LocalCluster.
    """
    from isyb_dask.atlas import get_reference_atlas
    from isyb_dask.deface.templates import resolve_templates
    from isyb_dask.pipeline.cluster import ClusterSpec, open_client, task_resources

    t0 = time.monotonic()
    bids_dir = Path(bids_dir).resolve()
    out_dir = Path(out_dir).resolve()
    check_output_dir(bids_dir, out_dir)
    table = index_bids(bids_dir)
    subjects = select_participants(table, participant_labels)
    inputs = subject_inputs(table, subjects)
    out_dir.mkdir(parents=True, exist_ok=True)
    run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    log_dir = out_dir / "logs"
    log_dir.mkdir(exist_ok=True)
    (log_dir / f"config-{run_id}.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    source_desc = json.loads((bids_dir / "dataset_description.json").read_text() or "{}")
    write_dataset_description(out_dir, source_desc)
    _bidsignore(out_dir)

    prog = progress or Progress(total=len(subjects), write=write)
    prog.message(f"{len(subjects)} subjects in {bids_dir}; outputs in {out_dir}")
    atlas = get_reference_atlas(cfg.cache_dir)
    if "metrics" in cfg.stages:
        # the 2009aSym -> NLin6Asym bridge of the surface placement: built once per cache
        # (about a minute of CPU the first time), before the subject tasks need it
        from isyb_dask.anat.bridge import get_bridge

        get_bridge(cfg.cache_dir)
    from isyb_dask.atlas import default_cache_dir

    # carried-over template masks are kept in the cache too: registered once per cache
    templates = tuple(resolve_templates(
        list(cfg.templates), cfg.template_config, out_dir, atlas=atlas,
        cache_dir=cfg.cache_dir if cfg.cache_dir is not None else default_cache_dir()))
    template_names = [t.name for t in templates]
    prog.message("templates: " + ", ".join(template_names))
    digest = cfg.digest() + "-" + "-".join(sorted(template_names))

    store_path = out_dir / results_store.STORE_NAME
    layout = _store_layout()
    attrs = {
        "software": "isyb-dask",
        "version": __version__,
        "bids_dir": str(bids_dir),
        "config": json.dumps(cfg.to_dict()),
        "config_digest": digest,
        "templates": json.dumps(template_names),
        "run_id": run_id,
    }
    if not results_store.store_matches(store_path, subjects, template_names):
        results_store.init_store(
            store_path,
            subjects,
            templates=template_names,
            participants=_participants_frame(table, subjects),
            attrs=attrs,
            **layout,
        )
        refill = True
    else:
        refill = False

    todo: list[SubjectJob] = []
    skipped = 0
    for inp in inputs:
        if is_complete(out_dir, inp, digest):
            skipped += 1
            if refill:
                store_result(store_path, out_dir, inp.subject, load_result(out_dir, inp.subject) or {},
                             templates=template_names, surface_metrics=layout["surface_metrics"])
            continue
        todo.append(SubjectJob(inp, cfg, out_dir, store_path, templates, atlas, digest))
    prog.skipped = skipped
    summary = RunSummary(total=len(subjects), skipped=skipped)
    if skipped:
        prog.message(f"{skipped} subjects already complete (resuming); {len(todo)} to run")
        pending = {job.inputs.subject for job in todo}
        for inp in inputs:
            if inp.subject in pending:
                continue
            res = load_result(out_dir, inp.subject)
            if res and res.get("status") == "failed":
                summary.failed.append(inp.subject)
            elif res and res.get("status") == "partial":
                summary.partial.append(inp.subject)

    if todo:
        spec = cluster if cluster is not None else ClusterSpec()
        with open_client(spec, out_dir / "logs" / f"dask-{run_id}") as client:
            resources = task_resources("participant")
            futures = [
                client.submit(
                    process_subject,
                    job,
                    key=f"subject-{job.inputs.subject}-{run_id}",
                    retries=TASK_RETRIES,
                    resources=resources or None,
                    pure=False,
                )
                for job in todo
            ]
            by_key = {f.key: j for f, j in zip(futures, todo)}
            from distributed import as_completed

            for fut in as_completed(futures):
                job = by_key[fut.key]
                subject = job.inputs.subject
                try:
                    res = fut.result()
                    status, error = res["status"], res["error"]
                except Exception as exc:
                    if type(exc).__name__ == "KilledWorker":  # the worker died repeatedly
                        status = "failed"
                        error = f"task: {type(exc).__name__}: {exc}"
                    else:  # a programming error re-raised by the task: loud, never a result
                        status = "error"
                        error = (f"internal error (a bug; traceback in logs/{subject}.log): "
                                 f"{type(exc).__name__}: {exc}")
                        summary.internal_errors.append(subject)
                        prog.message(f"{subject}: INTERNAL ERROR\n"
                                     + "".join(traceback.format_exception(exc)))
                    results_store.write_subject(store_path, "participants", subject,
                                                {"status": status, "error": error,
                                                 "failed_stages": "task"})
                summary.processed += 1
                if status == "partial":
                    summary.partial.append(subject)
                elif status != "ok":
                    summary.failed.append(subject)
                prog.update(subject, status, error)
    results_store.consolidate(store_path)
    summary.seconds = time.monotonic() - t0
    n_ok = summary.total - len(summary.failed) - len(summary.partial)
    prog.message(
        f"participant level finished: {n_ok} ok, {len(summary.partial)} partial, "
        f"{len(summary.failed)} failed, {summary.skipped} resumed; store {store_path}"
    )
    return summary


def run_group_level(
    out_dir: str | os.PathLike[str],
    cfg: RunConfig,
    *,
    write: Callable[[str], None] | None = None,
) -> list[str]:
    """Group steps from the store alone: QC exclusion, group maps, statistics, report.

    Returns the list of group steps that failed (with their messages); a failing step does
    not stop the next ones.
    """
    from isyb_dask.group.maps import run_group_maps
    from isyb_dask.group.qc import run_qc_group
    from isyb_dask.report.html import write_report
    from isyb_dask.deface.reid import run_reid_audit
    from isyb_dask.stats.stage import run_stats

    out_dir = Path(out_dir).resolve()
    store_path = out_dir / results_store.STORE_NAME
    prog = Progress(total=0, write=write)
    if not store_path.exists():
        raise FileNotFoundError(f"{store_path}: no results store; run the participant level first")
    errors = []
    steps = [
        ("qc exclusion", lambda: run_qc_group(store_path, out_dir, cfg.qc)),
        ("group maps", lambda: run_group_maps(store_path, out_dir)),
        ("statistics", lambda: run_stats(store_path, out_dir, cfg.stats)),
        # after the statistics (it merges its deface_audit table into the stats group)
        ("re-identification", lambda: run_reid_audit(store_path, out_dir)),
    ]
    for name, fn in steps:
        t0 = time.monotonic()
        try:
            fn()
            prog.message(f"group step '{name}' done in {time.monotonic() - t0:.1f} s")
        except Exception as exc:
            msg = f"{name}: {type(exc).__name__}: {exc}"
            errors.append(msg)
            prog.message(f"group step FAILED: {msg}")
    results_store.consolidate(store_path)
    try:
        write_report(out_dir, store_path, cache_dir=cfg.cache_dir)
        prog.message(f"report: {out_dir / 'report.html'}")
    except Exception as exc:
        errors.append(f"report: {type(exc).__name__}: {exc}")
        prog.message(f"report FAILED: {exc}")
    return errors


def run_pipeline(
    bids_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    cfg: RunConfig,
    *,
    levels: Sequence[str] = ("participant", "group"),
    participant_labels: Sequence[str] | None = None,
    cluster: Any = None,
    write: Callable[[str], None] | None = None,
) -> RunSummary:
    """Run the requested analysis levels (BIDS-App ``participant`` and/or ``group``)."""
    summary = RunSummary()
    if "participant" in levels:
        summary = run_participant_level(
            bids_dir, out_dir, cfg, participant_labels=participant_labels, cluster=cluster, write=write
        )
    if "group" in levels:
        summary.group_errors = run_group_level(out_dir, cfg, write=write)
    return summary
