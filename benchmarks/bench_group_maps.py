"""Benchmark: group mean/SD maps from the store (Dask) vs a naive GIFTI loop and a raw read.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_group_maps.py \
        --subjects 100 200 --naive-subjects 100 --workdir /tmp/bench_group

For each size in ``--subjects`` a store ``results.zarr`` (group ``surface``, ``value`` over
``subject x metric x vertex`` = S x 12 x 64,984 float32, one subject per chunk) is generated,
then timed:

* ``dask``   : :func:`isyb_dask.group.maps.compute_group_maps` on a local
  ``distributed`` cluster (``--workers`` processes x 1 thread; cluster start-up excluded)
  and with the threaded scheduler;
* ``read``   : reading every chunk of the store once, sequentially, in one process (b);
* ``naive``  : (a) loading one GIFTI per subject, metric and hemisphere with nibabel and
  accumulating sum / sum of squares / count in numpy (files generated for the first
  ``--naive-subjects`` subjects; its time is scaled linearly to S when smaller).

Peak memory of the group step is the peak RSS of a fresh subprocess running it (threaded
and synchronous schedulers; max of a few runs), printed for every size: it must not grow
with S.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

N_VERTEX = 64984
N_METRIC = 12
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_store(path: Path, n_sub: int, seed: int = 0) -> None:
    """Write a synthetic ``surface`` group of ``n_sub`` subjects (skipped if present)."""
    import xarray as xr
    import zarr

    if (path / "surface" / "value").exists():
        arr = zarr.open_array(str(path / "surface" / "value"), mode="r")
        if arr.shape[0] == n_sub:
            return
    rng = np.random.default_rng(seed)
    subjects = [f"sub-{i:05d}" for i in range(n_sub)]
    metrics = [f"M{i}" for i in range(N_METRIC)]
    import dask.array as da

    template = xr.Dataset(
        {
            "value": (
                ("subject", "metric", "vertex"),
                da.zeros((n_sub, N_METRIC, N_VERTEX), chunks=(1, -1, -1), dtype=np.float32),
            )
        },
        coords={"subject": subjects, "metric": metrics, "vertex": np.arange(N_VERTEX)},
    )
    template.to_zarr(
        path, group="surface", mode="w", zarr_format=3, consolidated=False, compute=False
    )
    arr = zarr.open_array(str(path / "surface" / "value"), mode="r+")
    block = 25
    for s0 in range(0, n_sub, block):
        s1 = min(n_sub, s0 + block)
        x = rng.normal(2.0, 1.0, (s1 - s0, N_METRIC, N_VERTEX)).astype(np.float32)
        x[:, :, :2000] = np.nan
        arr[s0:s1] = x
    status = np.array(["ok"] * n_sub, dtype="<U8")
    xr.Dataset({"status": (("subject",), status)}, coords={"subject": subjects}).to_zarr(
        path, group="participants", mode="w", zarr_format=3, consolidated=False
    )


def make_gifti(path: Path, store: Path, n_sub: int) -> list[list[tuple[Path, Path]]]:
    """One GIFTI per subject, metric and hemisphere (as the metrics stage writes them)."""
    import nibabel as nb
    import zarr

    arr = zarr.open_array(str(store / "surface" / "value"), mode="r")
    files = []
    for s in range(n_sub):
        x = None
        row = []
        for m in range(N_METRIC):
            pair = []
            for h, sl in (("L", slice(0, N_VERTEX // 2)), ("R", slice(N_VERTEX // 2, None))):
                f = path / f"sub-{s:05d}" / f"sub-{s:05d}_hemi-{h}_desc-M{m}.shape.gii"
                if not f.exists():
                    if x is None:
                        x = arr[s]
                    f.parent.mkdir(parents=True, exist_ok=True)
                    img = nb.gifti.GiftiImage(
                        darrays=[
                            nb.gifti.GiftiDataArray(
                                x[m, sl],
                                intent="NIFTI_INTENT_SHAPE",
                                datatype="NIFTI_TYPE_FLOAT32",
                            )
                        ]
                    )
                    nb.save(img, f)
                pair.append(f)
            row.append(tuple(pair))
        files.append(row)
    return files


def naive_loop(files) -> np.ndarray:
    """Baseline (a): nibabel loads, numpy accumulation."""
    import nibabel as nb

    s1 = np.zeros((N_METRIC, N_VERTEX))
    s2 = np.zeros((N_METRIC, N_VERTEX))
    n = np.zeros((N_METRIC, N_VERTEX))
    for row in files:
        for m, (fl, fr) in enumerate(row):
            x = np.concatenate([nb.load(fl).darrays[0].data, nb.load(fr).darrays[0].data])
            ok = np.isfinite(x)
            x = np.where(ok, x, 0.0)
            s1[m] += x
            s2[m] += x * x
            n[m] += ok
    mean = s1 / np.maximum(n, 1)
    return np.sqrt((s2 - n * mean**2) / np.maximum(n - 1, 1))


def read_once(store: Path) -> float:
    """Baseline (b): read every chunk once, one process."""
    import zarr

    arr = zarr.open_array(str(store / "surface" / "value"), mode="r")
    total = 0.0
    for s in range(arr.shape[0]):
        total += float(arr[s][0, 5000])
    return total


def group_step(store: Path) -> object:
    import xarray as xr

    from isyb_dask.group.maps import compute_group_maps, included_subjects

    surface = xr.open_zarr(str(store), group="surface", consolidated=False)
    inc = included_subjects(store, surface["subject"].values)
    return compute_group_maps(surface, inc, store_path=store)


def peak_memory_subprocess(store: Path, scheduler: str = "threads") -> tuple[float, float]:
    """Memory (MB) of a fresh process running the group step.

    ``ru_maxrss`` survives ``execve`` on Linux (a child would report its parent's peak), so
    the child reads its own ``VmHWM`` (peak RSS of its address space) from
    ``/proc/self/status``.

    Returns
    -------
    peak, increment
        Peak RSS, and peak minus the RSS after all imports (the group step's own memory).
    """
    code = (
        f"import sys, dask; sys.path.insert(0, {str(ROOT)!r});"
        f"dask.config.set(scheduler={scheduler!r}, num_workers=2);"
        "from benchmarks.bench_group_maps import group_step, proc_status;"
        "import xarray, zarr, numpy, distributed;"
        "base = proc_status('VmRSS');"
        f"group_step(__import__('pathlib').Path({str(store)!r}));"
        "print(proc_status('VmHWM'), base)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    peak, base = (float(v) for v in out.stdout.split()[-2:])
    return peak, peak - base


def proc_status(key: str) -> float:
    """A memory line of ``/proc/self/status`` in MB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return float(line.split()[1]) / 1024
    return float("nan")


def timed(fn, *args, repeat: int = 1) -> tuple[float, float]:
    """Best wall time and the process CPU time (all threads) of that run."""
    best = (np.inf, np.inf)
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn(*args)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        best = min(best, (wall, cpu))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subjects", type=int, nargs="+", default=[100, 400])
    ap.add_argument("--naive-subjects", type=int, default=50)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/bench_group_maps"))
    ap.add_argument("--no-naive", action="store_true")
    args = ap.parse_args()

    import dask
    from distributed import Client, LocalCluster

    args.workdir.mkdir(parents=True, exist_ok=True)
    results = []
    for n_sub in args.subjects:
        store = args.workdir / f"results_{n_sub}.zarr"
        t0 = time.perf_counter()
        make_store(store, n_sub)
        gen = time.perf_counter() - t0
        row = {"subjects": n_sub, "generate_s": round(gen, 1)}
        row["read_once_s"], row["read_once_cpu_s"] = timed(read_once, store, repeat=2)
        with dask.config.set(scheduler="threads", num_workers=args.workers):
            group_step(store)  # warm-up (first-use imports)
            row["dask_threads_s"], row["dask_threads_cpu_s"] = timed(group_step, store, repeat=2)
        with (
            LocalCluster(
                n_workers=args.workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
            ) as cluster,
            Client(cluster),
        ):
            group_step(store)  # warm-up (imports on workers)
            row["dask_distributed_s"], _ = timed(group_step, store, repeat=2)
        # allocator noise (glibc arenas under threads) varies by tens of MB: keep the max of 3
        mem = [peak_memory_subprocess(store) for _ in range(3)]
        row["peak_rss_threads_MB"] = max(m[0] for m in mem)
        row["group_step_increment_threads_MB"] = max(m[1] for m in mem)
        mem = [peak_memory_subprocess(store, "sync") for _ in range(2)]
        row["group_step_increment_sync_MB"] = max(m[1] for m in mem)
        if not args.no_naive:
            n_naive = min(args.naive_subjects, n_sub)
            files = make_gifti(args.workdir / "gifti", store, n_naive)
            t_naive, _ = timed(naive_loop, files)
            row["naive_s_measured"] = t_naive
            row["naive_subjects"] = n_naive
            row["naive_s_scaled"] = t_naive * n_sub / n_naive
            row["speedup_vs_naive(dist)"] = row["naive_s_scaled"] / row["dask_distributed_s"]
            row["speedup_vs_naive(threads)"] = row["naive_s_scaled"] / row["dask_threads_s"]
        row["ratio_to_read(dist)"] = row["dask_distributed_s"] / row["read_once_s"]
        row["ratio_to_read(threads)"] = row["dask_threads_s"] / row["read_once_s"]
        row["cpu_ratio_to_read(threads)"] = row["dask_threads_cpu_s"] / row["read_once_cpu_s"]
        results.append(row)
        print(
            json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}),
            flush=True,
        )
    print(f"load average: {os.getloadavg()}")
    print(f"nproc={os.cpu_count()} peak RSS of this process: {proc_status('VmHWM'):.0f} MB")


if __name__ == "__main__":
    main()
