"""CPU of the anatomy (+ its SyN) and of the BOLD reference: this tree against a baseline commit.

Usage::

    PYTHONPATH=. OMP_NUM_THREADS=1 ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=1 \\
        python benchmarks/bench_anatomy_speed.py [--baseline REV] [--out results_anatomy_speed.md]

One generated 1 mm subject (``generate_study(..., voxel_size=1, bold_volumes=240, seed=3)``,
the round's speed-budget subject) is made once; then, in the same run and one after the
other, each code tree (the ``--baseline`` commit, default ``main``, the branch's base,
checked out in a temporary ``git worktree``, and this working tree) runs in a fresh
subprocess with one thread:

* ``build_anatomy`` (atlas registration, N4, EM, head mask) + ``normalize_to_standard``
  (ANTs SyN, field composition) — the ANTs import is done before timing;
* ``build_bold_reference`` (240-volume head-motion correction, mean, automask, FD).

It reports CPU seconds (``time.process_time`` in the child), the ratios, and the outputs
that must not get worse: mean GM posterior at the refined midthickness vertices, motion
parameters and FD (both trees, and the synthetic truth).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

CHILD = r'''
import json, sys, time, warnings
warnings.filterwarnings("ignore")
from pathlib import Path
import numpy as np, nibabel as nb
import ants  # noqa: F401  (import cost left out of the timing)
from isyb_dask.atlas import get_reference_atlas
from isyb_dask.config import RunConfig
from isyb_dask.anat.reference import build_anatomy
from isyb_dask.anat.normalize import normalize_to_standard
from isyb_dask.anat.bridge import get_bridge
from isyb_dask.bold.reference import build_bold_reference
from isyb_dask.anat.surfaces import mean_at_vertices, place_surfaces, refine_surfaces
from isyb_dask.metrics.fslr import load_fslr32k
bids, out = Path(sys.argv[1]), Path(sys.argv[2])
t1 = next(bids.rglob("*_T1w.nii.gz")); bold = next(bids.rglob("*_bold.nii.gz"))
meta = json.loads(bold.with_name(bold.name.replace(".nii.gz", ".json")).read_text())
cfg = RunConfig(); atlas = get_reference_atlas(); get_bridge(); fslr = load_fslr32k()
t0 = time.process_time()
a = build_anatomy(t1, "sub-0001", atlas, cfg, threads=1)
t1c = time.process_time()
n4 = nb.Nifti1Image(np.asarray(a.n4, np.float32), a.canonical.affine)
norm = normalize_to_standard(n4, a.brain_mask, a.posteriors, seed=cfg.deface.seed, threads=1,
                             initial=atlas.head_to_mni_affine() @ a.t1w_to_atlas)  # as isyb run
t2 = time.process_time()
ref = build_bold_reference(bold, meta, cfg.qc, threads=1)
t3 = time.process_time()
try:  # each tree refines on the maps its own isyb run follows
    from isyb_dask.anat.placement import refinement_maps
    maps = refinement_maps(a)
except ImportError:  # trees before the partial-volume fractions
    maps = a.posteriors
refined = refine_surfaces(place_surfaces(norm, fslr), fslr, maps, a.canonical.affine)
gm = mean_at_vertices(a.posteriors["gm"], a.canonical.affine, refined, "midthickness", fslr.cortex)
np.save(out / "params.npy", ref.params)
json.dump({"anatomy": t1c - t0, "syn": t2 - t1c, "bold": t3 - t2, "gm_mid": float(gm),
           "fd_mean": ref.fd_mean, "dummy": ref.dummy}, open(out / "result.json", "w"))
'''


def _run(code: Path, bids: Path, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(code), OMP_NUM_THREADS="1",
               ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", CHILD, str(bids), str(out)], cwd=code, env=env,
                          capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    res = json.loads((out / "result.json").read_text())
    res["params"] = np.load(out / "params.npy")
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", default="main")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("results_anatomy_speed.md"))
    args = ap.parse_args()
    from isyb_dask.qc.motion import framewise_displacement
    from isyb_dask.synth.cohort import generate_study

    rev = subprocess.run(["git", "rev-parse", "--short", args.baseline], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="isyb-bench-") as tmp:
        tmp = Path(tmp)
        bids = generate_study(tmp / "bids", 1, "chinese", seed=3, voxel_size=1.0,
                              bold_volumes=240, modalities=("anat", "func"))
        base_tree = tmp / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", str(base_tree), rev], cwd=ROOT,
                       check=True, capture_output=True)
        try:
            base = _run(base_tree, bids, tmp / "out_base")
            cur = _run(ROOT, bids, tmp / "out_cur")
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base_tree)], cwd=ROOT,
                           capture_output=True)
        truth_tsv = next(bids.rglob("*desc-motion_timeseries.tsv"))
        truth = np.loadtxt(truth_tsv, skiprows=1)[base["dummy"]:, :6]
    fd_truth = float(np.mean(framewise_displacement(truth, radius=50.0)))
    dp = np.abs(cur["params"] - base["params"])

    def rms(p: np.ndarray) -> tuple[float, float]:
        d = (p - truth) ** 2
        return float(np.sqrt(d[:, :3].mean())), float(np.sqrt(d[:, 3:].mean()))

    tot_b = base["anatomy"] + base["syn"] + base["bold"]
    tot_c = cur["anatomy"] + cur["syn"] + cur["bold"]
    lines = [
        "# Anatomy + BOLD reference CPU: this tree against the branch's base (issue 11 budget)",
        "",
        "Command: `PYTHONPATH=. OMP_NUM_THREADS=1 ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=1 "
        "python benchmarks/bench_anatomy_speed.py`",
        f"Machine: `nproc` = {os.cpu_count()}, {platform.machine()}, load average "
        f"{os.getloadavg()[0]:.1f} (shared); CPU seconds (`time.process_time`), one thread, "
        "each tree in its own subprocess, one after the other on the same generated 1 mm "
        "subject (seed 3, 240 BOLD volumes).",
        "",
        "| step | baseline " + rev + " CPU s | this tree CPU s | ratio |",
        "|---|---|---|---|",
    ]
    for key, label in (("anatomy", "build_anatomy (registration, N4, EM, head mask)"),
                       ("syn", "normalize_to_standard (ANTs SyN + fields)"),
                       ("bold", "build_bold_reference (HMC 240 vols, mean, mask, FD)")):
        lines.append(f"| {label} | {base[key]:.1f} | {cur[key]:.1f} | {cur[key] / base[key]:.2f} |")
    lines += [f"| **total** | {tot_b:.1f} | {tot_c:.1f} | {tot_c / tot_b:.2f} |", "",
              "| output | baseline | this tree |", "|---|---|---|",
              f"| mean GM posterior at the refined midthickness | {base['gm_mid']:.4f} | "
              f"{cur['gm_mid']:.4f} |",
              f"| FD mean (mm; truth {fd_truth:.4f}) | {base['fd_mean']:.5f} | "
              f"{cur['fd_mean']:.5f} |",
              "| motion RMS error vs truth (trans mm / rot rad) | "
              "{:.4f} / {:.2e} | {:.4f} / {:.2e} |".format(*rms(base["params"]), *rms(cur["params"])),
              "", f"Largest motion-parameter difference between the trees: "
              f"{dp[:, :3].max():.2e} mm, {dp[:, 3:].max():.2e} rad.", ""]
    text = "\n".join(lines)
    print(text)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
