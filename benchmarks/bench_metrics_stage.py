"""Benchmark: CPU seconds of the metrics stage of one 1 mm subject, this tree vs a baseline.

The subject is ``isyb synth --subjects 1 --voxel-size 1 --bold-volumes 240 --seed 3``. Its
anatomical reference (registration, N4, segmentation, SyN, subject surfaces) and BOLD
reference (motion correction) are built once by this tree and pickled; they are not
timed (other benchmarks cover them). Then ``run_metrics`` runs on them in a child process
per code tree, one after the other in this run:

* **baseline**: the ``--baseline`` commit (default ``2e3e70b``, main before the metrics
  speed work), checked out in a temporary ``git worktree``;
* **current**: this working tree.

Each child reports the CPU seconds (``time.process_time``) of the whole stage and of its
CT step (the Laplace thickness, owned by ``metrics/thickness.py``, plus its sampling), and
saves the 13 x 64,984 surface values; the parent prints a Markdown table, the ratios, and
the largest difference of each metric between the two trees.

Usage::

    ISYB_SHARED_DATA=../shared/data .venv/bin/python benchmarks/bench_metrics_stage.py \\
        [--baseline REV] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _env(code_dir: Path) -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS="1",
                PYTHONPATH=str(code_dir))


def prepare(bids: Path, refs: Path) -> None:
    """Build the anatomy (with standard space) and the BOLD reference; pickle them."""
    from isyb_dask.anat.placement import attach_standard_space
    from isyb_dask.anat.reference import build_anatomy
    from isyb_dask.atlas import get_reference_atlas
    from isyb_dask.bold.reference import build_bold_reference
    from isyb_dask.config import RunConfig
    from isyb_dask.io.bids import index_bids, subject_inputs

    inp = subject_inputs(index_bids(bids), ["sub-0001"])[0]
    cfg = RunConfig()
    atlas = get_reference_atlas()
    anatomy = build_anatomy(inp.t1w, inp.subject, atlas, cfg, threads=1)
    attach_standard_space(anatomy, refs.parent / "prep-out", seed=cfg.deface.seed, threads=1,
                          atlas=atlas)
    bold_ref = build_bold_reference(inp.bold, inp.bold_meta, cfg.qc, threads=1)
    with open(refs, "wb") as fh:
        pickle.dump({"inputs": inp, "anatomy": anatomy, "bold_ref": bold_ref}, fh, protocol=5)


def child(refs: Path, out: Path) -> None:
    """Run the metrics stage of the tree on ``PYTHONPATH``; print a JSON line of CPU seconds."""
    import numpy as np

    from isyb_dask.atlas import get_reference_atlas
    from isyb_dask.config import RunConfig
    from isyb_dask.metrics.fslr import load_fslr32k
    from isyb_dask.metrics.stage import run_metrics

    with open(refs, "rb") as fh:
        ref = pickle.load(fh)
    atlas, surf = get_reference_atlas(), load_fslr32k()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.process_time()
    res = run_metrics(ref["inputs"], RunConfig().metrics, out, atlas, surf=surf,
                      anatomy=ref["anatomy"], bold_ref=ref["bold_ref"])
    cpu = time.process_time() - t0
    np.save(out / "values.npy", res["values"])
    steps = res["info"].get("morphometry", {}).get("cpu_s", {})
    print(json.dumps({"cpu": cpu, "ct": steps.get("CT", float("nan")),
                      "lgi": steps.get("LGI", float("nan")), "missing": res["missing"]}))


def _run(code_dir: Path, refs: Path, out: Path) -> dict:
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(refs),
                           str(out)], cwd=code_dir, env=_env(code_dir), capture_output=True,
                          text=True)
    if proc.returncode:
        raise RuntimeError(f"metrics run failed in {code_dir}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _prepare_subject(bids: Path, refs: Path) -> None:
    subprocess.run([sys.executable, "-m", "isyb_dask.cli.main", "synth", str(bids),
                    "--subjects", "1", "--voxel-size", "1", "--bold-volumes", "240",
                    "--seed", "3"], cwd=ROOT, check=True, capture_output=True, env=_env(ROOT))
    subprocess.run([sys.executable, str(Path(__file__).resolve()), "--prepare", str(bids),
                    str(refs)], cwd=ROOT, check=True, env=_env(ROOT))


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print a Markdown table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", default="2e3e70b")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--refs", type=Path, help="reuse references pickled by an earlier run "
                    "(skips generating the subject and building its references)")
    ap.add_argument("--child", nargs=2, type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--prepare", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    if args.prepare:
        prepare(*args.prepare)
        return 0
    import numpy as np

    from isyb_dask.metrics.names import SURFACE_METRICS

    tmp = Path(tempfile.mkdtemp(prefix="isyb-bench-metrics-"))
    try:
        bids, refs = tmp / "bids", tmp / "refs.pkl"
        if args.refs is not None:
            refs = args.refs
        else:
            _prepare_subject(bids, refs)
        wt = tmp / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", str(wt), args.baseline],
                       cwd=ROOT, check=True, capture_output=True)
        rows: dict[str, list[dict]] = {"baseline": [], "current": []}
        try:
            for k in range(args.repeat):
                for name, tree in (("baseline", wt), ("current", ROOT)):
                    rows[name].append(_run(tree, refs, tmp / f"out-{name}-{k}"))
                    print(f"{name} run {k}: {rows[name][-1]}", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(wt)], cwd=ROOT,
                           capture_output=True)
        print(f"nproc={os.cpu_count()}, load={os.getloadavg()[0]:.1f}")
        print("| run | stage CPU s | CT step s | LGI s | stage without CT s |")
        print("|---|---|---|---|---|")
        best = {}
        for name, runs in rows.items():
            for r in runs:
                print(f"| {name} | {r['cpu']:.1f} | {r['ct']:.1f} | {r['lgi']:.1f} | "
                      f"{r['cpu'] - r['ct']:.1f} |")
            best[name] = min(runs, key=lambda r: r["cpu"])
        b, c = best["baseline"], best["current"]
        print(f"ratio baseline/current (best of {args.repeat}): stage {b['cpu'] / c['cpu']:.2f}x, "
              f"without CT {(b['cpu'] - b['ct']) / (c['cpu'] - c['ct']):.2f}x, "
              f"LGI {b['lgi'] / c['lgi']:.2f}x")
        va = np.load(tmp / "out-baseline-0" / "values.npy")
        vb = np.load(tmp / "out-current-0" / "values.npy")
        for i, metric in enumerate(SURFACE_METRICS):
            same_nan = bool(np.array_equal(np.isnan(va[i]), np.isnan(vb[i])))
            d = np.abs(va[i] - vb[i])
            rel = d / np.maximum(np.abs(va[i]), 1e-12)
            print(f"{metric}: same NaN pattern {same_nan}, max |diff| {np.nanmax(d):.3g}, "
                  f"max rel {np.nanmax(rel):.3g}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
