"""Affine / rigid registration with SimpleITK (template -> subject) and grid helpers.

The registration is the one used by the face-masking stage (and, with ``dof=6``, by the
modality-to-T1w steps of other stages):

* Mattes mutual information (32 bins, random sampling with a fixed seed);
* a robust start: centre of mass (moments) alignment followed by a coarse grid search over
  translations and pitch/roll/yaw rotations, evaluated on a heavily down-sampled pair;
* multi-resolution optimisation (by default about 6, 4 and 2 mm; rigid first, then the full
  12-parameter affine), regular-step gradient descent with parameter scales from physical
  shifts;
* a plausibility check of the final transform (scales, shears, rotation, reflection).

Conventions
-----------
SimpleITK works in LPS physical coordinates; nibabel affines are RAS. :func:`to_sitk` converts a
nibabel image exactly (``direction``/``origin`` from the affine with the x and y axes negated).
The transform returned by :func:`register_affine` maps *fixed* physical points to *moving*
physical points (ITK convention), so ``resample_to(moving, fixed, transform)`` brings the moving
image onto the fixed grid. :func:`matrix_ras` gives the same mapping as a 4x4 RAS matrix.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import nibabel as nb
import numpy as np
import SimpleITK as sitk
from nibabel.orientations import apply_orientation, io_orientation, ornt_transform

from isyb_dask.errors import RegistrationError

__all__ = [
    "AffineRegistration",
    "PlausibilityLimits",
    "check_transform",
    "downsample",
    "from_canonical",
    "matrix_ras",
    "register_affine",
    "resample_to",
    "sitk_affine",
    "sitk_threads",
    "sitk_to_array",
    "to_canonical",
    "to_sitk",
]

_LPS = np.diag([-1.0, -1.0, 1.0])
_INTERP = {
    "linear": sitk.sitkLinear,
    "nearest": sitk.sitkNearestNeighbor,
    "bspline": sitk.sitkBSpline,
}


@dataclass(frozen=True)
class PlausibilityLimits:
    """Bounds that a template-to-subject transform must satisfy to be trusted.

    Attributes
    ----------
    scale_range
        Allowed range of each axis scale (QR decomposition of the linear part).
    max_shear
        Largest allowed absolute shear coefficient.
    max_rotation_deg
        Largest allowed rotation angle (after reorientation to the closest canonical
        orientation, real head tilts are well below this).
    """

    scale_range: tuple[float, float] = (0.6, 1.6)
    max_shear: float = 0.25
    max_rotation_deg: float = 45.0


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
        list of ``violations``.
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


# ----------------------------------------------------------------------------- conversion


def to_sitk(
    img: nb.spatialimages.SpatialImage | np.ndarray,
    affine: np.ndarray | None = None,
    *,
    dtype: type | np.dtype = np.float32,
) -> sitk.Image:
    """Convert a nibabel image (or an array plus a RAS affine) into a SimpleITK image.

    Parameters
    ----------
    img
        3-D nibabel image, or a 3-D array indexed ``(i, j, k)``.
    affine
        Voxel-to-RAS affine when ``img`` is an array.
    dtype
        Pixel type of the result.

    Returns
    -------
    SimpleITK.Image
        Same voxels, with spacing, origin and direction equivalent to the affine.
    """
    if isinstance(img, np.ndarray):
        if affine is None:
            raise ValueError("to_sitk: an affine is required with an array")
        data = img
    else:
        affine = img.affine
        data = np.asanyarray(img.dataobj)
    data = np.asarray(data, dtype=dtype)
    if data.ndim != 3:
        raise ValueError(f"to_sitk: expected a 3-D image, got shape {data.shape}")
    affine = np.asarray(affine, dtype=float)
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    direction = _LPS @ affine[:3, :3] / spacing
    origin = _LPS @ affine[:3, 3]
    out = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
    out.SetSpacing([float(s) for s in spacing])
    out.SetOrigin([float(o) for o in origin])
    out.SetDirection([float(d) for d in direction.ravel()])
    return out


def sitk_to_array(image: sitk.Image) -> np.ndarray:
    """Voxel array of a SimpleITK image indexed ``(i, j, k)`` like nibabel."""
    return sitk.GetArrayFromImage(image).transpose(2, 1, 0)


def sitk_affine(image: sitk.Image) -> np.ndarray:
    """Voxel-to-RAS 4x4 affine of a SimpleITK image."""
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    spacing = np.asarray(image.GetSpacing(), dtype=float)
    aff = np.eye(4)
    aff[:3, :3] = _LPS @ direction * spacing
    aff[:3, 3] = _LPS @ np.asarray(image.GetOrigin(), dtype=float)
    return aff


def matrix_ras(transform: sitk.Transform) -> np.ndarray:
    """4x4 matrix in RAS mm of an affine-family SimpleITK transform (same direction)."""
    tx = _as_affine(transform)
    a = np.asarray(tx.GetMatrix(), dtype=float).reshape(3, 3)
    c = np.asarray(tx.GetCenter(), dtype=float)
    t = np.asarray(tx.GetTranslation(), dtype=float)
    m = np.eye(4)
    m[:3, :3] = a
    m[:3, 3] = t + c - a @ c
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    return flip @ m @ flip


def _as_affine(transform: sitk.Transform) -> sitk.AffineTransform:
    """Express a (possibly composite) affine-family transform as one AffineTransform."""
    if isinstance(transform, sitk.CompositeTransform):
        total = np.eye(4)
        # A composite applies its last-added transform first.
        for i in range(transform.GetNumberOfTransforms()):
            part = _as_affine(transform.GetNthTransform(i))
            m = _lps_matrix(part)
            total = total @ m
        out = sitk.AffineTransform(3)
        out.SetMatrix(total[:3, :3].ravel().tolist())
        out.SetTranslation(total[:3, 3].tolist())
        return out
    tx = sitk.AffineTransform(3)
    try:
        tx.SetMatrix(transform.GetMatrix())
        tx.SetTranslation(transform.GetTranslation())
        tx.SetCenter(transform.GetCenter())
    except AttributeError as exc:  # pragma: no cover - non affine transform
        raise TypeError(f"not an affine-family transform: {transform.GetName()}") from exc
    return tx


def _lps_matrix(tx: sitk.AffineTransform) -> np.ndarray:
    a = np.asarray(tx.GetMatrix(), dtype=float).reshape(3, 3)
    c = np.asarray(tx.GetCenter(), dtype=float)
    m = np.eye(4)
    m[:3, :3] = a
    m[:3, 3] = np.asarray(tx.GetTranslation(), dtype=float) + c - a @ c
    return m


# ----------------------------------------------------------------------------- orientation


def to_canonical(img: nb.spatialimages.SpatialImage) -> nb.Nifti1Image:
    """Reorder the voxel axes to the closest RAS orientation (exact: permutations/flips only).

    The physical position of every voxel is unchanged; oblique images stay oblique.
    """
    return nb.as_closest_canonical(nb.Nifti1Image(np.asanyarray(img.dataobj), img.affine, img.header))


def from_canonical(data: np.ndarray, original_affine: np.ndarray) -> np.ndarray:
    """Bring an array computed on the canonical grid back onto the original voxel order.

    Parameters
    ----------
    data
        Array on the grid returned by :func:`to_canonical` for an image with
        ``original_affine``.
    original_affine
        The original voxel-to-world affine.
    """
    ornt = io_orientation(original_affine)
    ras = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)
    back = ornt_transform(ras, ornt)
    return np.asarray(apply_orientation(data, back))


# ----------------------------------------------------------------------------- resampling


def resample_to(
    moving: sitk.Image,
    reference: sitk.Image,
    transform: sitk.Transform | None = None,
    interp: str | int = "linear",
    *,
    default: float = 0.0,
    threads: int = 1,
) -> sitk.Image:
    """Resample ``moving`` onto the grid of ``reference`` through ``transform``.

    Parameters
    ----------
    moving, reference
        SimpleITK images.
    transform
        Maps reference physical points to moving physical points (identity if None).
    interp
        ``"linear"``, ``"nearest"``, ``"bspline"`` or a SimpleITK interpolator constant.
    default
        Value outside the moving image.
    threads
        SimpleITK thread count.
    """
    f = sitk.ResampleImageFilter()
    f.SetReferenceImage(reference)
    f.SetTransform(transform if transform is not None else sitk.Transform(3, sitk.sitkIdentity))
    f.SetInterpolator(_INTERP[interp] if isinstance(interp, str) else interp)
    f.SetDefaultPixelValue(float(default))
    f.SetOutputPixelType(moving.GetPixelID())
    f.SetNumberOfThreads(int(threads))
    return f.Execute(moving)


def downsample(image: sitk.Image, step_mm: float, threads: int = 1) -> sitk.Image:
    """Gaussian-smooth and resample an image to an isotropic ``step_mm`` grid (same box)."""
    spacing = np.asarray(image.GetSpacing(), dtype=float)
    if step_mm <= spacing.min() * 1.01:
        return image
    factors = step_mm / spacing
    if np.all(np.abs(factors - np.round(factors)) < 0.01) and np.all(np.round(factors) >= 2):
        # integer factors: block averaging is a cheap anti-aliased down-sampling
        b = sitk.BinShrinkImageFilter()
        b.SetShrinkFactors([int(round(f)) for f in factors])
        b.SetNumberOfThreads(int(threads))
        return b.Execute(image)
    sigma = [float(math.sqrt(max(step_mm**2 - s**2, 0.0)) / 2.355) for s in spacing]
    g = sitk.SmoothingRecursiveGaussianImageFilter()
    g.SetSigma(sigma)
    g.SetNumberOfThreads(int(threads))
    smooth = g.Execute(image)
    size = np.asarray(image.GetSize())
    new_size = [max(2, int(round(n * s / step_mm))) for n, s in zip(size, spacing)]
    new_spacing = [float(n * s / m) for n, s, m in zip(size, spacing, new_size)]
    # keep the same physical box: origin moves by half a voxel difference
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    shift = direction @ ((np.asarray(new_spacing) - spacing) / 2.0)
    origin = np.asarray(image.GetOrigin()) + shift
    ref = sitk.Image([int(n) for n in new_size], image.GetPixelID())
    ref.SetSpacing(new_spacing)
    ref.SetDirection(image.GetDirection())
    ref.SetOrigin(origin.tolist())
    return resample_to(smooth, ref, None, "linear", threads=threads)


@contextlib.contextmanager
def sitk_threads(threads: int) -> Iterator[None]:
    """Set SimpleITK's default thread count for the duration of a block, then restore it.

    Some ITK internals (metric threaders) ignore the per-filter thread count and use the
    global default; pinning it makes results bit-reproducible for a given ``threads``.
    """
    old = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(threads))
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(old)


# ----------------------------------------------------------------------------- checks


def check_transform(
    transform: sitk.Transform, limits: PlausibilityLimits | None = None
) -> tuple[bool, dict[str, Any]]:
    """Decompose the linear part of a transform and compare it with plausibility limits.

    The linear part ``A`` is split as ``A = Q R`` (QR, ``R`` with a positive diagonal):
    ``scales = diag(R)``, ``shears = (R01/R00, R02/R00, R12/R11)`` and the rotation angle
    of ``Q``; ``det(A) < 0`` (a reflection) is always implausible.

    Returns
    -------
    (bool, dict)
        Plausible or not, and the measured quantities plus ``violations``.
    """
    limits = limits or PlausibilityLimits()
    m = _lps_matrix(_as_affine(transform))
    a = m[:3, :3]
    det = float(np.linalg.det(a))
    q, r = np.linalg.qr(a)
    signs = np.sign(np.diag(r))
    signs[signs == 0] = 1.0
    q = q * signs
    r = (r.T * signs).T
    scales = np.diag(r).astype(float)
    shears = np.array([r[0, 1] / r[0, 0], r[0, 2] / r[0, 0], r[1, 2] / r[1, 1]])
    if np.linalg.det(q) > 0:
        cos = np.clip((np.trace(q) - 1.0) / 2.0, -1.0, 1.0)
        rot = float(np.degrees(np.arccos(cos)))
    else:
        rot = float("nan")
    violations = []
    if det <= 0:
        violations.append("reflection or singular matrix")
    lo, hi = limits.scale_range
    if np.any(scales < lo) or np.any(scales > hi):
        violations.append(f"scale outside [{lo}, {hi}]")
    if np.any(np.abs(shears) > limits.max_shear):
        violations.append(f"shear above {limits.max_shear}")
    if not (rot <= limits.max_rotation_deg):
        violations.append(f"rotation above {limits.max_rotation_deg} deg")
    if not np.all(np.isfinite(m)):
        violations.append("non-finite parameters")
    checks = {
        "scales": [round(float(s), 5) for s in scales],
        "shears": [round(float(s), 5) for s in shears],
        "rotation_deg": round(rot, 3),
        "translation_mm": [round(float(t), 3) for t in (matrix_ras(transform)[:3, 3])],
        "determinant": round(det, 5),
        "violations": violations,
    }
    return not violations, checks


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
        if dof == 12:
            if initial is None:
                current = _euler_to_affine(current)
            for step, f, m, fm, mm in pyramid:
                current, metric = _run_level(
                    f, m, current, seed=seed, threads=threads, sampling=sampling,
                    iterations=iterations, fixed_mask=fm, moving_mask=mm, max_step=step / 2.0,
                )
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
    return AffineRegistration(
        transform=current,
        metric=metric,
        plausible=plausible,
        checks=checks,
        seconds=time.perf_counter() - t0,
    )
