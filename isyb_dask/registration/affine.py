"""Affine / rigid registration with SimpleITK (template -> subject).

The registration is the one used by the face-masking stage (and, with ``dof=6``, by the
modality-to-T1w steps of other stages):

* Mattes mutual information (32 bins, random sampling with a fixed seed);
* a robust start: centre of mass (moments) alignment followed by a coarse grid search over
  translations and pitch/roll/yaw rotations, evaluated on a heavily down-sampled pair;
* multi-resolution optimisation (by default about 6, 4 and 2 mm; rigid first, then the full
  12-parameter affine), regular-step gradient descent with parameter scales from physical
  shifts;
* a plausibility check of the final transform (scales, shears, rotation, reflection).

Grid conversions and the RAS/LPS conventions are in :mod:`isyb_dask.registration.grid`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk

from isyb_dask.errors import RegistrationError
from isyb_dask.registration.checks import PlausibilityLimits, check_transform
from isyb_dask.registration.grid import (
    _as_affine,
    downsample,
    matrix_ras,
    resample_to,
    sitk_threads,
)

__all__ = [
    "AffineRegistration",
    "PlausibilityLimits",
    "check_transform",
    "register_affine",
]


@dataclass
class AffineRegistration:
    """Result of :func:`register_affine`.

    Attributes
    ----------
    transform
        ``sitk.AffineTransform`` (or ``sitk.Euler3DTransform`` for ``dof=6``) mapping fixed
        physical points (LPS mm) to moving physical points.
    metric
        Final Mattes mutual-information value (negative; lower is better), evaluated on the
        finest level.
    plausible
        Whether :func:`check_transform` accepted the transform.
    checks
        ``scales``, ``shears``, ``rotation_deg``, ``translation_mm``, ``determinant`` and the
        list of ``violations``; ``affine_stopped_at`` (level, e.g. ``"2 mm"``) when a 12-dof
        level left the plausible set from a plausible start and the previous transform was
        kept instead.
    seconds
        Wall-clock time of the registration.
    """

    transform: sitk.Transform
    metric: float
    plausible: bool
    checks: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def matrix_ras(self) -> np.ndarray:
        """4x4 RAS matrix of the transform (fixed mm -> moving mm)."""
        return matrix_ras(self.transform)


# ----------------------------------------------------------------------------- registration


def _centre(image: sitk.Image, mask: sitk.Image | None) -> np.ndarray:
    """Intensity centre of mass (physical LPS) of the positive part of an image."""
    arr = sitk.GetArrayViewFromImage(image).astype(np.float64)
    w = np.clip(arr, 0, None)
    if mask is not None:
        w = w * (sitk.GetArrayViewFromImage(mask) > 0)
    total = w.sum()
    if not np.isfinite(total) or total <= 0:
        size = np.asarray(image.GetSize(), dtype=float)
        return np.asarray(image.TransformContinuousIndexToPhysicalPoint(((size - 1) / 2).tolist()))
    idx = [float((w.sum(axis=tuple(j for j in range(3) if j != ax)) * np.arange(w.shape[ax])).sum() / total)
           for ax in range(3)]
    # array axes are (z, y, x)
    cont = [idx[2], idx[1], idx[0]]
    return np.asarray(image.TransformContinuousIndexToPhysicalPoint(cont))


def _fraction(image: sitk.Image, samples: int) -> float:
    n = float(np.prod(image.GetSize()))
    return float(min(1.0, max(samples / n, 1e-4)))


def _method(seed: int, threads: int, sampling: float, bins: int) -> sitk.ImageRegistrationMethod:
    reg = sitk.ImageRegistrationMethod()
    reg.SetNumberOfThreads(int(threads))
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=int(bins))
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(float(sampling), int(seed))
    reg.SetInterpolator(sitk.sitkLinear)
    return reg


def _coarse_search(
    fixed: sitk.Image,
    moving: sitk.Image,
    centre_f: np.ndarray,
    centre_m: np.ndarray,
    seed: int,
    threads: int,
    fixed_mask: sitk.Image | None,
) -> sitk.Euler3DTransform:
    """Best Euler start among translations/rotations around the moments alignment."""
    reg = _method(seed, threads, _fraction(fixed, 8000), 24)
    if fixed_mask is not None:
        reg.SetMetricFixedMask(fixed_mask)
    best: tuple[float, sitk.Euler3DTransform] | None = None
    angles = np.radians([-20.0, 0.0, 20.0])
    shifts = (-20.0, 0.0, 20.0)
    for rx in angles:  # pitch (nodding) is the most common head tilt
        for ry in (0.0,):
            for rz in (angles if rx == 0.0 else (0.0,)):
                for dy in shifts:
                    for dz in shifts:
                        tx = sitk.Euler3DTransform()
                        tx.SetCenter(centre_f.tolist())
                        tx.SetRotation(float(rx), float(ry), float(rz))
                        off = centre_m - centre_f + np.array([0.0, dy, dz])
                        tx.SetTranslation(off.tolist())
                        reg.SetInitialTransform(tx, inPlace=False)
                        try:
                            val = reg.MetricEvaluate(fixed, moving)
                        except RuntimeError:  # too few samples overlap
                            continue
                        if best is None or val < best[0]:
                            best = (val, tx)
    if best is None:
        raise RegistrationError("coarse search found no overlapping start position")
    return best[1]


def _run_level(
    fixed: sitk.Image,
    moving: sitk.Image,
    initial: sitk.Transform,
    *,
    seed: int,
    threads: int,
    sampling: float,
    iterations: int,
    fixed_mask: sitk.Image | None,
    moving_mask: sitk.Image | None,
    max_step: float,
) -> tuple[sitk.Transform, float]:
    reg = _method(seed, threads, _fraction(fixed, sampling), 32)
    if fixed_mask is not None:
        reg.SetMetricFixedMask(fixed_mask)
    if moving_mask is not None:
        reg.SetMetricMovingMask(moving_mask)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=max_step,
        minStep=max_step / 50.0,
        numberOfIterations=int(iterations),
        relaxationFactor=0.6,
        gradientMagnitudeTolerance=1e-6,
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetInitialTransform(initial, inPlace=False)
    out = reg.Execute(fixed, moving)
    if isinstance(out, sitk.CompositeTransform) and out.GetNumberOfTransforms() == 1:
        out = out.GetNthTransform(0)
    return out, float(reg.GetMetricValue())


def _euler_to_affine(tx: sitk.Transform) -> sitk.AffineTransform:
    out = sitk.AffineTransform(3)
    out.SetCenter(tx.GetCenter())
    out.SetMatrix(tx.GetMatrix())
    out.SetTranslation(tx.GetTranslation())
    return out


def _resample_mask(mask: sitk.Image | None, grid: sitk.Image) -> sitk.Image | None:
    if mask is None:
        return None
    m = sitk.Cast(mask > 0, sitk.sitkUInt8)
    return resample_to(m, grid, None, "nearest")


def register_affine(
    fixed: sitk.Image,
    moving: sitk.Image,
    *,
    dof: int = 12,
    seed: int = 20220531,
    threads: int = 1,
    fixed_mask: sitk.Image | None = None,
    moving_mask: sitk.Image | None = None,
    levels_mm: tuple[float, ...] = (6.0, 4.0, 2.0),
    sampling: int = 20000,
    iterations: int = 60,
    coarse_search: bool = True,
    limits: PlausibilityLimits | None = None,
    initial: sitk.Transform | None = None,
) -> AffineRegistration:
    """Register ``moving`` to ``fixed`` with a rigid then affine multi-resolution scheme.

    Parameters
    ----------
    fixed
        Reference image (the subject for template-to-subject registration).
    moving
        Image to align (the template head).
    dof
        12 (affine, default) or 6 (rigid).
    seed
        Seed of the random metric sampling (fixed -> deterministic for a fixed thread count).
    threads
        SimpleITK thread count (default 1).
    fixed_mask, moving_mask
        Optional masks restricting the metric.
    levels_mm
        Isotropic grid steps of the pyramid, coarse to fine; levels finer than the images
        are clipped to the image resolution.
    sampling
        Number of fixed-image voxels sampled (randomly, seeded) by the metric at each level.
    iterations
        Maximum optimiser iterations per level and stage.
    coarse_search
        Search translations/rotations around the moments alignment before optimising.
    limits
        Plausibility limits of the final transform.
    initial
        A starting transform already close to the solution (e.g. composed from earlier
        registrations): the coarse search and the rigid stage are skipped and only the
        affine stage runs on ``levels_mm`` (``dof=12`` only).

    Returns
    -------
    AffineRegistration

    Raises
    ------
    RegistrationError
        When SimpleITK fails (for example no overlap at all).
    """
    if dof not in (6, 12):
        raise ValueError(f"dof must be 6 or 12, got {dof}")
    if initial is not None and dof != 12:
        raise ValueError("an initial transform is only supported with dof=12")
    with sitk_threads(threads):
        return _register(
            fixed, moving, dof=dof, seed=seed, threads=threads, fixed_mask=fixed_mask,
            moving_mask=moving_mask, levels_mm=levels_mm, sampling=sampling,
            iterations=iterations, coarse_search=coarse_search, limits=limits,
            initial=initial,
        )


def _register(
    fixed: sitk.Image,
    moving: sitk.Image,
    *,
    dof: int,
    seed: int,
    threads: int,
    fixed_mask: sitk.Image | None,
    moving_mask: sitk.Image | None,
    levels_mm: tuple[float, ...],
    sampling: int,
    iterations: int,
    coarse_search: bool,
    limits: PlausibilityLimits | None,
    initial: sitk.Transform | None = None,
) -> AffineRegistration:
    t0 = time.perf_counter()
    fixed = sitk.Cast(fixed, sitk.sitkFloat32)
    moving = sitk.Cast(moving, sitk.sitkFloat32)
    finest = float(min(fixed.GetSpacing()))
    steps = sorted({max(float(s), finest) for s in levels_mm}, reverse=True)
    pyramid = []
    f, m = fixed, moving
    for step in sorted(steps):  # fine to coarse, each level from the previous one
        f = downsample(f, step, threads)
        m = downsample(m, max(step, min(m.GetSpacing())), threads)
        pyramid.insert(0, (step, f, m, _resample_mask(fixed_mask, f), _resample_mask(moving_mask, m)))
    try:
        c_f = _centre(pyramid[0][1], pyramid[0][3])
        c_m = _centre(pyramid[0][2], pyramid[0][4])
        if initial is not None:
            current: sitk.Transform = _as_affine(initial)
        elif coarse_search:
            current = _coarse_search(
                pyramid[0][1], pyramid[0][2], c_f, c_m, seed, threads, pyramid[0][3]
            )
        else:
            current = sitk.Euler3DTransform()
            current.SetCenter(c_f.tolist())
            current.SetTranslation((c_m - c_f).tolist())
        metric = float("nan")
        # rigid stage on the coarse levels (skipped from a given initial transform)
        for step, f, m, fm, mm in ([] if initial is not None else
                                   pyramid[:-1] if len(pyramid) > 1 else pyramid):
            current, metric = _run_level(
                f, m, current, seed=seed, threads=threads, sampling=sampling,
                iterations=iterations, fixed_mask=fm, moving_mask=mm, max_step=step,
            )
        reverted = ""
        if dof == 12:
            if initial is None:
                current = _euler_to_affine(current)
            start_ok = check_transform(current, limits)[0]
            for step, f, m, fm, mm in pyramid:
                moved, moved_metric = _run_level(
                    f, m, current, seed=seed, threads=threads, sampling=sampling,
                    iterations=iterations, fixed_mask=fm, moving_mask=mm, max_step=step / 2.0,
                )
                if start_ok and not check_transform(moved, limits)[0]:
                    # the free affine drifted out of the plausible set (e.g. into a
                    # reflection) from a plausible start: keep the last plausible transform
                    reverted = f"{step:g} mm"
                    break
                current, metric = moved, moved_metric
        else:
            step, f, m, fm, mm = pyramid[-1]
            if len(pyramid) > 1:
                current, metric = _run_level(
                    f, m, current, seed=seed, threads=threads, sampling=sampling,
                    iterations=iterations, fixed_mask=fm, moving_mask=mm, max_step=step / 2.0,
                )
    except RuntimeError as exc:
        raise RegistrationError(f"registration failed: {exc}") from None
    plausible, checks = check_transform(current, limits)
    if reverted:
        checks["affine_stopped_at"] = reverted
    return AffineRegistration(
        transform=current,
        metric=metric,
        plausible=plausible,
        checks=checks,
        seconds=time.perf_counter() - t0,
    )
