"""CPU seconds of CT + SA + LGI per subject, and Laplace thickness vs ANTs DiReCT.

Usage::

    OMP_NUM_THREADS=1 ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=1 PYTHONPATH=. \\
        python benchmarks/bench_morphometry.py [--kk-iterations 10] [--heads 2mm 1mm]

Heads: ``2mm`` = the real volunteer (``../shared/data/heads/xa30_sub1_T1w_tfl_2mm.nii.gz``,
skipped when absent), ``1mm`` = a generated 1 mm subject (``isyb_dask.synth``). Posteriors
come from the metrics stage's segmentation (N4 + GMM with atlas priors, not timed). For each
head the script prints the CPU time (``time.process_time``, one thread) of the Laplace
thickness, of SA, of LGI, and of ``ants.kelly_kapowski`` (DiReCT) run in the same process
with reduced iterations (the baseline; ``--kk-iterations 0`` skips it), with the ratio
DiReCT / Laplace and both medians.

Surfaces: ``--surfaces refined`` (default) = the pipeline's, fsLR 32k placed in T1w space by
the SyN normalisation and refined to the subject's boundaries (posteriors then come from
:func:`isyb_dask.anat.reference.build_anatomy`, as in the pipeline); ``--surfaces affine`` =
the S1200 surfaces placed by the T1w -> MNI affine (the route before issue 11).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

VOLUNTEER = Path(os.environ.get("ISYB_SHARED_DATA", "/work/shared/data")) / "heads"


def posteriors_of(t1w: Path):
    """(posteriors (3,X,Y,Z), affine, t1w->MNI) of a T1w via the metrics stage's code."""
    from isyb_dask.atlas import get_reference_atlas
    from isyb_dask.io.nifti import load_image
    from isyb_dask.metrics import gmv
    from isyb_dask.metrics.spaces import t1w_to_mni
    from isyb_dask.registration import to_canonical

    img = to_canonical(load_image(t1w, ndim=3))
    chain = t1w_to_mni(img, get_reference_atlas(), seed=0, threads=1)
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    _, info = gmv.gm_probability(
        np.asarray(img.dataobj, dtype=np.float32), zooms, chain.brain, chain.priors
    )
    return info["posteriors"], img.affine, chain.t1w_to_mni


def refined_inputs(t1w: Path):
    """(posteriors (3,X,Y,Z), affine, surfaces) through the pipeline's anatomy route."""
    import nibabel as nb

    from isyb_dask.anat.placement import refinement_maps
    from isyb_dask.anat.normalize import normalize_to_standard
    from isyb_dask.anat.reference import build_anatomy
    from isyb_dask.anat.surfaces import place_surfaces, refine_surfaces
    from isyb_dask.atlas import get_reference_atlas
    from isyb_dask.config import RunConfig
    from isyb_dask.metrics.fslr import load_fslr32k

    cfg, fs = RunConfig(), load_fslr32k()
    atlas = get_reference_atlas()
    an = build_anatomy(t1w, "sub-bench", atlas, cfg, threads=1)
    aff = an.canonical.affine
    n4 = nb.Nifti1Image(np.asarray(an.n4, dtype=np.float32), aff)
    norm = normalize_to_standard(n4, an.brain_mask, an.posteriors, seed=cfg.deface.seed,
                                 threads=1,  # started from the atlas registration, as isyb run
                                 initial=atlas.head_to_mni_affine() @ an.t1w_to_atlas)
    surfaces = refine_surfaces(place_surfaces(norm, fs), fs, refinement_maps(an), aff)
    post = np.stack([np.asarray(an.posteriors[k], dtype=np.float32)
                     for k in ("csf", "gm", "wm")])
    return post, aff, surfaces


def kelly_kapowski(post: np.ndarray, affine: np.ndarray, iterations: int) -> np.ndarray:
    """DiReCT thickness (antspyx) of the same posteriors; labels 1 CSF, 2 GM, 3 WM."""
    import ants

    spacing = tuple(float(z) for z in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))
    seg = (np.argmax(post, axis=0) + 1) * (post.sum(axis=0) > 0.5)
    mk = lambda a: ants.from_numpy(np.asarray(a, dtype=np.float32), spacing=spacing)  # noqa: E731
    out = ants.kelly_kapowski(
        s=mk(seg), g=mk(post[1]), w=mk(post[2]), its=iterations, r=0.025, m=1.5
    )
    return out.numpy()


def run(label: str, t1w: Path, kk_iterations: int, surfaces_kind: str = "refined") -> dict:
    from isyb_dask.metrics.fslr import load_fslr32k
    from isyb_dask.metrics.morphometry import place_fslr_affine, surface_morphometry
    from isyb_dask.metrics.thickness import laplace_thickness

    fs = load_fslr32k()
    if surfaces_kind == "refined":
        post, affine, surfaces = refined_inputs(t1w)
    else:
        post, affine, t2m = posteriors_of(t1w)
        surfaces = place_fslr_affine(t2m, fs)
    zooms = tuple(float(z) for z in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))
    t0 = time.process_time()
    lap = laplace_thickness(post[1], post[2], zooms)
    t_lap = time.process_time() - t0
    res = surface_morphometry(post, affine, surfaces, fs)
    cpu = res["info"]["cpu_s"]
    t0 = time.process_time()
    kk = kelly_kapowski(post, affine, kk_iterations) if kk_iterations > 0 else None
    t_kk = time.process_time() - t0 if kk is not None else float("nan")
    gm = lap.gm
    row = {
        "head": label,
        "shape": post.shape[1:],
        "laplace_s": t_lap,
        "ct_s": cpu["CT"],
        "sa_s": cpu["SA"],
        "lgi_s": cpu["LGI"],
        "total_s": sum(cpu.values()),
        "kk_s": t_kk,
        "ratio": t_kk / t_lap,
        "laplace_median_gm": float(np.median(lap.thickness[gm])),
        "kk_median_gm": (float(np.median(kk[gm & (kk > 0)]))
                         if kk is not None and (gm & (kk > 0)).any() else np.nan),
        "ct_median_vertex": res["info"]["ct_median_vertex_mm"],
        "sa_total_cm2": res["info"]["sa_total_with_medial_wall_mm2"] / 100,
        "lgi_mean": res["info"]["lgi_mean"],
    }
    print(
        f"{label}: shape {row['shape']}  Laplace {t_lap:6.1f} s  DiReCT(its={kk_iterations}) "
        f"{t_kk:7.1f} s  ratio {row['ratio']:5.1f}x | CT+SA+LGI {row['total_s']:5.1f} s "
        f"(CT {cpu['CT']:.1f}, SA {cpu['SA']:.2f}, LGI {cpu['LGI']:.1f}) | median CT GM voxels "
        f"Laplace {row['laplace_median_gm']:.2f} mm, DiReCT {row['kk_median_gm']:.2f} mm; "
        f"vertex CT {row['ct_median_vertex']:.2f} mm; SA {row['sa_total_cm2']:.0f} cm2; "
        f"LGI {row['lgi_mean']:.2f}",
        flush=True,
    )
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kk-iterations", type=int, default=10)
    ap.add_argument("--heads", nargs="+", default=["2mm", "1mm"])
    ap.add_argument("--surfaces", choices=("refined", "affine"), default="refined")
    args = ap.parse_args()
    os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")
    for head in args.heads:
        if head == "2mm":
            path = VOLUNTEER / "xa30_sub1_T1w_tfl_2mm.nii.gz"
            if not path.exists():
                print("2mm: volunteer head not available, skipped")
                continue
            run("2mm volunteer", path, args.kk_iterations, args.surfaces)
        else:
            from isyb_dask.synth.cohort import generate_study

            with tempfile.TemporaryDirectory() as tmp:
                generate_study(Path(tmp), 1, voxel_size=1.0, modalities=("anat",), seed=3)
                run("1mm generated", Path(tmp) / "sub-0001" / "anat" / "sub-0001_T1w.nii.gz",
                    args.kk_iterations, args.surfaces)


if __name__ == "__main__":
    main()
