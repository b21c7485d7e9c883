"""Benchmark: the whole participant level of one 1 mm subject, this tree against a baseline.

The round's speed budget (issues 10-12): the participant level of one generated 1 mm subject
(``isyb synth --voxel-size 1 --bold-volumes 240``) on one worker with one thread took 146 s
with 2 templates before the round; with the non-linear normalisation, subject surfaces,
CT/SA/LGI, the face audit and 3 templates it must stay under 180 s.

Both runs use the same BIDS input (generated once by this tree) and are made in the same
process, one after the other:

* **baseline**: the ``--baseline`` commit (default ``d9ba879``, main before the round),
  checked out in a temporary ``git worktree``, with 2 templates (the built-in pydeface head
  plus FSL's MNI152 2 mm head with its defacing mask, from ``../shared/data``);
* **current**: the working tree with 3 templates (the same two plus SPM's avg152T1 head with
  its mask).

Each run is ``python -m isyb_dask.cli.main run BIDS OUT participant --workers 1
--threads-per-worker 1`` in a subprocess whose working directory is the code tree (so it
imports that tree's ``isyb_dask``). Wall time and the CPU time of the process tree
(``RUSAGE_CHILDREN``: the client, the scheduler and the worker) are reported; CPU time is the
figure to compare on a shared machine. Prints a Markdown table and the ratio current/baseline.

Usage::

    .venv/bin/python benchmarks/bench_participant.py [--baseline REV] [--skip-baseline]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ISYB_SHARED_DATA", ROOT.parent / "shared" / "data"))


def _templates(n: int) -> list[str]:
    """``--template`` arguments for ``n`` templates in all (the built-in one is the first)."""
    tdir = SHARED / "templates"
    extra = [
        f"MNI152FSL={tdir / 'mni152_fsl_T1_2mm_head.nii.gz'}:{tdir / 'mni152_2mm_defacemask_mydeface.nii.gz'}",
        f"SPM152={tdir / 'spm_avg152T1_2mm_head.nii.gz'}:{tdir / 'spm_avg152T1_2mm_defacemask.nii.gz'}",
    ]
    if not tdir.is_dir():
        from isyb_dask.atlas import builtin_head_paths

        head, _ = builtin_head_paths()
        extra = [f"Western{i}={head}" for i in (2, 3)]
    args: list[str] = []
    for spec in extra[: n - 1]:
        args += ["--template", spec]
    return args


def _run(code_dir: Path, bids: Path, out: Path, templates: list[str]) -> dict[str, float]:
    cmd = [sys.executable, "-m", "isyb_dask.cli.main", "run", str(bids), str(out), "participant",
           "--workers", "1", "--threads-per-worker", "1", *templates]
    env = dict(os.environ, OMP_NUM_THREADS="1", ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS="1",
               PYTHONPATH=str(code_dir))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=code_dir, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu, "code": proc.returncode, "tail": proc.stdout[-400:]}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print a Markdown table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", default="d9ba879")
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--baseline-templates", type=int, default=2, choices=(2, 3),
                    help="templates of the baseline run (2 = the round's start; 3 to time a "
                         "change between two trees of this round)")
    ap.add_argument("--keep", type=Path, help="keep the outputs in this folder")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="isyb-bench-participant-"))
    try:
        bids = tmp / "bids"
        subprocess.run([sys.executable, "-m", "isyb_dask.cli.main", "synth", str(bids),
                        "--subjects", "1", "--voxel-size", "1", "--bold-volumes", "240", "--seed", "3"],
                       cwd=ROOT, check=True, capture_output=True,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
        rows = []
        if not args.skip_baseline:
            wt = tmp / "baseline"
            subprocess.run(["git", "worktree", "add", "--detach", str(wt), args.baseline],
                           cwd=ROOT, check=True, capture_output=True)
            try:
                res = _run(wt, bids, tmp / "out-baseline", _templates(args.baseline_templates))
            finally:
                subprocess.run(["git", "worktree", "remove", "--force", str(wt)], cwd=ROOT,
                               capture_output=True)
            rows.append((f"baseline {args.baseline} ({args.baseline_templates} templates)", res))
        res = _run(ROOT, bids, tmp / "out-current", _templates(3))
        rows.append(("current tree (3 templates)", res))
        print(f"machine: {platform.processor() or platform.machine()}, nproc={os.cpu_count()}, "
              f"load={os.getloadavg()[0]:.1f}")
        print("| run | wall s | CPU s | exit |")
        print("|---|---|---|---|")
        for name, r in rows:
            print(f"| {name} | {r['wall']:.1f} | {r['cpu']:.1f} | {r['code']} |")
        if len(rows) == 2:
            print(f"ratio current/baseline: wall {rows[1][1]['wall'] / rows[0][1]['wall']:.2f}, "
                  f"CPU {rows[1][1]['cpu'] / rows[0][1]['cpu']:.2f} "
                  f"(budget: current <= 180 s where baseline took 146 s, i.e. <= 1.23x)")
        if args.keep:
            shutil.copytree(tmp, args.keep, dirs_exist_ok=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
