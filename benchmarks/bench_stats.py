"""Speed of the vertex-wise maps against a per-vertex Python loop (same process).

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_stats.py [--vertices 64984]``

Baselines (per-vertex loops, timed on a subset and scaled to all vertices):
* ``scipy.stats.f_oneway`` per vertex for the between-subject map;
* ``isyb_dask.stats.anova.split_plot_anova`` per vertex for the split-plot map.
"""

from __future__ import annotations

import argparse
import time

import dask
import numpy as np
import xarray as xr
from scipy import stats

from isyb_dask.stats.anova import split_plot_anova
from isyb_dask.stats.vertexwise import vertexwise_between, vertexwise_split_plot


def _time(fn, repeat: int = 3) -> float:
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subjects", type=int, default=215)
    parser.add_argument("--vertices", type=int, default=64984)
    parser.add_argument("--loop-vertices", type=int, default=1000)
    parser.add_argument("--chunk", type=int, default=8192)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n, v = args.subjects, args.vertices
    groups = np.where(np.arange(n) < round(n * 89 / 215), "ISYB-1", "ISYB-2")
    vals = rng.normal(size=(n, v)).astype(np.float32)
    tri = rng.normal(size=(n, 3, v)).astype(np.float32)
    da1 = xr.DataArray(vals, dims=("subject", "vertex"))
    da3 = xr.DataArray(tri, dims=("subject", "template", "vertex"))
    m = args.loop_vertices

    def loop_between():
        for j in range(m):
            stats.f_oneway(vals[groups == "ISYB-1", j], vals[groups == "ISYB-2", j])

    def loop_split():
        for j in range(m // 10):
            split_plot_anova(tri[:, :, j], groups)

    base_b = _time(loop_between, 1) * v / m
    base_s = _time(loop_split, 1) * v / (m // 10)
    rows = []
    for sched in ("synchronous", "threads"):
        with dask.config.set(scheduler=sched):
            tb = _time(lambda: vertexwise_between(da1, groups, vertex_chunk=args.chunk).compute())
            ts = _time(lambda: vertexwise_split_plot(da3, "template", groups,
                                                     vertex_chunk=args.chunk).compute())
        rows.append((sched, tb, ts))
    print(f"subjects={n} vertices={v} chunk={args.chunk}")
    print(f"baseline per-vertex loop (scaled): between {base_b:.2f} s, split-plot {base_s:.2f} s")
    for sched, tb, ts in rows:
        print(f"dask {sched:11s}: between {tb:.3f} s (x{base_b / tb:.0f} faster), "
              f"split-plot {ts:.3f} s (x{base_s / ts:.0f} faster)")


if __name__ == "__main__":
    main()
