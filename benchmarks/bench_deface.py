"""Benchmark: seconds per subject-template of the deface stage on a 1 mm 256x256x188 T1w.

Measures, on one thread, (a) the whole per-template work of :func:`run_deface`
(registration + face masking + NMI + writing) and (b) the registration alone, next to the
naive baseline: the same 12-parameter affine registration run at full resolution (one 1 mm
level, every voxel sampled). Prints the ratio baseline / ours.

The subject is the real 2 mm head of ``../shared/data`` resampled to a 1 mm 256x256x188 grid
when available, otherwise a generated head phantom; the template is the built-in pydeface
head (or a phantom template without the shared data).

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_deface.py [--skip-baseline]
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
from nibabel.affines import voxel_sizes

from isyb_dask import registration as reg
from isyb_dask.deface.config import DefaceConfig
from isyb_dask.deface.phantom import make_head
from isyb_dask.deface.stage import run_deface
from isyb_dask.deface.templates import Template, builtin_template

SHARED = Path(os.environ.get("ISYB_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
SHAPE = (256, 256, 188)


def _subject(tmp: Path) -> tuple[Path, str]:
    head = SHARED / "heads" / "xa30_sub1_T1w_tfl_2mm.nii.gz"
    if head.exists():
        img = reg.to_canonical(nb.load(head))
        src = reg.to_sitk(img)
        centre = img.affine @ np.r_[(np.asarray(img.shape) - 1) / 2.0, 1.0]
        aff = np.diag([1.0, 1.0, 1.0, 1.0])
        aff[:3, 3] = centre[:3] - (np.asarray(SHAPE) - 1) / 2.0
        grid = reg.to_sitk(np.zeros(SHAPE, np.float32), aff)
        data = reg.sitk_to_array(reg.resample_to(src, grid, None, "linear"))
        kind = "real head (xa30, resampled 2 mm -> 1 mm)"
    else:
        ph = make_head(1.0, shape=SHAPE, seed=4)
        data, aff = ph.data, ph.affine
        kind = "phantom head"
    path = tmp / "sub-bench_T1w.nii.gz"
    nb.save(nb.Nifti1Image(np.clip(np.rint(data), 0, 32767).astype(np.int16), aff), path)
    return path, kind


def _template(tmp: Path) -> Template:
    if (SHARED / "heads").exists():
        return builtin_template()
    ph = make_head(1.0, seed=9)
    for name, arr in (("h", ph.data), ("f", ph.keep), ("b", ph.brain.astype(np.uint8))):
        nb.save(nb.Nifti1Image(arr, ph.affine), tmp / f"t{name}.nii.gz")
    return Template("phantom", tmp / "th.nii.gz", tmp / "tf.nii.gz", tmp / "tb.nii.gz")


def _masking_only(subj: Path, tmpl: Template, repeats: int) -> None:
    """Masking alone (no registration): new maskface / zero / reface vs the old grid normfilter."""
    from isyb_dask.deface import stage as st
    from isyb_dask.deface.maskface import normfilter
    from isyb_dask.deface.skin_depth import surface_depth_change

    img = reg.to_canonical(nb.load(subj))
    data = np.asarray(img.dataobj, dtype=np.float64)
    fixed = reg.to_sitk(data.astype(np.float32), img.affine)
    res = st.template_registration(fixed, tmpl, DefaceConfig())
    vox = voxel_sizes(img.affine)
    brain = np.zeros(data.shape, bool)
    times: dict[str, float] = {}
    for method in ("maskface", "zero", "reface"):
        cfg = DefaceConfig(method=method, threads=1)
        best = float("inf")
        for _ in range(repeats):
            c0 = time.process_time()
            out = st.deface_array(data, img.affine, tmpl, cfg, fixed=fixed, subject_brain=brain,
                                  registration=res)
            best = min(best, time.process_time() - c0)
        dc = surface_depth_change(data, out["defaced"], out["region"], out["normal"], vox)
        times[method] = best
        print(f"masking only, {method}: {best:.2f} s CPU (incl. mask resampling, head mask); "
              f"median facial depth change {dc['median_mm']:.1f} mm")
    out = st.deface_array(data, img.affine, tmpl, DefaceConfig(method="zero"), fixed=fixed,
                          subject_brain=brain, registration=res)
    face = out["region"]
    c0 = time.process_time()
    old, _ = normfilter(data, face, vox, out["normal"][0], out["normal"][1])
    t_old = time.process_time() - c0
    dc = surface_depth_change(data, old, face, out["normal"], vox)
    print(f"old grid normfilter (15 mm height field, box filter), same region: {t_old:.2f} s CPU; "
          f"median facial depth change {dc['median_mm']:.1f} mm")
    print(f"ratio new maskface / old normfilter (CPU): {times['maskface'] / t_old:.2f}")


def _with_anatomy(subj: Path, tmpl: Template, cfg: DefaceConfig, tmp: Path, repeats: int) -> None:
    """The stage as ``isyb run`` calls it: after the subject's anatomical reference.

    The anatomy (built once, not timed) supplies the subject brain mask and, for the built-in
    template, the registration; what remains per subject-template is the masking, NMI,
    writing, the renders and the face audit (``audit_seconds``: renders + dlib, with this
    template's share of the original's render).
    """
    from isyb_dask.anat.reference import build_anatomy
    from isyb_dask.atlas import get_reference_atlas
    from isyb_dask.config import RunConfig

    atlas = get_reference_atlas()
    anatomy = build_anatomy(subj, "sub-anat", atlas, RunConfig(), threads=1)
    run_deface(subj, "sub-anat", [tmpl], cfg, tmp / "out-anat", atlas, anatomy=anatomy)
    best = None
    for i in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = run_deface(subj, "sub-anat", [tmpl], cfg, tmp / f"out-anat{i}", atlas,
                         anatomy=anatomy)
        cur = (time.perf_counter() - t0, time.process_time() - c0, out["templates"][tmpl.name])
        best = cur if best is None or cur[1] < best[1] else best
    wall, cpu, row = best
    audit = float(row.get("audit_seconds", float("nan")))
    print(f"deface stage ({cfg.method}) with the anatomical reference, per subject-template: "
          f"{wall:.2f} s wall, {cpu:.2f} s CPU (target <= 10 s), of which audit {audit:.2f} s "
          f"(target <= 5 s); face_detected={row.get('face_detected')} "
          f"depth_change={row.get('surface_depth_change_mm', float('nan')):.1f} mm "
          f"brain_changed={row['brain_voxels_changed']}")


def main() -> None:
    """Run the benchmark and print a small table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--method", default="maskface", choices=("maskface", "zero", "reface"))
    args = ap.parse_args()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        subj, kind = _subject(tmp)
        tmpl = _template(tmp)
        print(f"cpu: {platform.processor() or platform.machine()}, nproc={os.cpu_count()}, threads=1")
        print(f"subject: {kind}, grid {SHAPE}; template: {tmpl.name}")
        _masking_only(subj, tmpl, args.repeats)
        cfg = DefaceConfig(threads=1, method=args.method)
        run_deface(subj, "sub-warm", [tmpl], cfg, tmp / "out")  # warm the template cache
        stage_s, stage_cpu = [], []
        for i in range(args.repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            out = run_deface(subj, f"sub-{i}", [tmpl], cfg, tmp / "out")
            stage_s.append(time.perf_counter() - t0)
            stage_cpu.append(time.process_time() - c0)
        row = out["templates"][tmpl.name]
        print(f"deface stage ({args.method}), per subject-template: {min(stage_s):.2f} s wall, "
              f"{min(stage_cpu):.2f} s CPU (target <= 10 s); nmi={row['nmi']:.4f} "
              f"brain_changed={row['brain_voxels_changed']}")
        _with_anatomy(subj, tmpl, cfg, tmp, args.repeats)
        fixed = reg.to_sitk(reg.to_canonical(nb.load(subj)))
        moving = reg.to_sitk(reg.to_canonical(nb.load(tmpl.head)))
        t0, c0 = time.perf_counter(), time.process_time()
        fast = reg.register_affine(fixed, moving, seed=1, threads=1)
        t_fast, c_fast = time.perf_counter() - t0, time.process_time() - c0
        print(f"registration (pyramid 6/4/2 mm, 20k samples): {t_fast:.2f} s wall, {c_fast:.2f} s "
              f"CPU, metric {fast.metric:.4f}")
        if not args.skip_baseline:
            t0, c0 = time.perf_counter(), time.process_time()
            naive = reg.register_affine(
                fixed, moving, seed=1, threads=1, levels_mm=(1.0,), sampling=10**9,
                coarse_search=False,
            )
            t_naive, c_naive = time.perf_counter() - t0, time.process_time() - c0
            # compare both transforms on head points
            arr = reg.sitk_to_array(fixed)
            pts = np.argwhere(arr > np.percentile(arr, 70))[::4000]
            diff = [np.linalg.norm(np.subtract(
                fast.transform.TransformPoint(fixed.TransformContinuousIndexToPhysicalPoint(p.tolist())),
                naive.transform.TransformPoint(fixed.TransformContinuousIndexToPhysicalPoint(p.tolist())),
            )) for p in pts.astype(float)]
            print(f"naive full-resolution affine registration: {t_naive:.2f} s wall, "
                  f"{c_naive:.2f} s CPU, metric {naive.metric:.4f}")
            print(f"speed-up (CPU): {c_naive / c_fast:.1f}x registration, "
                  f"{c_naive / min(stage_cpu):.1f}x whole stage vs naive registration alone; "
                  f"mean point difference fast vs naive {np.mean(diff):.2f} mm")


if __name__ == "__main__":
    main()
