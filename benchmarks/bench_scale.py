"""Scale-out benchmark: worker speed-up, scheduler overhead, SLURM start-up latency.

Run from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_scale.py [--subjects 4] [--tasks 10000]
        [--skip-speedup] [--skip-overhead] [--skip-slurm]

1. ``speedup``: wall time of the participant level of a generated study (``--subjects``,
   3 mm, stages ``--stages``) on 1 worker vs 2 workers (1 thread each). Target >= 1.7 on
   2 cores. Each configuration starts from an empty output directory.
2. ``overhead``: graph build + submit + gather time for ``--tasks`` subjects whose task does
   no imaging work (it receives a ``SubjectInputs``-sized payload of paths and returns a
   small dict, like the real task), on a 2-worker LocalCluster, and the client's peak RSS.
   Targets < 30 s and < 2 GB. Reported against a baseline of the same number of bare
   ``client.submit`` calls with no payload, run in the same process.
3. ``slurm``: seconds from launching ``isyb run --cluster slurm --jobs 1`` (a subprocess)
   to the first subject task running (its log file appears); skipped without ``sbatch``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _peak_rss(stop: threading.Event, box: dict) -> None:
    import psutil

    proc = psutil.Process()
    while not stop.is_set():
        box["peak"] = max(box.get("peak", 0), proc.memory_info().rss)
        time.sleep(0.05)


def _noop_task(payload: dict) -> dict:
    return {"subject": payload["subject"], "status": "ok", "error": "", "seconds": 0.0}


def _bare_task(i: int) -> int:
    return i


def bench_overhead(n_tasks: int) -> dict:
    """Build, submit and gather ``n_tasks`` no-op subject tasks."""
    from distributed import as_completed

    from isyb_dask.pipeline.cluster import ClusterSpec, open_client, task_resources

    box: dict = {}
    stop = threading.Event()
    watcher = threading.Thread(target=_peak_rss, args=(stop, box), daemon=True)
    watcher.start()
    spec = ClusterSpec(workers=2, threads_per_worker=1, dashboard_address="127.0.0.1:0")
    with tempfile.TemporaryDirectory() as tmp, open_client(spec, Path(tmp)) as client:
        t0 = time.perf_counter()
        futs = client.map(_bare_task, range(n_tasks), pure=False)
        for _ in as_completed(futs):
            pass
        base = time.perf_counter() - t0
        del futs
        rss_before = box.get("peak", 0)

        t0 = time.perf_counter()
        payloads = [
            {"subject": f"sub-{i:05d}",
             "t1w": f"/data/bids/sub-{i:05d}/anat/sub-{i:05d}_T1w.nii.gz",
             "bold": f"/data/bids/sub-{i:05d}/func/sub-{i:05d}_task-rest_bold.nii.gz",
             "bold_meta": {"RepetitionTime": 2.0, "SliceTiming": [0.05 * k for k in range(36)]},
             "dwi": f"/data/bids/sub-{i:05d}/dwi/sub-{i:05d}_dwi.nii.gz",
             "asl": f"/data/bids/sub-{i:05d}/perf/sub-{i:05d}_asl.nii.gz"}
            for i in range(n_tasks)
        ]
        res = task_resources("subject")
        t_build = time.perf_counter() - t0
        futs = [client.submit(_noop_task, p, key=f"subject-{p['subject']}", retries=2,
                              resources=res, pure=False) for p in payloads]
        t_submit = time.perf_counter() - t0
        done = 0
        for _ in as_completed(futs):
            done += 1
        total = time.perf_counter() - t0
    stop.set()
    watcher.join()
    return {"tasks": n_tasks, "build_s": t_build, "submit_s": t_submit, "total_s": total,
            "baseline_s": base, "ratio_vs_baseline": total / base, "done": done,
            "peak_rss_gb": box.get("peak", 0) / 1e9, "rss_before_gb": rss_before / 1e9}


def _study(root: Path, n: int) -> Path:
    from isyb_dask.synth.cohort import generate_study

    return generate_study(root / "bids", n, "chinese", 11, voxel_size=3.0, modalities=("anat",))


def _task_phase(out: Path) -> float:
    """Seconds from the first subject stage starting to the last subject finishing (from the
    per-subject logs): the parallel part of the run, without cluster start-up and indexing."""
    from datetime import datetime

    stamps = []
    for log in out.glob("logs/sub-*.log"):
        for line in log.read_text().splitlines():
            try:
                stamps.append(datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f"))
            except ValueError:
                continue
    return (max(stamps) - min(stamps)).total_seconds() if stamps else float("nan")


def bench_speedup(n_subjects: int, stages: list[str]) -> dict:
    """Participant level on 1 vs 2 single-threaded workers."""
    from isyb_dask.config import RunConfig
    from isyb_dask.pipeline.cluster import ClusterSpec
    from isyb_dask.pipeline.runner import run_pipeline

    root = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    try:
        bids = _study(root, n_subjects)
        cfg = RunConfig(stages=tuple(stages))
        times: dict[int, float] = {}
        failed: dict[int, list[str]] = {}
        phase: dict[int, float] = {}
        for workers in (1, 2):
            t0 = time.perf_counter()
            summary = run_pipeline(bids, root / f"out-{workers}", cfg, levels=("participant",),
                                   cluster=ClusterSpec(workers=workers, threads_per_worker=1,
                                                       dashboard_address="127.0.0.1:0"),
                                   write=lambda _msg: None)
            times[workers] = time.perf_counter() - t0
            phase[workers] = _task_phase(root / f"out-{workers}")
            failed[workers] = list(summary.failed)
        return {"subjects": n_subjects, "stages": stages, "t1_s": times[1], "t2_s": times[2],
                "speedup": times[1] / times[2], "failed": failed, "phase1_s": phase[1],
                "phase2_s": phase[2], "phase_speedup": phase[1] / phase[2]}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def bench_slurm_latency() -> dict | None:
    """Seconds from `isyb run --cluster slurm` to the first subject task running."""
    if shutil.which("sbatch") is None:
        return None
    root = Path(tempfile.mkdtemp(prefix="bench-slurm-"))
    try:
        bids = _study(root, 1)
        cfg = root / "cfg.yaml"
        cfg.write_text("stages: [qc_anat]\n")
        out = root / "out"
        env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
        cmd = [sys.executable, "-m", "isyb_dask.cli.main", "run", str(bids), str(out),
               "participant", "--config", str(cfg), "--cluster", "slurm", "--jobs", "1",
               "--memory-limit", "2GiB"]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        first = None
        while proc.poll() is None and time.perf_counter() - t0 < 600:
            if first is None and any(out.glob("logs/sub-*.log")):
                first = time.perf_counter() - t0
            time.sleep(0.1)
        proc.wait(timeout=600)
        total = time.perf_counter() - t0
        return {"first_task_s": first, "run_total_s": total, "exit_code": proc.returncode}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--stages", default="qc_anat", help="comma-separated stages")
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--skip-speedup", action="store_true")
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("--skip-slurm", action="store_true")
    args = parser.parse_args()
    print(f"nproc={os.cpu_count()}  python={sys.version.split()[0]}", flush=True)
    if not args.skip_overhead:
        r = bench_overhead(args.tasks)
        print(f"[overhead] {r['tasks']} no-op subject tasks: build {r['build_s']:.2f} s, "
              f"build+submit {r['submit_s']:.2f} s, all done {r['total_s']:.2f} s "
              f"(target < 30 s); bare-submit baseline {r['baseline_s']:.2f} s, "
              f"ratio {r['ratio_vs_baseline']:.2f}; client peak RSS {r['peak_rss_gb']:.2f} GB "
              f"(target < 2 GB)", flush=True)
    if not args.skip_speedup:
        r = bench_speedup(args.subjects, args.stages.split(","))
        print(f"[speedup] {r['subjects']} subjects, stages {r['stages']}: 1 worker "
              f"{r['t1_s']:.1f} s, 2 workers {r['t2_s']:.1f} s, speed-up {r['speedup']:.2f} "
              f"(target >= 1.7); subject-task phase {r['phase1_s']:.1f} s vs "
              f"{r['phase2_s']:.1f} s, speed-up {r['phase_speedup']:.2f}; "
              f"failed subjects {r['failed']}", flush=True)
    if not args.skip_slurm:
        r = bench_slurm_latency()
        if r is None:
            print("[slurm] skipped: sbatch not on PATH")
        else:
            print(f"[slurm] isyb run --cluster slurm -> first task running: "
                  f"{r['first_task_s']:.1f} s (whole 1-subject run {r['run_total_s']:.1f} s, "
                  f"exit {r['exit_code']})", flush=True)


if __name__ == "__main__":
    main()
