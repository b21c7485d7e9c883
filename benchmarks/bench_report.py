"""Benchmark: the group report page of a 1,000-subject study.

Builds a synthetic results store with the store API (:func:`isyb_dask.io.store.init_store`
for the layout, :func:`isyb_dask.io.store.write_group` for the values; no images), runs the
real group QC and statistics steps on it (exclusions, group TSVs, Figures 1, 2 and 6), then
times, in the same process:

* today's report (``isyb_dask/report`` at commit ``BASE``, extracted with ``git show``),
* the new group page (``write_report(..., subject_pages=False)``),
* the 1,000 subject pages (no images in this store: the pages say "not available").

Targets (issue 15): group page under 30 s and under 10 MB.

Usage::

    PYTHONPATH=. OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_report.py [--subjects 1000]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from isyb_dask.io.store import init_store, write_group
from isyb_dask.qc.anat_iqms import ANAT_IQMS
from isyb_dask.qc.config import QCConfig
from isyb_dask.qc.func_stage import IQM_NAMES
from isyb_dask.group.qc import run_qc_group
from isyb_dask.stats.config import StatsConfig
from isyb_dask.stats.stage import run_stats

BASE = "d8c5e3a"  # last commit with the single-page report
TEMPLATES = ["MNI152", "CN200", "Chinese2020"]
ROOT = Path(__file__).resolve().parents[1]


def build_store(out: Path, n: int, seed: int = 0) -> Path:
    """A results store of ``n`` subjects: IQMs, NMI, audit variables, statuses."""
    rng = np.random.default_rng(seed)
    subjects = [f"sub-{i:04d}" for i in range(1, n + 1)]
    demo = pd.DataFrame({"age": rng.integers(18, 31, n).astype(float),
                         "sex": np.where(np.arange(n) % 2, "F", "M"),
                         "population": np.where(np.arange(n) % 3, "Han", "Other")},
                        index=subjects)
    store = out / "results.zarr"
    attrs = {"software": "isyb-dask", "version": "bench", "bids_dir": str(out / "bids"),
             "config": json.dumps({"qc": {}, "stats": {"design": "mixed"}})}
    init_store(store, subjects, templates=TEMPLATES, anat_iqms=list(ANAT_IQMS),
               func_iqms=list(IQM_NAMES), surface_metrics=["CT"], hemi=["L", "R"],
               participants=demo, attrs=attrs)
    status = np.array(["ok"] * n, dtype=object)
    error = np.array([""] * n, dtype=object)
    stages = np.array([""] * n, dtype=object)
    failed = rng.choice(n, n // 50, replace=False)
    status[failed] = "failed"
    error[failed] = "qc_anat: InputError: sub-X_T1w.nii.gz: truncated or corrupt image data"
    partial = np.setdiff1d(rng.choice(n, n // 100, replace=False), failed)
    status[partial] = "partial"
    stages[partial] = "metrics"
    error[partial] = "metrics: no DWI run"
    part = xr.Dataset({"status": ("subject", status), "error": ("subject", error),
                       "failed_stages": ("subject", stages),
                       "exclusion_reason": ("subject", np.full(n, "", object)),
                       "exclusion_rule": ("subject", np.full(n, "", object)),
                       "exclusion_metric": ("subject", np.full(n, "", object)),
                       "database": ("subject", np.full(n, "", object)),
                       **{c: ("subject", demo[c].to_numpy()) for c in demo}},
                      coords={"subject": np.array(subjects, dtype=object)}, attrs=attrs)
    write_group(store, "participants", part)
    bad = status == "failed"

    def block(names, make):
        data = {k: ("subject", np.where(bad, np.nan, make(k))) for k in names}
        return xr.Dataset(data, coords={"subject": np.array(subjects, dtype=object)},
                          attrs=attrs)

    write_group(store, "qc_anat", block(ANAT_IQMS, lambda k: rng.lognormal(1.0, 0.3, n)))
    write_group(store, "qc_func", block(IQM_NAMES, lambda k: rng.gamma(2.0, 0.06, n)))
    nmi = 0.3 + rng.normal(0, 0.02, (n, 1)) + rng.normal(0, 0.002, (n, 3))
    nmi[bad] = np.nan
    nmi[rng.choice(np.flatnonzero(~bad), 3, replace=False), 1] = np.nan  # dropped from stats
    dims = ("subject", "template")
    deface = xr.Dataset({"nmi": (dims, nmi),
                         "seconds": (dims, rng.uniform(5, 9, (n, 3))),
                         "face_detected": (dims, (rng.random((n, 3)) < 0.1).astype(float)),
                         "reid_rank": (dims, rng.integers(1, 50, (n, 3)).astype(float))},
                        coords={"subject": np.array(subjects, dtype=object),
                                "template": np.array(TEMPLATES, dtype=object)}, attrs=attrs)
    write_group(store, "deface", deface)
    return store


def legacy_writer(tmp: Path):
    """``write_report`` of the report package at commit :data:`BASE`."""
    pkg = tmp / "legacy_report"
    pkg.mkdir()
    for name in ("__init__", "html", "images", "sections"):
        spec = f"{BASE}:isyb_dask/report/{name}.py"
        text = subprocess.run(["git", "-C", str(ROOT), "show", spec], check=True,
                              capture_output=True, text=True).stdout
        text = text.replace("isyb_dask.report.", "legacy_report.")
        text = text.replace("from isyb_dask.report import", "from legacy_report import")
        (pkg / f"{name}.py").write_text(text)
    sys.path.insert(0, str(tmp))
    return importlib.import_module("legacy_report.html").write_report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subjects", type=int, default=1000)
    ap.add_argument("--keep", type=Path, default=None, help="build in this folder and keep it")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmpname:
        tmp = Path(tmpname)
        out = args.keep or tmp / "out"
        out.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        store = build_store(out, args.subjects)
        run_qc_group(store, out, QCConfig())
        run_stats(store, out, StatsConfig())
        print(f"store + group QC + stats for {args.subjects} subjects: "
              f"{time.perf_counter() - t0:.1f} s")

        from isyb_dask.report.html import write_report

        old = legacy_writer(tmp)
        t0 = time.perf_counter()
        old_page = old(out, store)
        t_old = time.perf_counter() - t0
        old_size = old_page.stat().st_size
        old_page.rename(out / "report_legacy.html")

        t0 = time.perf_counter()
        page = write_report(out, store, subject_pages=False)
        t_new = time.perf_counter() - t0
        size = page.stat().st_size
        text = page.read_text()
        n_points = text.count('<circle class="pt')
        n_plots = text.count('<svg class="iqm"')

        t0 = time.perf_counter()
        write_report(out, store, subject_pages=True)
        t_all = time.perf_counter() - t0
        sub_sizes = [p.stat().st_size for p in out.glob("sub-*/sub-*_report.html")]

    print(f"python {platform.python_version()}, nproc {os.cpu_count()}, "
          f"load {os.getloadavg()[0]:.1f}")
    print(f"today's report : {t_old:6.2f} s  {old_size / 1e6:6.2f} MB")
    print(f"new group page : {t_new:6.2f} s  {size / 1e6:6.2f} MB  "
          f"({n_plots} IQM plots, {n_points} points)")
    print(f"ratio time old/new {t_old / t_new:.2f}, size old/new {old_size / size:.2f}")
    print(f"group page + {len(sub_sizes)} subject pages: {t_all:.1f} s; subject page size "
          f"median {np.median(sub_sizes) / 1e3:.0f} kB")
    ok = t_new < 30 and size < 10e6
    print("targets (< 30 s, < 10 MB):", "met" if ok else "NOT met")


if __name__ == "__main__":
    main()
