"""Benchmark: seconds per BOLD run (64x64x36x240) of the functional QC stage, one thread.

Builds a 64x64x36x240 run with known motion: the first volume of the real XA30 BOLD of
``../shared/data`` (64x64x33, padded to 36 slices) when available, otherwise a smooth
head phantom, moved by a random walk of rigid parameters (cubic B-spline resampling),
plus Gaussian noise. Then times

* the whole :func:`isyb_dask.qc.func_stage.run_qc_func` (HMC, mask, FD, DVARS, GCOR,
  tSNR, mean-EPI IQMs, writing the derivatives), target < 60 s;
* its head-motion correction alone (Gauss-Newton, default) and the baseline, SimpleITK's
  ``ImageRegistrationMethod`` (regular-step gradient descent, same pyramid), on the first
  ``--baseline-volumes`` volumes; prints the per-volume ratio baseline / ours and the
  motion-parameter error of both against the truth.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_qc_func.py [--baseline-volumes 24]
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
import SimpleITK as sitk

from isyb_dask.qc.config import QCConfig
from isyb_dask.qc.func_stage import run_qc_func
from isyb_dask.bold.hmc import realign_series, rigid_matrix, rotation_center, volume_to_sitk
from isyb_dask.qc.motion import framewise_displacement

SHARED = Path(os.environ.get("ISYB_SHARED_DATA",
                             Path(__file__).resolve().parents[2] / "shared" / "data"))
SHAPE = (64, 64, 36)
N_VOL = 240


def _base_volume() -> tuple[np.ndarray, np.ndarray, str]:
    real = SHARED / "func" / "xa30_sub1_bold_task-fa_20vol.nii.gz"
    if real.exists():
        img = nb.load(real)
        vol = np.asarray(img.dataobj[..., 0], dtype=np.float32)
        out = np.zeros(SHAPE, np.float32)
        out[:, :, 1:34] = vol[:, :, :33]
        aff = img.affine.copy()
        aff[:3, 3] -= aff[:3, 2]  # one padding slice below
        return out, aff, "real XA30 EPI volume (64x64x33 padded to 36 slices)"
    aff = np.diag([3.4, 3.4, 3.6, 1.0])
    aff[:3, 3] = -aff[:3, :3] @ ((np.asarray(SHAPE) - 1) / 2.0)
    ijk = np.indices(SHAPE).reshape(3, -1).T
    pts = ijk @ aff[:3, :3].T + aff[:3, 3]
    r = np.sqrt(((pts / np.array([65.0, 80.0, 55.0])) ** 2).sum(axis=1))
    vol = 800.0 / (1.0 + np.exp((r - 1.0) / 0.04)) + 300.0 * np.cos(pts[:, 1] / 9.0) * (r < 0.9)
    return vol.reshape(SHAPE).astype(np.float32), aff, "analytic head phantom"


def make_run(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(data (X,Y,Z,T), affine, true params (T,6), description)."""
    rng = np.random.default_rng(seed)
    base, aff, kind = _base_volume()
    steps = rng.normal(size=(N_VOL, 6)) * np.array([0.03] * 3 + [0.0006] * 3)
    params = np.cumsum(steps, axis=0)
    params -= params[0]
    centre = rotation_center(SHAPE, aff)
    moving = volume_to_sitk(base, aff)
    data = np.empty((*SHAPE, N_VOL), np.float32)
    for t in range(N_VOL):
        m = rigid_matrix(params[t], centre)
        inv = np.linalg.inv(m)  # volume t at q shows the base at M^-1 q
        tfm = sitk.AffineTransform(3)
        tfm.SetMatrix(tuple(inv[:3, :3].ravel()))
        tfm.SetTranslation(tuple(inv[:3, 3]))
        img = sitk.Resample(moving, moving, tfm, sitk.sitkBSpline, 0.0)
        data[..., t] = sitk.GetArrayFromImage(img).T
    data *= (1.0 + 0.01 * rng.normal(size=N_VOL)).astype(np.float32)
    data += rng.normal(0.0, 10.0, data.shape).astype(np.float32)
    return np.maximum(data, 0.0), aff, params, kind


def _errors(est: np.ndarray, truth: np.ndarray) -> str:
    err = est - truth
    return (f"max |err| {np.abs(err[:, :3]).max():.4f} mm, "
            f"{np.degrees(np.abs(err[:, 3:]).max()):.4f} deg; "
            f"RMS {np.sqrt((err[:, :3] ** 2).mean()):.4f} mm, "
            f"{np.degrees(np.sqrt((err[:, 3:] ** 2).mean())):.4f} deg")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-volumes", type=int, default=24)
    args = parser.parse_args()
    print(f"python {platform.python_version()}, nproc {os.cpu_count()}, {platform.processor()}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
          f"load average {os.getloadavg()[0]:.1f}")
    t0 = time.perf_counter()
    data, aff, truth, kind = make_run()
    print(f"input: {kind}, {data.shape}, generated in {time.perf_counter() - t0:.1f} s")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sub-01_task-rest_bold.nii.gz"
        nb.save(nb.Nifti1Image(data, aff), path)
        t0, c0 = time.perf_counter(), time.process_time()
        iqms = run_qc_func(path, {"RepetitionTime": 2.0}, "sub-01", QCConfig(), Path(tmp) / "out")
        stage_s, stage_cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"run_qc_func (whole stage incl. I/O): {stage_s:.1f} s wall, {stage_cpu:.1f} s CPU "
          f"per run (target < 60 s: {'met' if stage_cpu < 60 else 'NOT met'} on CPU time, "
          f"{stage_cpu / 60:.2f} x target)")
    fd_true = framewise_displacement(truth, 50.0).mean()
    print(f"  fd_mean {iqms['fd_mean']:.4f} (truth {fd_true:.4f})")

    t0, c0 = time.perf_counter(), time.process_time()
    _, est = realign_series(data, aff, threads=1)
    hmc_s, hmc_cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"HMC Gauss-Newton, all {N_VOL} volumes: {hmc_s:.1f} s wall, {hmc_cpu:.1f} s CPU "
          f"({hmc_cpu / N_VOL * 1e3:.0f} ms/vol CPU); {_errors(est, truth)}")
    nb_vol = max(2, min(args.baseline_volumes, N_VOL))
    c0 = time.process_time()
    _, est_b = realign_series(data[..., :nb_vol], aff, threads=1, method="sitk")
    base_s = time.process_time() - c0
    c0 = time.process_time()
    realign_series(data[..., :nb_vol], aff, threads=1)
    ours_s = time.process_time() - c0
    print(f"baseline SimpleITK ImageRegistrationMethod, first {nb_vol} volumes: "
          f"{base_s:.1f} s CPU "
          f"({base_s / nb_vol * 1e3:.0f} ms/vol); {_errors(est_b, truth[:nb_vol])}")
    print(f"ours on the same {nb_vol} volumes: {ours_s:.1f} s CPU; "
          f"speed-up baseline/ours = {base_s / ours_s:.1f}x")


if __name__ == "__main__":
    main()
