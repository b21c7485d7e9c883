"""Benchmark: the store writers, before (one reopen per subject and group) and after.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_store_writes.py [--subjects 100 400]
        [--baseline /path/to/old/isyb_dask/io/store.py]

For each S, a store of S subjects (3 templates, 12 surface metrics, 64,984 vertices) is
created, then timed in CPU seconds in this one process with the current module and with a
baseline copy of ``io/store.py`` (default: the one of ``/work/main``, loaded from its file):

* ``participants``: the group step's exclusion update of every subject
  (``update_participants``);
* ``subject``: one subject task's writes of its five groups (``participants``, ``deface``,
  ``qc_anat`` twice, ``qc_func``, ``surface``), as ``pipeline.tasks.store_result`` does them.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def load_module(path: Path):
    spec = importlib.util.spec_from_file_location("baseline_store", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def make(store_mod, path: Path, n: int) -> list[str]:
    subjects = [f"sub-{i:05d}" for i in range(n)]
    hemi = ["L"] * 32492 + ["R"] * 32492
    store_mod.init_store(path, subjects, templates=["a", "b", "c"], anat_iqms=["cnr", "snr_wm"],
                         func_iqms=["fd_mean"], surface_metrics=[f"M{i}" for i in range(12)],
                         hemi=hemi)
    return subjects


def subject_writes(store_mod, path: Path, subject: str) -> None:
    groups = {
        "participants": {"status": "ok", "error": "", "failed_stages": "", "repairs": ""},
        "deface": {"nmi": [0.1, 0.2, 0.3], "error": ["", "", ""]},
        "qc_anat": {"cnr": 2.0, "snr_wm": 10.0},
        "qc_func": {"fd_mean": 0.1},
        "surface": {"value": np.ones((12, 64984), np.float32), "missing": [""] * 12,
                    "provenance": [""] * 12},
    }
    if hasattr(store_mod, "write_subject_groups"):
        groups["qc_anat"]["harmonization_route"] = "wm"
        store_mod.write_subject_groups(path, subject, groups)
    else:
        store_mod.write_subject(path, "participants", subject, groups["participants"])
        store_mod.write_subject(path, "deface", subject, groups["deface"])
        store_mod.write_subject(path, "qc_anat", subject, {"harmonization_route": "wm"})
        for g in ("qc_anat", "qc_func", "surface"):
            store_mod.write_subject(path, g, subject, groups[g])


def cpu(fn, *args) -> float:
    c0 = time.process_time()
    fn(*args)
    return time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subjects", type=int, nargs="+", default=[100, 400])
    ap.add_argument("--baseline", type=Path, default=Path("/work/main/isyb_dask/io/store.py"))
    args = ap.parse_args()
    from isyb_dask.io import store as new

    old = load_module(args.baseline)
    work = Path(tempfile.mkdtemp(prefix="bench_store_"))
    try:
        for n in args.subjects:
            row: dict = {"subjects": n}
            for label, mod in (("before", old), ("after", new)):
                path = work / f"{label}_{n}.zarr"
                subjects = make(mod, path, n)
                row[f"subject_task_cpu_s_{label}"] = min(
                    cpu(subject_writes, mod, path, subjects[i]) for i in range(3))
                updates = {s: {"status": "excluded", "exclusion_reason": "fd_mean > 0.2"}
                           for s in subjects}
                row[f"participants_update_cpu_s_{label}"] = cpu(mod.update_participants, path,
                                                                updates)
                shutil.rmtree(path)
            row["subject_task_speedup"] = (row["subject_task_cpu_s_before"]
                                           / row["subject_task_cpu_s_after"])
            row["participants_update_speedup"] = (row["participants_update_cpu_s_before"]
                                                  / row["participants_update_cpu_s_after"])
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v
                              for k, v in row.items()}), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
