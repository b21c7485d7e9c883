"""Benchmark: seconds per subject-template of the face audit (renders + detection + descriptors).

Runs :func:`isyb_dask.deface.audit.audit_defaced` on one thread for one subject and three
"defaced" copies (face zeroed in front of y = 50 mm and y = 40 mm, whole head blurred with a
Gaussian of sigma 2 mm), writing the three PNG renders and the descriptor file, and reports
wall and CPU time per subject-template (the original's render and audit are shared by the templates
of a subject and counted in). Also times the parts: the three-view render of one head and the
dlib detection + descriptors of its views.

The subject is the real 2 mm head of ``../shared/data`` (native and resampled to a 1 mm
256x256x188 grid); without the shared data, a generated head phantom.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_audit.py [--repeats N]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import nibabel as nb
import numpy as np
from scipy import ndimage as ndi

from isyb_dask import registration as reg
from isyb_dask.deface.audit import analyse_views, audit_defaced
from isyb_dask.deface.phantom import make_head
from isyb_dask.deface.render import render_geometry, render_views

SHARED = Path(os.environ.get("ISYB_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
SHAPE = (256, 256, 188)


def _heads() -> list[tuple[str, np.ndarray, np.ndarray]]:
    head = SHARED / "heads" / "xa30_sub1_T1w_tfl_2mm.nii.gz"
    if not head.exists():
        ph = make_head(1.0, seed=4)
        return [("phantom head 1 mm", ph.data, ph.affine)]
    img = reg.to_canonical(nb.load(head))
    src = reg.to_sitk(img)
    centre = img.affine @ np.r_[(np.asarray(img.shape) - 1) / 2.0, 1.0]
    aff = np.eye(4)
    aff[:3, 3] = centre[:3] - (np.asarray(SHAPE) - 1) / 2.0
    grid = reg.to_sitk(np.zeros(SHAPE, np.float32), aff)
    one = reg.sitk_to_array(reg.resample_to(src, grid, None, "linear"))
    return [("real head xa30, 2 mm native 96x128x128", np.asarray(img.dataobj, np.float32), img.affine),
            ("real head xa30, resampled to 1 mm 256x256x188", one.astype(np.float32), aff)]


def _zero(data: np.ndarray, affine: np.ndarray, y_mm: float) -> np.ndarray:
    ijk = np.indices(data.shape).reshape(3, -1).T
    y = (ijk @ affine[:3, :3].T + affine[:3, 3])[:, 1].reshape(data.shape)
    return np.where(y > y_mm, 0.0, data).astype(np.float32)


def _timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    print(f"# face audit benchmark ({platform.processor() or platform.machine()}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, load {os.getloadavg()[0]:.1f})")
    for kind, data, affine in _heads():
        sigma = 2.0 / np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
        defaced = {"Zero50": _zero(data, affine, 50.0), "Zero40": _zero(data, affine, 40.0),
                   "Blur2mm": ndi.gaussian_filter(data, sigma).astype(np.float32)}
        geom = render_geometry(data, affine)
        views, w_r, c_r = _timed(lambda: render_views(data, affine, geom))
        faces, w_a, c_a = _timed(lambda: analyse_views(views))
        print(f"\n## {kind}\nrender 3 views: wall {w_r:.2f} s, CPU {c_r:.2f} s; "
              f"detection + descriptors: wall {w_a:.2f} s, CPU {c_a:.2f} s; "
              f"scores {[round(f.score, 2) for f in faces]}")
        for r in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                res, w, c = _timed(lambda: audit_defaced(data, affine, defaced, tmp, "sub-bench"))
            n = len(defaced)
            print(f"repeat {r}: audit_defaced, {n} templates: wall {w:.2f} s, CPU {c:.2f} s; "
                  f"per subject-template wall {w / n:.2f} s, CPU {c / n:.2f} s")
            for name, row in res.items():
                print(f"  {name}: face_detected={row['face_detected']} "
                      f"face_score={row['face_score']:.2f} reid_distance={row['reid_distance']:.3f}")


if __name__ == "__main__":
    main()
