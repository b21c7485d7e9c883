"""Population head template: unbiased group-wise affine registration and averaging.

Algorithm (iterated ``iterations`` times, in the manner of ANTs' ``buildtemplateparallel``
restricted to affine transforms):

1. the first target is the first head (reoriented to RAS); every head is registered to the
   current target (12-parameter affine, target -> head transforms ``T_i``);
2. the bias of the target is removed: ``M = expm(mean_i logm(T_i))`` is the average
   transform and each ``T_i`` is replaced by ``T_i @ inv(M)``, so that the transforms to the
   new template average to the identity (the template takes the cohort's mean shape and
   position, not the first head's);
3. every head, intensity-normalised by the median of its head voxels, is resampled through
   its unbiased transform and the images are averaged into the new target.

The output grid covers the first head's field of view (padded by ``pad_mm``) at the cohort's
median voxel size. The face (KEEP) and brain masks of a reference template are carried over
by registering the reference head to the final template. ``nonlinear=True`` adds a final
B-spline refinement of every head before the last average (sharper, population-matched
average); the masks are still carried over affinely.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

import nibabel as nb
import numpy as np
import SimpleITK as sitk
from scipy.linalg import expm, logm

from isyb_dask import registration as reg
from isyb_dask.deface.templates import Template, validate_template
from isyb_dask.errors import BIDSError, InputError
from isyb_dask.io.nifti import file_sha256, load_image

__all__ = ["build_template", "build_template_from_bids", "find_t1w"]


def _matrix(tx: sitk.Transform) -> np.ndarray:
    return reg._lps_matrix(reg._as_affine(tx))


def _mean_transform(mats: Sequence[np.ndarray]) -> np.ndarray:
    logs = [np.real(logm(m)) for m in mats]
    out = np.real(expm(np.mean(logs, axis=0)))
    out[3] = [0.0, 0.0, 0.0, 1.0]
    return out


def _normalise(img: sitk.Image) -> sitk.Image:
    arr = sitk.GetArrayViewFromImage(img)
    thr = np.percentile(arr, 99) * 0.1
    med = float(np.median(arr[arr > thr])) if np.any(arr > thr) else 1.0
    return sitk.Cast(img, sitk.sitkFloat32) / max(med, 1e-6)


def _grid(first: sitk.Image, voxel_mm: float, pad_mm: float) -> sitk.Image:
    size = np.asarray(first.GetSize(), dtype=float)
    spacing = np.asarray(first.GetSpacing(), dtype=float)
    extent = size * spacing + 2 * pad_mm
    new_size = np.maximum(np.round(extent / voxel_mm).astype(int), 2)
    direction = np.asarray(first.GetDirection()).reshape(3, 3)
    centre = np.asarray(first.TransformContinuousIndexToPhysicalPoint(((size - 1) / 2).tolist()))
    origin = centre - direction @ ((new_size - 1) / 2.0 * voxel_mm)
    grid = sitk.Image([int(n) for n in new_size], sitk.sitkFloat32)
    grid.SetSpacing([voxel_mm] * 3)
    grid.SetDirection(first.GetDirection())
    grid.SetOrigin(origin.tolist())
    return grid


def _bspline_refine(fixed: sitk.Image, moving: sitk.Image, initial: sitk.Transform,
                    seed: int, threads: int) -> sitk.Transform:
    """Coarse B-spline (about 40 mm control grid) on top of an affine transform."""
    mesh = [max(1, int(round(sz * sp / 40.0))) for sz, sp in zip(fixed.GetSize(), fixed.GetSpacing())]
    bs = sitk.BSplineTransformInitializer(fixed, mesh)
    r = sitk.ImageRegistrationMethod()
    r.SetNumberOfThreads(threads)
    r.SetMetricAsMattesMutualInformation(32)
    r.SetMetricSamplingStrategy(r.RANDOM)
    r.SetMetricSamplingPercentage(min(1.0, 10000 / float(np.prod(fixed.GetSize()))), seed)
    r.SetInterpolator(sitk.sitkLinear)
    r.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5, numberOfIterations=20,
                           maximumNumberOfFunctionEvaluations=40)
    r.SetMovingInitialTransform(initial)
    r.SetInitialTransform(bs, inPlace=True)
    r.Execute(fixed, moving)
    comp = sitk.CompositeTransform(3)
    comp.AddTransform(initial)
    comp.AddTransform(bs)
    return comp


def build_template(
    t1w_paths: Sequence[str | os.PathLike[str]],
    out_prefix: str | os.PathLike[str],
    *,
    iterations: int = 3,
    reference: Template,
    seed: int = 20220531,
    threads: int = 1,
    nonlinear: bool = False,
    voxel_mm: float | None = None,
    pad_mm: float = 10.0,
) -> Template:
    """Build a head template from a cohort and carry the reference's masks onto it.

    Parameters
    ----------
    t1w_paths
        Two or more T1w heads (with faces).
    out_prefix
        Output prefix; writes ``<prefix>_T1w.nii.gz``, ``<prefix>_desc-face_mask.nii.gz``,
        ``<prefix>_desc-brain_mask.nii.gz`` and ``<prefix>_T1w.json`` (provenance).
    iterations
        Registration/averaging rounds (>= 1).
    reference
        Template whose face and brain masks are carried over.
    seed, threads
        Registration seed and SimpleITK threads.
    nonlinear
        Add a B-spline refinement before the final average.
    voxel_mm
        Output voxel size (default: the cohort's median smallest voxel size).
    pad_mm
        Margin added around the first head's field of view.

    Returns
    -------
    Template
        Named after the prefix's file name (letters and digits only).

    Raises
    ------
    InputError
        Fewer than two heads, unreadable files, or an implausible registration.
    """
    paths = [Path(p) for p in t1w_paths]
    if len(paths) < 2:
        raise InputError(f"template build needs at least 2 T1w images, got {len(paths)}")
    if iterations < 1:
        raise InputError(f"iterations must be >= 1, got {iterations}")
    heads = [reg.to_sitk(reg.to_canonical(load_image(p, ndim=3))) for p in paths]
    heads = [_normalise(h) for h in heads]
    if voxel_mm is None:
        voxel_mm = float(np.median([min(h.GetSpacing()) for h in heads]))
    grid = _grid(heads[0], voxel_mm, pad_mm)
    target = reg.resample_to(heads[0], grid, None, "linear", threads=threads)
    history = []
    with reg.sitk_threads(threads):
        for it in range(iterations):
            mats = []
            for p, h in zip(paths, heads):
                res = reg.register_affine(h, target, seed=seed, threads=threads)
                if not res.plausible:
                    raise InputError(
                        f"template build: {p.name} does not register to the iteration-{it} "
                        f"average ({'; '.join(res.checks['violations'])})"
                    )
                # res maps head points -> target points; invert to target -> head
                mats.append(np.linalg.inv(_matrix(res.transform)))
            mean = _mean_transform(mats)
            unbiased = [m @ np.linalg.inv(mean) for m in mats]
            last = it == iterations - 1
            acc = np.zeros(grid.GetSize()[::-1], dtype=np.float64)
            for h, m, biased in zip(heads, unbiased, mats):
                tx: sitk.Transform = reg.affine_from_lps(m)
                if last and nonlinear:
                    # refine against the current target (its frame), then map the new
                    # template frame into it: y -> inv(mean) y -> head
                    refined = _bspline_refine(target, h, reg.affine_from_lps(biased), seed, threads)
                    tx = sitk.CompositeTransform(3)
                    tx.AddTransform(refined)
                    tx.AddTransform(reg.affine_from_lps(np.linalg.inv(mean)))
                warped = reg.resample_to(h, grid, tx, "linear", threads=threads)
                acc += sitk.GetArrayViewFromImage(warped)  # ``warped`` outlives the view
            avg = sitk.GetImageFromArray((acc / len(heads)).astype(np.float32))
            avg.CopyInformation(grid)
            target = avg
            history.append({"iteration": it, "mean_transform_lps": mean.tolist()})
    out_prefix = Path(out_prefix)
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    head_path = Path(f"{out_prefix}_T1w.nii.gz")
    aff = reg.sitk_affine(target)
    data = reg.sitk_to_array(target) * 1000.0
    nb.save(nb.Nifti1Image(data.astype(np.float32), aff), str(head_path))
    # carry the reference masks: reference head (moving) -> new template (fixed)
    ref_head = reg.to_sitk(reg.to_canonical(load_image(reference.head, ndim=3)))
    res = reg.register_affine(target, ref_head, seed=seed, threads=threads)
    if not res.plausible:
        raise InputError(
            f"template build: reference {reference.name} does not register to the new template "
            f"({'; '.join(res.checks['violations'])})"
        )
    written = {}
    for key, src, default in (("face", reference.face_mask, 1.0), ("brain", reference.brain_mask, 0.0)):
        if src is None:
            raise InputError(f"template build: reference {reference.name} has no {key} mask")
        m = reg.to_sitk(reg.to_canonical(load_image(src, ndim=3, check_values=False)))
        w = reg.sitk_to_array(reg.resample_to(m, target, res.transform, "linear", default=default,
                                              threads=threads))
        path = Path(f"{out_prefix}_desc-{key}_mask.nii.gz")
        nb.save(nb.Nifti1Image((w > 0.5).astype(np.uint8), aff), str(path))
        written[key] = path
    name = re.sub(r"[^A-Za-z0-9]", "", out_prefix.name) or "custom"
    prov = {
        "built_by": "isyb_dask.deface.builder.build_template",
        "inputs": [{"path": str(p), "sha256": file_sha256(p)} for p in paths],
        "iterations": iterations,
        "nonlinear": nonlinear,
        "voxel_mm": voxel_mm,
        "seed": seed,
        "method": "unbiased group-wise affine registration (Mattes MI) and averaging of "
        "median-normalised heads; target bias removed with the log-Euclidean mean transform",
        "masks": f"face and brain masks carried over from template {reference.name} by affine "
        "registration of its head to the new template",
        "reference_registration": {"metric": res.metric, "checks": res.checks},
        "history": history,
    }
    Path(f"{out_prefix}_T1w.json").write_text(json.dumps(prov, indent=2))
    t = Template(name=name, head=head_path, face_mask=written["face"],
                 brain_mask=written["brain"], provenance=prov)
    validate_template(t)
    return t


def find_t1w(bids_dir: str | os.PathLike[str], participant_labels: Sequence[str] | None = None) -> list[Path]:
    """T1w NIfTI files of a BIDS dataset (``sub-*/[ses-*/]anat/*_T1w.nii[.gz]``), sorted."""
    root = Path(bids_dir)
    if not root.is_dir():
        raise BIDSError(f"{root}: not a directory")
    found = sorted(
        p for pattern in ("sub-*/anat/*_T1w.nii*", "sub-*/ses-*/anat/*_T1w.nii*")
        for p in root.glob(pattern)
    )
    if participant_labels:
        wanted = {lab if lab.startswith("sub-") else f"sub-{lab}" for lab in participant_labels}
        missing = wanted - {p.name.split("_")[0] for p in found}
        if missing:
            raise BIDSError(f"{root}: no T1w for participant(s) {sorted(missing)}")
        found = [p for p in found if p.name.split("_")[0] in wanted]
    if not found:
        raise BIDSError(f"{root}: no T1w images found")
    return found


def build_template_from_bids(
    bids_dir: str | os.PathLike[str],
    out_prefix: str | os.PathLike[str],
    participant_labels: Sequence[str] | None = None,
    iterations: int = 3,
    *,
    reference: Template | None = None,
    seed: int = 20220531,
    threads: int = 1,
    nonlinear: bool = False,
) -> Template:
    """Find a BIDS dataset's T1w images and call :func:`build_template`.

    ``reference`` defaults to the built-in ``pydeface`` template.
    """
    paths = find_t1w(bids_dir, participant_labels)
    if reference is None:
        from isyb_dask.deface.templates import builtin_template

        reference = builtin_template()
    return build_template(paths, out_prefix, iterations=iterations, reference=reference,
                          seed=seed, threads=threads, nonlinear=nonlinear)
