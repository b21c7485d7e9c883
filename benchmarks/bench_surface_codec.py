"""Benchmark: chunk codec of the store's ``surface/value`` (zstd vs blosc-lz4 + shuffle).

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_surface_codec.py \
        --subjects 400 --naive-subjects 30 --workdir /tmp/bench_codec

For each codec a ``surface`` group of S x 12 metrics x 64,984 vertices float32 is written
with realistic values (a smooth group pattern per metric plus subject noise at float32
precision, the fsLR 32k medial wall NaN, a few subjects without a modality: whole metric
rows NaN), one subject per chunk as the pipeline writes it. Then, in this one process:

* size on disk;
* ``read``: every chunk read once, sequentially (CPU seconds, best of ``--repeat``);
* ``group``: the group step (:func:`isyb_dask.group.maps.compute_group_maps` with
  ``store_path``, the threaded scheduler) (CPU seconds, best of ``--repeat``);
* ``naive``: a nibabel loop over one GIFTI per subject, metric and hemisphere (the first
  ``--naive-subjects`` subjects, scaled linearly to S, best of ``--repeat``), as baseline.

CPU seconds (``time.process_time``, every thread of this process) are used because the
machine is shared; wall seconds are printed alongside.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

N_VERTEX = 64984
N_METRIC = 12
MEDIAL_WALL_PER_HEMI = 2796  # fsLR 32k: 32,492 vertices per hemisphere, ~29,700 cortical


def codecs() -> dict:
    """The candidate compressors (zarr v3 codec objects) by name."""
    from zarr.codecs import BloscCodec, BloscShuffle, ZstdCodec

    return {
        "zstd-0 (zarr default)": ZstdCodec(level=0),
        "zstd-3": ZstdCodec(level=3),
        "blosc-lz4-shuffle": BloscCodec(cname="lz4", clevel=5, shuffle=BloscShuffle.shuffle,
                                        typesize=4),
        "blosc-lz4-bitshuffle": BloscCodec(cname="lz4", clevel=5,
                                           shuffle=BloscShuffle.bitshuffle, typesize=4),
        "none": None,
    }


def subject_values(rng: np.random.Generator, pattern: np.ndarray, wall: np.ndarray) -> np.ndarray:
    """One subject's ``(metric, vertex)`` float32 values."""
    x = pattern * rng.lognormal(0.0, 0.1, (N_METRIC, 1)) + rng.normal(0.0, 0.3, pattern.shape)
    x = x.astype(np.float32)
    x[:, wall] = np.nan
    if rng.random() < 0.1:  # no BOLD for this subject: its functional metrics are missing
        x[3:8] = np.nan
    return x


def make_store(path: Path, n_sub: int, compressor, seed: int = 0) -> float:
    """Write the ``surface`` group with ``compressor``; returns the bytes on disk."""
    import zarr

    if path.exists():
        shutil.rmtree(path)
    rng = np.random.default_rng(seed)
    v = np.arange(N_VERTEX)
    pattern = np.stack([2.0 + np.sin(v / (500.0 + 97 * m)) + 0.5 * np.cos(v / 37.0)
                        for m in range(N_METRIC)])
    half = N_VERTEX // 2
    wall = np.zeros(N_VERTEX, bool)
    wall[1000:1000 + MEDIAL_WALL_PER_HEMI] = True
    wall[half + 1000:half + 1000 + MEDIAL_WALL_PER_HEMI] = True
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    grp = root.create_group("surface")
    arr = grp.create_array("value", shape=(n_sub, N_METRIC, N_VERTEX), dtype="float32",
                           chunks=(1, N_METRIC, N_VERTEX), fill_value=np.nan,
                           compressors=() if compressor is None else (compressor,),
                           dimension_names=("subject", "metric", "vertex"))
    for s in range(n_sub):
        arr[s] = subject_values(rng, pattern, wall)
    for name, values in (("subject", np.array([f"sub-{i:05d}" for i in range(n_sub)], object)),
                         ("metric", np.array([f"M{i}" for i in range(N_METRIC)], object))):
        a = grp.create_array(name, shape=values.shape, dtype=str, dimension_names=(name,))
        a[:] = values
    a = grp.create_array("vertex", shape=(N_VERTEX,), dtype="int32", dimension_names=("vertex",))
    a[:] = v
    return float(sum(f.stat().st_size for f in (path / "surface" / "value").rglob("*")
                     if f.is_file()))


def group_step(store: Path):
    import xarray as xr

    from isyb_dask.group.maps import compute_group_maps

    surface = xr.open_zarr(str(store), group="surface", consolidated=False)
    include = np.ones(surface.sizes["subject"], bool)
    return compute_group_maps(surface, include, store_path=store)


def timed(fn, *args, repeat: int = 2) -> tuple[float, float]:
    """Best (CPU seconds, wall seconds) over ``repeat`` runs."""
    best = (np.inf, np.inf)
    for _ in range(repeat):
        c0, t0 = time.process_time(), time.perf_counter()
        fn(*args)
        best = min(best, (time.process_time() - c0, time.perf_counter() - t0))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subjects", type=int, default=400)
    ap.add_argument("--naive-subjects", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/bench_surface_codec"))
    ap.add_argument("--codecs", nargs="*", default=None, help="subset of codec names")
    args = ap.parse_args()

    import dask

    from benchmarks.bench_group_maps import make_gifti, naive_loop, read_once

    args.workdir.mkdir(parents=True, exist_ok=True)
    raw = args.subjects * N_METRIC * N_VERTEX * 4
    rows = []
    naive_cpu = None
    for name, comp in codecs().items():
        if args.codecs and name not in args.codecs:
            continue
        store = args.workdir / "results.zarr"
        c0 = time.process_time()
        size = make_store(store, args.subjects, comp)
        row = {"codec": name, "write_cpu_s": time.process_time() - c0,
               "size_GB": size / 1e9, "ratio": raw / size}
        row["read_cpu_s"], row["read_wall_s"] = timed(read_once, store, repeat=args.repeat)
        row["read_GB_per_cpu_s"] = raw / 1e9 / row["read_cpu_s"]
        with dask.config.set(scheduler="threads", num_workers=2):
            group_step(store)  # warm-up (first-use imports)
            row["group_cpu_s"], row["group_wall_s"] = timed(group_step, store, repeat=args.repeat)
        row["group_over_read_cpu"] = row["group_cpu_s"] / row["read_cpu_s"]
        if naive_cpu is None:
            files = make_gifti(args.workdir / "gifti", store, args.naive_subjects)
            cpu, wall = timed(naive_loop, files, repeat=args.repeat)
            naive_cpu = cpu * args.subjects / args.naive_subjects
            print(json.dumps({"naive_cpu_s_scaled": round(naive_cpu, 2),
                              "naive_wall_s_scaled": round(wall * args.subjects
                                                           / args.naive_subjects, 2)}), flush=True)
        row["speedup_vs_naive_cpu"] = naive_cpu / row["group_cpu_s"]
        rows.append(row)
        print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v)
                          for k, v in row.items()}), flush=True)
        shutil.rmtree(store)


if __name__ == "__main__":
    main()
