"""CPU cost and accuracy of the surface placement: non-linear + refinement vs affine-only.

Usage::

    PYTHONPATH=. OMP_NUM_THREADS=1 ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=1 \\
        python benchmarks/bench_anatomy.py [--out FILE]

For one generated 1 mm subject (``generate_study(..., voxel_size=1, modalities=("anat",))``)
and, when present, the 2 mm volunteer of ``../shared/data``: the subject's anatomical
reference as the pipeline builds it (``anat.reference.build_anatomy``: N4 + EM posteriors,
not timed), then in the same process

* affine-only (today's route): ``metrics.spaces.t1w_to_mni`` (atlas head registration,
  12 dof) and the S1200 midthickness mapped by its inverse;
* new: ``normalize_to_standard`` (ANTs SyN started from that affine, as ``isyb run`` starts
  it from the atlas registration, + cached bridge) + ``place_surfaces`` +
  ``refine_surfaces``;

reporting CPU seconds (``time.process_time``), their ratio and the mean GM posterior at the
cortical midthickness vertices. The bridge is built beforehand (one-off, cached).
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


def _segment(path: Path):
    """The pipeline's anatomical reference (N4 + EM posteriors, brain mask), not timed."""
    from isyb_dask.anat.reference import build_anatomy
    from isyb_dask.atlas import get_reference_atlas
    from isyb_dask.config import RunConfig

    an = build_anatomy(path, "sub-bench", get_reference_atlas(), RunConfig(), threads=1)
    img = nb.Nifti1Image(np.asarray(an.canonical.dataobj, dtype=np.float32),
                         an.canonical.affine)
    n4 = nb.Nifti1Image(np.asarray(an.n4, dtype=np.float32), an.canonical.affine)
    from isyb_dask.anat.placement import refinement_maps

    return img, n4, an.brain_mask, dict(an.posteriors), refinement_maps(an)


def bench(path: Path, label: str) -> dict:
    from isyb_dask.anat.normalize import normalize_to_standard
    from isyb_dask.anat.surfaces import mean_at_vertices, place_surfaces, refine_surfaces
    from isyb_dask.atlas import get_reference_atlas
    from isyb_dask.config import RunConfig
    from isyb_dask.metrics.fslr import load_fslr32k
    from isyb_dask.metrics.spaces import t1w_to_mni

    fslr = load_fslr32k()
    img, n4, brain, post, maps = _segment(path)
    atlas = get_reference_atlas()

    t0 = time.process_time()
    chain = t1w_to_mni(img, atlas, seed=1, threads=1)
    inv = np.linalg.inv(chain.t1w_to_mni)
    aff_surf = {h: {"midthickness": fslr.coords["midthickness"][fslr.hemi_slice(h)]
                    @ inv[:3, :3].T + inv[:3, 3]} for h in ("L", "R")}
    cpu_affine = time.process_time() - t0

    t0 = time.process_time()
    # started from the affine chain above, as isyb run starts it from the atlas registration
    norm = normalize_to_standard(n4, brain, post, seed=RunConfig().deface.seed, threads=1,
                                 initial=chain.t1w_to_mni)
    t1 = time.process_time()
    placed = place_surfaces(norm, fslr)
    t2 = time.process_time()
    refined = refine_surfaces(placed, fslr, maps, n4.affine)  # the maps isyb run follows
    t3 = time.process_time()

    def gm(s):
        return mean_at_vertices(post["gm"], n4.affine, s, "midthickness", fslr.cortex)

    return {
        "label": label, "shape": img.shape, "cpu_affine": cpu_affine,
        "cpu_norm": t1 - t0, "cpu_place": t2 - t1, "cpu_refine": t3 - t2, "cpu_new": t3 - t0,
        "gm_affine": gm(aff_surf), "gm_syn": gm(placed), "gm_refined": gm(refined),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=None,
                    help="also write the table to this file (results_anatomy.md holds more "
                         "sections than this table: paste, do not overwrite)")
    args = ap.parse_args()
    from isyb_dask.anat.bridge import get_bridge
    from isyb_dask.synth.cohort import generate_study

    t0 = time.process_time()
    bridge = get_bridge()
    cpu_bridge = time.process_time() - t0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        bids = generate_study(Path(tmp) / "bids", 1, "chinese", seed=3, voxel_size=1.0,
                              modalities=("anat",))
        rows.append(bench(next(bids.rglob("*_T1w.nii.gz")), "generated sub-0001, 1 mm"))
    default = Path(__file__).resolve().parents[2] / "shared" / "data"
    shared = Path(os.environ.get("ISYB_SHARED_DATA", default))
    vol = shared / "heads" / "xa30_sub1_T1w_tfl_2mm.nii.gz"
    if vol.exists():
        rows.append(bench(vol, "XA30 volunteer, 2 mm"))
    lines = [
        "# Anatomy: non-linear normalisation + surface placement/refinement (issue 11)",
        "",
        "Command: `PYTHONPATH=. OMP_NUM_THREADS=1 ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=1 "
        "python benchmarks/bench_anatomy.py`",
        f"Machine: `nproc` = {os.cpu_count()}, {platform.processor() or platform.machine()}, "
        f"load average {os.getloadavg()[0]:.1f} (shared); CPU seconds by `time.process_time`, "
        "one thread.",
        "",
        f"One-off bridge (2009aSym -> NLin6Asym, cached): {cpu_bridge:.1f} s CPU in this run "
        "(0 when already cached); accuracy: mean 2009a GM prior at the S1200 midthickness "
        f"{bridge.accuracy['before']:.3f} -> {bridge.accuracy['after']:.3f}.",
        "",
        "| subject | affine-only CPU s | SyN CPU s | place CPU s | refine CPU s | new total CPU s "
        "| ratio new/affine | GM@mid affine | GM@mid SyN | GM@mid refined |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['label']} {r['shape']} | {r['cpu_affine']:.1f} | {r['cpu_norm']:.1f} | "
            f"{r['cpu_place']:.2f} | {r['cpu_refine']:.2f} | {r['cpu_new']:.1f} | "
            f"{r['cpu_new'] / r['cpu_affine']:.1f}x | {r['gm_affine']:.3f} | {r['gm_syn']:.3f} | "
            f"{r['gm_refined']:.3f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
