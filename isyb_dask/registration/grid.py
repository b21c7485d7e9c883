"""Grids and conventions shared by every registration: nibabel <-> SimpleITK, RAS <-> LPS.

SimpleITK works in LPS physical coordinates; nibabel affines are RAS. :func:`to_sitk` converts a
nibabel image exactly (``direction``/``origin`` from the affine with the x and y axes negated).
A registration transform maps *fixed* physical points to *moving* physical points (ITK
convention), so ``resample_to(moving, fixed, transform)`` brings the moving image onto the
fixed grid; :func:`matrix_ras` gives the same mapping as a 4x4 RAS matrix.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import nibabel as nb
import numpy as np
import SimpleITK as sitk
from nibabel.affines import voxel_sizes
from nibabel.orientations import apply_orientation, io_orientation, ornt_transform

__all__ = [
    "affine_from_lps",
    "downsample",
    "from_canonical",
    "matrix_ras",
    "resample_to",
    "sitk_affine",
    "sitk_threads",
    "sitk_to_array",
    "to_canonical",
    "to_sitk",
    "transform_from_ras",
]

_LPS = np.diag([-1.0, -1.0, 1.0])
_INTERP = {
    "linear": sitk.sitkLinear,
    "nearest": sitk.sitkNearestNeighbor,
    "bspline": sitk.sitkBSpline,
}


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
    spacing = voxel_sizes(affine)
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
        return affine_from_lps(total)
    tx = sitk.AffineTransform(3)
    try:
        tx.SetMatrix(transform.GetMatrix())
        tx.SetTranslation(transform.GetTranslation())
        tx.SetCenter(transform.GetCenter())
    except AttributeError as exc:  # pragma: no cover - non affine transform
        raise TypeError(f"not an affine-family transform: {transform.GetName()}") from exc
    return tx


def compose_affine(first: sitk.Transform, then: sitk.Transform) -> sitk.AffineTransform:
    """One AffineTransform that maps a point by ``first`` and the result by ``then``.

    Both are affine-family transforms (composites of affine transforms included). Used to
    seed a subject -> template registration with subject -> built-in head followed by
    built-in head -> template.
    """
    return affine_from_lps(_lps_matrix(_as_affine(then)) @ _lps_matrix(_as_affine(first)))


def affine_from_lps(m: np.ndarray) -> sitk.AffineTransform:
    """AffineTransform (centre 0) of a 4x4 matrix in LPS mm (ITK's physical space)."""
    m = np.asarray(m, dtype=float)
    tx = sitk.AffineTransform(3)
    tx.SetMatrix(m[:3, :3].ravel().tolist())
    tx.SetTranslation(m[:3, 3].tolist())
    return tx


def transform_from_ras(m: np.ndarray) -> sitk.AffineTransform:
    """AffineTransform of a 4x4 matrix in RAS mm: the inverse of :func:`matrix_ras`."""
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    return affine_from_lps(flip @ np.asarray(m, dtype=float) @ flip)


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
    whole = np.round(factors)
    if np.all(np.abs(factors - whole) < 0.01) and np.all(whole >= 1):
        # integer factors: block averaging is a cheap anti-aliased down-sampling (an axis
        # already at the step, e.g. thick slices, keeps its voxels)
        b = sitk.BinShrinkImageFilter()
        b.SetShrinkFactors([int(f) for f in whole])
        b.SetNumberOfThreads(int(threads))
        return b.Execute(image)
    sigma = [float(math.sqrt(max(step_mm**2 - s**2, 0.0)) / 2.355) for s in spacing]
    if min(sigma) > 0:
        g = sitk.SmoothingRecursiveGaussianImageFilter()
        g.SetSigma(sigma)
        g.SetNumberOfThreads(int(threads))
        smooth = g.Execute(image)
    else:  # an axis at or coarser than the step is not smoothed (ITK needs sigma > 0)
        smooth = image
        for axis, sg in enumerate(sigma):
            if sg > 0:
                r = sitk.RecursiveGaussianImageFilter()
                r.SetSigma(sg)
                r.SetDirection(axis)
                r.SetNumberOfThreads(int(threads))
                smooth = r.Execute(smooth)
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
