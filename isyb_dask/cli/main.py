"""``isyb`` command line: synth, run, demo, template build, query.

The ``run`` command follows the BIDS-App shape used by MRIQC::

    isyb run BIDS_DIR OUT_DIR [participant] [group] [--participant-label ...] [--config FILE]
        [--workers N] [--threads-per-worker N] [--memory-limit SIZE] [--template NAME=HEAD[:MASK]]
        [--cluster {local,slurm,pbs,sge,lsf}] [--jobs N | --adapt MIN:MAX] [--tls]

Flags accept dashes or underscores (``--participant_label``). Errors in the command line or
the dataset (not BIDS, unknown label, output inside input) stop with exit code 2 and one line.
Exit codes of ``run``: 0 every subject ``ok``; 1 a subject ``failed`` or a group step failed;
3 no failure but some subjects ``partial``; 4 a task raised an internal error (a bug).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from isyb_dask import __version__
from isyb_dask.errors import IsybError

__all__ = ["main", "build_parser"]


def _add_run_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("selection")
    g.add_argument("--participant-label", "--participant_label", nargs="+", metavar="LABEL",
                   help="subjects to process (with or without the sub- prefix)")
    g = p.add_argument_group("configuration")
    g.add_argument("--config", type=Path, help="YAML configuration file (see configs/)")
    g.add_argument("--template", action="append", default=[], metavar="NAME=HEAD[:FACEMASK]",
                   help="extra head template, repeatable (the built-in pydeface template is always used)")
    g.add_argument("--template-config", "--template_config", type=Path,
                   help="YAML list of templates (format of configs/templates.yaml)")
    g.add_argument("--deface-method", "--deface_method", choices=("maskface", "zero", "reface"))
    g.add_argument("--keep-removed-face", "--keep_removed_face", action="store_true", default=None,
                   help="also write original minus defaced (face-bearing; file mode 0600)")
    g.add_argument("--cache-dir", "--cache_dir", type=Path, help="reference atlas cache")
    g.add_argument("--surface-derivatives", "--surface_derivatives", type=Path,
                   help="FreeSurfer/ciftify derivatives with CT, SA and LGI on fsLR 32k")
    g = p.add_argument_group("performance (Dask cluster)")
    g.add_argument("--cluster", choices=("local", "slurm", "pbs", "sge", "lsf"), default="local")
    g.add_argument("--workers", type=int, help="LocalCluster worker processes (default: cores)")
    g.add_argument("--threads-per-worker", "--threads_per_worker", type=int,
                   help="threads per worker and per task (default 1; batch kinds: jobqueue.yaml)")
    g.add_argument("--memory-limit", "--memory_limit",
                   help="per worker, e.g. 4GB (default: share of the machine; batch kinds: jobqueue.yaml)")
    g.add_argument("--jobs", type=int, help="batch jobs to start (jobqueue clusters)")
    g.add_argument("--adapt", metavar="MIN:MAX", help="adaptive number of jobs (jobqueue clusters)")
    g.add_argument("--tls", action="store_true", help="TLS between client, scheduler and workers")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``isyb`` command."""
    parser = argparse.ArgumentParser(prog="isyb", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"isyb-dask {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="generate an ISYB-like BIDS study with ground truth")
    p.add_argument("out_dir", type=Path)
    p.add_argument("--subjects", type=int, default=8)
    p.add_argument("--population", choices=("chinese", "western"), default="chinese")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--voxel-size", "--voxel_size", type=float, default=2.0, help="T1w voxel size in mm")
    p.add_argument("--first-index", "--first_index", type=int, default=1, help="label of the first subject")
    p.add_argument("--snr", type=float, help="T1w signal-to-noise ratio (default: the generator's)")
    p.add_argument("--modalities", nargs="+", choices=("anat", "func", "dwi", "perf"),
                   default=("anat", "func", "dwi", "perf"))
    p.add_argument("--bold-volumes", "--bold_volumes", type=int, help="BOLD length (default 80)")
    p.add_argument("--orientation", help="storage orientation of every image, e.g. LAS, LIA")

    p = sub.add_parser("run", help="run the pipeline on a BIDS dataset (BIDS-App)")
    p.add_argument("bids_dir", type=Path)
    p.add_argument("out_dir", type=Path)
    p.add_argument("analysis_level", nargs="*", metavar="{participant,group}",
                   help="participant and/or group (default: both)")
    _add_run_options(p)

    p = sub.add_parser("demo", help="generate the demo study, build its templates and run everything")
    p.add_argument("out_dir", type=Path, nargs="?", default=Path("demo_output"))
    p.add_argument("--subjects", type=int, default=8)
    p.add_argument("--seed", type=int, default=2022)
    p.add_argument("--workers", type=int)

    p = sub.add_parser("template", help="head templates")
    tsub = p.add_subparsers(dest="template_command", required=True)
    b = tsub.add_parser("build", help="build a population-matched head template from a cohort")
    b.add_argument("bids_dir", type=Path)
    b.add_argument("out_prefix", type=Path)
    b.add_argument("--participant-label", "--participant_label", nargs="+")
    b.add_argument("--iterations", type=int, default=3)
    b.add_argument("--nonlinear", action="store_true", help="add a non-linear refinement")
    b.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("audit", help="face audit of images defaced by any tool (detection, re-identification)")
    p.add_argument("bids_dir", type=Path, help="BIDS dataset with the original T1w images")
    p.add_argument("defaced_dir", type=Path, help="folder with defaced images named with sub-<label>")
    p.add_argument("--out", type=Path, help="per-image TSV (the summary goes to <stem>_summary.tsv)")

    p = sub.add_parser("query", help="print a selection of the results store")
    p.add_argument("out_dir", type=Path)
    p.add_argument("--group")
    p.add_argument("--subject", nargs="+", default=())
    p.add_argument("--template", nargs="+", default=())
    p.add_argument("--metric", nargs="+", default=())
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p.add_argument("--failures", action="store_true",
                   help="list every failed/partial/excluded subject, repair, fallback value "
                        "and statistical drop with its reason")
    return parser


def _cluster_spec(args: argparse.Namespace):
    from isyb_dask.pipeline.cluster import ClusterSpec, parse_adapt

    adapt = parse_adapt(args.adapt) if args.adapt else None
    return ClusterSpec(
        kind=args.cluster,
        workers=args.workers,
        threads_per_worker=args.threads_per_worker,
        memory_limit=args.memory_limit,
        jobs=args.jobs,
        adapt=adapt,
        tls=args.tls,
    )


def _run(args: argparse.Namespace) -> int:
    from isyb_dask.config import load_config
    from isyb_dask.pipeline.runner import run_pipeline

    cfg = load_config(
        args.config,
        deface__method=args.deface_method,
        deface__keep_removed_face=args.keep_removed_face,
        metrics__surface_derivatives=str(args.surface_derivatives) if args.surface_derivatives else None,
        cache_dir=str(args.cache_dir) if args.cache_dir else None,
        task_threads=args.threads_per_worker or 1,
    )
    if args.template:
        cfg = cfg.replace(templates=tuple(cfg.templates) + tuple(args.template))
    if args.template_config:
        cfg = cfg.replace(template_config=str(args.template_config))
    levels = tuple(args.analysis_level) or ("participant", "group")
    bad = [lvl for lvl in levels if lvl not in ("participant", "group")]
    if bad:
        raise IsybError(f"analysis level must be 'participant' and/or 'group', got {bad}")
    summary = run_pipeline(
        args.bids_dir,
        args.out_dir,
        cfg,
        levels=levels,
        participant_labels=args.participant_label,
        cluster=_cluster_spec(args),
    )
    if summary.failed:
        print(f"[isyb] {len(summary.failed)} subject(s) failed: {', '.join(summary.failed)} "
              f"(see {args.out_dir}/logs/ and the 'participants' group)", flush=True)
    if summary.partial:
        print(f"[isyb] {len(summary.partial)} subject(s) with partial results: "
              f"{', '.join(summary.partial)} (isyb query {args.out_dir} --failures)", flush=True)
    for err in summary.group_errors:
        print(f"[isyb] group step failed: {err}", flush=True)
    return summary.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``isyb`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "synth":
            from isyb_dask.synth.cohort import generate_study

            generate_study(args.out_dir, args.subjects, args.population, args.seed, args.voxel_size,
                           first_index=args.first_index, snr=args.snr,
                           modalities=tuple(args.modalities), bold_volumes=args.bold_volumes,
                           orientation=args.orientation)
            print(f"[isyb] wrote {args.subjects} {args.population} subjects to {args.out_dir}")
            return 0
        if args.command == "run":
            return _run(args)
        if args.command == "demo":
            from isyb_dask.pipeline.demo import run_demo

            return run_demo(args.out_dir, n_subjects=args.subjects, seed=args.seed, workers=args.workers)
        if args.command == "template":
            from isyb_dask.deface.builder import build_template_from_bids

            tpl = build_template_from_bids(args.bids_dir, args.out_prefix,
                                           participant_labels=args.participant_label,
                                           iterations=args.iterations, seed=args.seed,
                                           nonlinear=args.nonlinear)
            print(f"[isyb] template {tpl.name}: {tpl.head}")
            return 0
        if args.command == "audit":
            from isyb_dask.deface.audit_cli import format_summary, run_audit

            table, summary = run_audit(args.bids_dir, args.defaced_dir, args.out)
            print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
            print(format_summary(summary))
            return 0
        if args.command == "query":
            from isyb_dask.query import run_query

            print(run_query(args.out_dir, group=args.group, subjects=args.subject,
                            templates=args.template, metrics=args.metric, fmt=args.format,
                            failures=args.failures))
            return 0
    except IsybError as exc:
        print(f"isyb: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
