"""Speed of the volumetric metric functions against per-voxel baselines run in this process.

Usage::

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/bench_metrics_volume.py [--quick]

Prints, for each metric, the time of the vectorised implementation, the time of a baseline
(a per-voxel Python loop doing the same computation, or dipy for the tensor fit) and the
ratio baseline / ours. Baselines that would take long run on a subset of voxels and are
extrapolated linearly (stated in the output).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from isyb_dask.metrics.alff import alff_falff, band_bins
from isyb_dask.metrics.dti import fit_tensor, read_bvals_bvecs
from isyb_dask.metrics.func_preproc import despike, regress_out, slice_time_correct
from isyb_dask.metrics.reho import kendall_w, reho_volume
from isyb_dask.metrics.vmhc import vmhc_volume


def _timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def _report(name: str, ours: float, base: float, note: str = "") -> None:
    print(f"{name:<28s} ours {ours:8.3f} s   baseline {base:8.3f} s   ratio {base / ours:7.1f}x"
          f"  {note}")


def bench_alff(rng: np.random.Generator, shape: tuple[int, ...], n_t: int) -> None:
    data = rng.normal(size=shape + (n_t,)).astype(np.float32)
    _, t_ours = _timed(alff_falff, data, 2.0)
    flat = data.reshape(-1, n_t)
    n_sub = min(flat.shape[0], 3000)
    bins = band_bins(n_t, 2.0)

    def loop():
        for v in range(n_sub):
            y = flat[v] - flat[v].mean()
            amp = np.abs(np.fft.fft(y))[: (n_t + 1) // 2] / n_t
            _ = amp[bins].sum() / amp.sum()

    _, t_base = _timed(loop)
    _report("ALFF/fALFF", t_ours, t_base * flat.shape[0] / n_sub,
            f"(loop over {n_sub} voxels, extrapolated to {flat.shape[0]})")


def bench_reho(rng: np.random.Generator, shape: tuple[int, ...], n_t: int) -> None:
    data = rng.normal(size=shape + (n_t,)).astype(np.float32)
    _, t_ours = _timed(reho_volume, data)
    inner = [(x, y, z) for x in range(1, shape[0] - 1) for y in range(1, shape[1] - 1)
             for z in range(1, shape[2] - 1)]
    n_sub = min(len(inner), 400)

    def loop():
        for x, y, z in inner[:n_sub]:
            kendall_w(data[x - 1:x + 2, y - 1:y + 2, z - 1:z + 2].reshape(27, n_t))

    _, t_base = _timed(loop)
    _report("ReHo (27 voxels)", t_ours, t_base * len(inner) / n_sub,
            f"(loop over {n_sub} voxels, extrapolated to {len(inner)})")


def bench_vmhc(rng: np.random.Generator, shape: tuple[int, ...], n_t: int) -> None:
    data = rng.normal(size=shape + (n_t,)).astype(np.float32)
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    aff[0, 3] = -(shape[0] - 1)
    _, t_ours = _timed(vmhc_volume, data, aff)
    flat = data.reshape(shape[0], -1, n_t)
    n_sub = min(flat.shape[1], 200)

    def loop():
        for x in range(shape[0]):
            for j in range(n_sub):
                np.corrcoef(flat[x, j], flat[shape[0] - 1 - x, j])

    _, t_base = _timed(loop)
    _report("VMHC (volume)", t_ours, t_base * flat.shape[1] / n_sub,
            f"(np.corrcoef loop over {n_sub * shape[0]} voxels, extrapolated)")


def bench_dti(rng: np.random.Generator) -> None:
    data_dir = Path(os.environ.get("ISYB_SHARED_DATA",
                                   Path(__file__).resolve().parents[2] / "shared" / "data"))
    base = data_dir / "dwi" / "xa30_sub1_dwi_b2500_PA"
    try:
        import nibabel as nb
        from dipy.core.gradients import gradient_table
        from dipy.reconst.dti import TensorModel
    except ImportError:
        print("DTI: dipy not installed, skipped")
        return
    if base.with_suffix(".nii.gz").exists() or Path(f"{base}.nii.gz").exists():
        data = np.asanyarray(nb.load(f"{base}.nii.gz").dataobj).astype(np.float64)
        bvals, bvecs = read_bvals_bvecs(f"{base}.bval", f"{base}.bvec")
        label = "DTI WLS (xa30 72x72x39x21)"
    else:
        bvals = np.r_[0, np.full(30, 1000.0)]
        g = rng.normal(size=(30, 3))
        bvecs = np.vstack([[0, 0, 0], g / np.linalg.norm(g, axis=1, keepdims=True)])
        data = 1000 * np.exp(-bvals * 8e-4) * (1 + 0.02 * rng.normal(size=(40, 40, 30, 31)))
        label = "DTI WLS (synthetic)"
    _, t_ours = _timed(fit_tensor, data, bvals, bvecs)
    model = TensorModel(gradient_table(bvals, bvecs=bvecs), fit_method="WLS")
    _, t_base = _timed(model.fit, data)
    _report(label, t_ours, t_base, "(baseline: dipy TensorModel WLS)")


def bench_preproc(rng: np.random.Generator, shape: tuple[int, ...], n_t: int) -> None:
    data = (1000 + rng.normal(size=shape + (n_t,))).astype(np.float32)
    mask = np.ones(shape, bool)
    _, t_ds = _timed(despike, data, mask=mask)
    _, t_st = _timed(slice_time_correct, data, 2.0, np.linspace(0, 1.9, shape[2]))
    conf = rng.normal(size=(n_t, 30))
    _, t_rg = _timed(regress_out, data, mask, conf)
    print(f"preproc steps {shape + (n_t,)}: despike {t_ds:.2f} s, slice timing {t_st:.2f} s, "
          f"regression (33 regressors) {t_rg:.2f} s (no baseline; motion correction excluded)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller arrays")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    shape = (24, 24, 16) if args.quick else (64, 64, 36)
    n_t = 120 if args.quick else 200
    print(f"nproc={os.cpu_count()} OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')} "
          f"grid={shape} T={n_t}")
    bench_alff(rng, shape, n_t)
    bench_reho(rng, shape, n_t)
    bench_vmhc(rng, shape, n_t)
    bench_dti(rng)
    bench_preproc(rng, shape, n_t)


if __name__ == "__main__":
    main()
