"""Benchmark: CPU seconds of the whole T1w side of one subject, this tree vs a baseline commit.

The T1w side is deface (built-in template + 2 extra templates) + anatomical QC + the T1w part
of the surface metrics (registration chain, GM map, GMV). Each code tree runs in its own
subprocess (``PYTHONPATH`` = the tree) on the same subject; the CPU time of that process
(all threads) is measured after the reference atlas, templates and fsLR surfaces are loaded.

* baseline (before issue 11): ``run_deface`` -> ``run_qc_anat`` -> ``run_metrics``, each
  re-reading the T1w and registering the template head again (3x), N4 + EM twice;
* this tree: ``build_anatomy`` once (+ its derivatives) and, as ``isyb run`` does before the
  metrics, ``attach_standard_space`` (SyN to MNI152NLin6Asym, subject surfaces), then the
  stages with ``anatomy=`` (deface includes the face audit; metrics include CT/SA/LGI).

Usage (one core)::

    git worktree add /tmp/isyb-base d8c5e3a
    OMP_NUM_THREADS=1 ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=1 \\
        .venv/bin/python benchmarks/bench_t1w_side.py --baseline /tmp/isyb-base [--voxel 1] \\
        [--no-audit | --like-for-like] [--warm]

``--like-for-like`` runs this tree without the work that other issues added to the same
stages (the face audit, CT/SA/LGI), so both trees do the same work and the difference is the
redesign itself: one shared reference instead of three registrations and two N4 + EM, plus
the non-linear normalisation and the subject surfaces it adds. The voxel-resolution
``maskface`` of the deface issue cannot be switched off and stays in.

``--warm`` first runs another subject (the same head with other noise) through the same
worker process, untimed, and times the second: what every subject after a worker's first
costs in a run, when the template heads, atlas, bridge and imports are already loaded. Both
trees get the same warm-up.

The subject is the real 2 mm volunteer (``--voxel 2``) or the bench_qc_anat 1 mm head made
from it (``--voxel 1``, 256x256x188). Also printed: the largest IQM difference between
the trees and the deface NMI of each template (to show what changed).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _extra_templates(folder: Path) -> list[str]:
    import nibabel as nb
    import numpy as np

    from isyb_dask.atlas import builtin_head_paths

    head, _ = builtin_head_paths()
    img = nb.load(str(head))
    specs = []
    for name, dx in (("ShiftR", 6.0), ("ShiftA", -5.0)):
        aff = img.affine.copy()
        aff[0 if name == "ShiftR" else 1, 3] += dx
        path = folder / f"{name}.nii.gz"
        nb.save(nb.Nifti1Image(np.asarray(img.dataobj), aff, img.header), str(path))
        specs.append(f"{name}={path}")
    return specs


def _side(t1w: Path, out: Path, cfg, atlas, templates, surf) -> dict:
    """One subject's T1w side in this process; CPU seconds per step and the outputs to compare."""
    from isyb_dask.deface.stage import run_deface
    from isyb_dask.io.bids import SubjectInputs
    from isyb_dask.metrics.stage import run_metrics
    from isyb_dask.qc.anat_stage import run_qc_anat

    out.mkdir(parents=True, exist_ok=True)
    inp = SubjectInputs(subject="sub-bench", t1w=t1w)
    try:
        from isyb_dask.anat.derivatives import write_anatomy
        from isyb_dask.anat.reference import build_anatomy
    except ImportError:
        build_anatomy = None
    c0, t0 = time.process_time(), time.perf_counter()
    steps = {}
    anatomy = None
    kw: dict = {}
    if build_anatomy is not None:
        import inspect

        kw_grid = {}
        if "atlas_grid_head" in inspect.signature(build_anatomy).parameters:  # as isyb run
            from isyb_dask.deface.templates import grid_head_for

            kw_grid["atlas_grid_head"] = grid_head_for(templates, atlas.head)
        anatomy = build_anatomy(t1w, inp.subject, atlas, cfg, threads=1, **kw_grid)
        write_anatomy(anatomy, out)
        try:  # the non-linear normalisation and subject surfaces, as isyb run adds them
            from isyb_dask.anat.placement import attach_standard_space
        except ImportError:
            attach_standard_space = None
        if attach_standard_space is not None:
            seeded = "atlas" in inspect.signature(attach_standard_space).parameters
            attach_standard_space(anatomy, out, seed=cfg.deface.seed, threads=1,
                                  **({"atlas": atlas} if seeded else {}))
        kw = {"anatomy": anatomy}
        steps["anatomy"] = time.process_time() - c0
    c1 = time.process_time()
    dfc = run_deface(t1w, inp.subject, templates, cfg.deface, out, atlas, **kw)
    steps["deface"] = time.process_time() - c1
    c1 = time.process_time()
    iqms = run_qc_anat(t1w, inp.subject, cfg.qc, out, atlas,
                       exclude_masks=list(dfc["face_masks"].values()), **kw)
    steps["qc_anat"] = time.process_time() - c1
    c1 = time.process_time()
    res = run_metrics(inp, cfg.metrics, out, atlas, surf=surf, **kw)
    steps["metrics"] = time.process_time() - c1
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    return {
        "cpu": cpu, "wall": wall, "steps": steps, "iqms": iqms,
        "nmi": {k: v["nmi"] for k, v in dfc["templates"].items()},
        "surface_missing": sorted(res["missing"]),
    }


def worker(t1w: Path, out: Path, result: Path, audit: bool = True,
           warmup: Path | None = None, morphometry: bool = True) -> None:
    """Run the T1w side in this process (PYTHONPATH chooses the code tree).

    ``audit=False`` switches the deface stage's face audit off where the tree has the switch
    (``DefaceConfig.audit``), to compare like for like with a baseline that had no audit;
    ``morphometry=False`` likewise switches off CT/SA/LGI (``MetricsConfig.morphometry``),
    which the baseline did not compute either.
    With ``warmup``, that T1w (another subject) goes through first and is not timed: the
    measured subject then costs what every subject after the first costs in a worker of a
    run (run-level data such as template heads, the reference atlas and the NLin6Asym
    bridge are already read and cached by the process).
    """
    from isyb_dask.atlas import get_reference_atlas
    from isyb_dask.config import RunConfig
    from isyb_dask.deface.templates import resolve_templates
    from isyb_dask.metrics.fslr import load_fslr32k

    atlas = get_reference_atlas()
    cfg = RunConfig()
    if not audit and "audit" in {f.name for f in dataclasses.fields(cfg.deface)}:
        cfg = dataclasses.replace(cfg, deface=dataclasses.replace(cfg.deface, audit=False))
    if not morphometry and "morphometry" in {f.name for f in dataclasses.fields(cfg.metrics)}:
        cfg = dataclasses.replace(cfg, metrics=dataclasses.replace(cfg.metrics,
                                                                   morphometry=False))
    templates = resolve_templates(_extra_templates(out), None, out / "work")
    surf = load_fslr32k()
    if warmup is not None:
        _side(warmup, out / "warmup", cfg, atlas, templates, surf)
    result.write_text(json.dumps(_side(t1w, out / "measured", cfg, atlas, templates, surf)))


def run_tree(tree: Path, t1w: Path, tmp: Path, tag: str, audit: bool = True,
             warmup: Path | None = None, morphometry: bool = True) -> dict:
    out = tmp / tag
    out.mkdir()
    result = tmp / f"{tag}.json"
    env = dict(os.environ, PYTHONPATH=str(tree))
    subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", str(t1w),
                    str(out), str(result)] + ([] if audit else ["--no-audit"])
                   + ([] if morphometry else ["--no-morphometry"])
                   + ([] if warmup is None else ["--warmup", str(warmup)]),
                   check=True, env=env, cwd=str(tree))
    return json.loads(result.read_text())


def main() -> None:
    """Run both trees and print the comparison."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", type=Path, required=False)
    parser.add_argument("--voxel", type=float, default=1.0)
    parser.add_argument("--worker", nargs=3, type=Path)
    parser.add_argument("--warmup", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--warm", action="store_true",
                        help="time a second subject of the worker process (run-level data "
                             "already loaded), as every subject after the first in a run")
    parser.add_argument("--no-audit", action="store_true",
                        help="this tree without the deface stage's face audit")
    parser.add_argument("--like-for-like", action="store_true",
                        help="this tree doing only the baseline's work: no face audit and no "
                             "CT/SA/LGI (added by other issues), so the redesign itself "
                             "(shared reference + non-linear step + subject surfaces) is what "
                             "is compared")
    parser.add_argument("--no-morphometry", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker, audit=not args.no_audit, warmup=args.warmup,
               morphometry=not args.no_morphometry)
        return
    if args.like_for_like:
        args.no_audit, args.no_morphometry = True, True
    import nibabel as nb

    sys.path.insert(0, str(HERE))
    from bench_qc_anat import SHARED, make_subject

    tree = HERE.parent
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.voxel == 1.0:
            t1w = make_subject(tmp)
        else:
            t1w = SHARED / "heads" / "xa30_sub1_T1w_tfl_2mm.nii.gz"
        warm = None
        if args.warm:  # another subject: the same head with other noise, on its own path
            (tmp / "warmup").mkdir()
            warm = make_subject(tmp / "warmup", noise_seed=1)
        print(f"subject {t1w.name}: {nb.load(t1w).shape} @ {nb.load(t1w).header.get_zooms()}")
        rows = {"this tree": run_tree(tree, t1w, tmp, "new", audit=not args.no_audit,
                                      warmup=warm, morphometry=not args.no_morphometry)}
        if args.baseline:
            rows["baseline"] = run_tree(args.baseline, t1w, tmp, "base", warmup=warm)
        for name, r in rows.items():
            print(f"{name}: CPU {r['cpu']:.1f} s, wall {r['wall']:.1f} s, steps "
                  f"{ {k: round(v, 1) for k, v in r['steps'].items()} }; NMI "
                  f"{ {k: round(v, 4) for k, v in r['nmi'].items()} }")
        if args.baseline:
            new, base = rows["this tree"], rows["baseline"]
            print(f"CPU ratio this/baseline: {new['cpu'] / base['cpu']:.2f}")
            rel = {k: abs(new["iqms"][k] - v) / max(abs(v), 1e-12)
                   for k, v in base["iqms"].items() if v is not None and v == v}
            worst = sorted(rel.items(), key=lambda kv: -kv[1])[:6]
            print("largest relative IQM differences:",
                  {k: round(v, 4) for k, v in worst})
            keys = ("snr_total", "snr_wm", "snr_gm", "snr_csf", "cnr", "cjv", "fber", "efc",
                    "fwhm_avg")
            for name, r in rows.items():
                print(f"{name} IQMs:", {k: round(r["iqms"][k], 3) for k in keys})


if __name__ == "__main__":
    main()
