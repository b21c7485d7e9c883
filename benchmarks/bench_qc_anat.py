"""Benchmark: anatomical QC seconds per subject at the paper's T1w geometry (1 mm, 256x256x188).

The subject is the real volunteer (``../shared/data/heads/xa30_sub1_T1w_tfl_2mm.nii.gz``)
upsampled to 1 mm (cubic spline) with fresh Rician-like noise and placed on a 256x256x188
grid, so masks, registration and segmentation see a realistic head. Run on one core:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_qc_anat.py [--repeats 2]

Prints the wall and CPU (process) time of :func:`isyb_dask.qc.anat_stage.run_qc_anat` (masks, registration,
INU, segmentation, IQMs and derivative files) with its per-step breakdown, the ratio to the
20 s target, and the ratio of MRIQC's way of computing the weighted summary statistics
(statsmodels ``DescrStatsW`` per region, as ``mriqc.qc.anatomical.summary_stats``) to ours on
the same data and PVMs (the baseline run in the same process).
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

TARGET_S = 20.0
SHARED = Path(
    os.environ.get("ISYB_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def make_subject(out: Path, noise_seed: int = 0) -> Path:
    """Write a 1 mm 256x256x188 T1w made from the real 2 mm volunteer (Rician noise seeded)."""
    src = nb.as_closest_canonical(nb.load(SHARED / "heads" / "xa30_sub1_T1w_tfl_2mm.nii.gz"))
    data = np.asarray(src.dataobj, dtype=np.float32)
    up = ndi.zoom(data, 2.0, order=3, mode="nearest")  # 192 x 256 x 256 at 1 mm
    up = np.clip(up, 0, None)
    grid = np.zeros((256, 256, 188), np.float32)
    x0 = (256 - up.shape[0]) // 2
    grid[x0 : x0 + up.shape[0], :, :] = up[:, :256, up.shape[2] - 188 :]
    rng = np.random.default_rng(noise_seed)
    noise = 0.01 * float(np.percentile(data, 99))
    grid = np.hypot(grid + rng.normal(0, noise, grid.shape), rng.normal(0, noise, grid.shape))
    aff = src.affine.copy()
    aff[:3, :3] = src.affine[:3, :3] / 2.0
    # keep the physical position of the voxel (x0, 0, z_off) = source voxel (0, 0, z_off/2)
    shift = aff[:3, :3] @ np.array([-x0, 0.0, up.shape[2] - 188])
    aff[:3, 3] = src.affine[:3, 3] + shift - aff[:3, :3] @ np.array([0.25, 0.25, 0.25]) * 2
    path = out / "sub-bench_T1w.nii.gz"
    nb.save(nb.Nifti1Image(grid.astype(np.int16), aff), path)
    return path


def mriqc_style_stats(data: np.ndarray, pvms: dict[str, np.ndarray]) -> dict:
    """MRIQC's summary statistics via statsmodels DescrStatsW (the baseline)."""
    from scipy.stats import kurtosis
    from statsmodels.robust.scale import mad
    from statsmodels.stats.weightstats import DescrStatsW

    out = {}
    for label, prob in pvms.items():
        w = DescrStatsW(
            np.round(data.reshape(-1), 0), weights=np.round(prob.astype(np.float32).reshape(-1), 3)
        )
        p05, med, p95 = w.quantile(np.array([0.05, 0.5, 0.95]), return_pandas=False)
        thr = data[prob > 0.5 * prob.max()]
        out[label] = {
            "mean": w.mean,
            "median": med,
            "p05": p05,
            "p95": p95,
            "stdv": w.std,
            "k": kurtosis(thr),
            "mad": mad(thr, center=med),
            "n": prob.sum(),
        }
    return out


def main() -> None:
    """Run the benchmark and print the results."""
    from isyb_dask.atlas import get_reference_atlas
    from isyb_dask.qc.anat_stage import compute_anat_qc, run_qc_anat
    from isyb_dask.qc.summary import summary_stats_regions
    from isyb_dask.qc.config import QCConfig
    from isyb_dask.anat.reference import build_anatomy

    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    atlas = get_reference_atlas()
    cfg = QCConfig()
    print(
        f"nproc={os.cpu_count()} cpu={platform.processor() or platform.machine()} "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t1w = make_subject(tmp)
        print(f"subject: {nb.load(t1w).shape} @ {nb.load(t1w).header.get_zooms()} mm")
        times, cpus = [], []
        for i in range(args.repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            run_qc_anat(t1w, "sub-bench", cfg, tmp / f"out{i}", atlas)
            times.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
        best, best_cpu = min(times), min(cpus)
        print(
            f"run_qc_anat per subject: wall best {best:.2f} s "
            f"(runs {', '.join(f'{t:.2f}' for t in times)}), "
            f"CPU best {best_cpu:.2f} s (runs {', '.join(f'{t:.2f}' for t in cpus)})"
        )
        print(
            f"ratio to the {TARGET_S:.0f} s target: wall {best / TARGET_S:.2f}, "
            f"CPU {best_cpu / TARGET_S:.2f} (CPU time = one core when the machine is shared)"
        )
        anatomy = build_anatomy(t1w, "sub-bench", atlas, cfg, threads=cfg.threads)
        img = anatomy.canonical
        _, maps, info = compute_anat_qc(anatomy, cfg, atlas)
        print("step seconds:", {k: round(v, 2) for k, v in info["seconds"].items()})
        data = np.asarray(img.dataobj, dtype=np.float32)
        pvms = {
            "bg": maps["air"].astype(np.uint8),
            "csf": anatomy.posteriors["csf"],
            "gm": anatomy.posteriors["gm"],
            "wm": anatomy.posteriors["wm"],
        }
        t0 = time.perf_counter()
        ours = summary_stats_regions(data, pvms, decimals=None)
        t_ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        base = mriqc_style_stats(data, pvms)
        t_base = time.perf_counter() - t0
        same = all(
            np.isclose(ours[r]["median"], base[r]["median"])
            and np.isclose(ours[r]["stdv"], base[r]["stdv"], rtol=1e-9)
            for r in pvms
        )
        print(
            f"summary stats: ours {t_ours:.2f} s, MRIQC-style (statsmodels) {t_base:.2f} s, "
            f"speed-up {t_base / t_ours:.1f}x, identical medians/SDs: {same}"
        )


if __name__ == "__main__":
    main()
