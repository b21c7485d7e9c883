"""Masks shared by the anatomy and QC: INU correction, head and rotation masks (METHODS §5.1).

Pure functions on arrays (RAS-conformed voxel grids), used by the subject's anatomical
reference (:mod:`isyb_dask.anat.reference`); the QC background masks built from the head
mask (hat, artifact, air) and the intensity harmonization are in
:mod:`isyb_dask.qc.air_masks`.

Variants (and where they differ from MRIQC >= 23.1):

* INU: SimpleITK N4 on the image shrunk to about 8 mm voxels (shrink 4 for 2 mm, 8 for
  1 mm data), 4 levels x 50 iterations, fitted inside the (atlas) brain mask, with the log
  bias field then evaluated on the full grid (MRIQC: ANTs N4 at shrink 4 with the
  SynthStrip brain mask).
* Head mask: MRIQC's gradient recipe ("enhance" of the >99.98th-percentile voxels by draws
  from the WM intensity distribution, scaling to 99.5th percentile = 100 and brain = 100,
  Gaussian gradient magnitude with sigma = 4 (2 - zooms / min(zooms)) voxels rescaled so
  that its 99.5th percentile is 100 (brain = 100), threshold 15, two closings with the radius-2 connectivity-2 structure, one erosion, union with the
  brain mask dilated twice, two largest components, hole filling). MRIQC dilates the brain
  mask with ``border_value=1``, which adds a frame along the image border that hole filling
  then turns into a full-FOV head mask whenever the frame closes; we dilate with a zero
  border.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from isyb_dask.blocks import block_factor, block_reduce, block_upsample

__all__ = ["enhance", "head_mask", "largest_components", "n4_correct", "rotation_mask"]


def n4_correct(
    data: np.ndarray,
    zooms: tuple[float, float, float],
    mask: np.ndarray | None = None,
    *,
    grid_mm: float = 8.0,
    iterations: tuple[int, ...] = (50, 50, 50, 50),
    control_points: int = 4,
    convergence: float = 1e-6,
    threads: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """N4 intensity non-uniformity correction fitted on a coarse grid (SimpleITK).

    The image is shrunk by an integer factor so that its voxels are about ``grid_mm``, the
    bias field is fitted there (inside ``mask``, or an Otsu foreground if ``mask`` is None)
    and the B-spline log field is evaluated on the full grid.

    Parameters
    ----------
    data
        Non-negative 3-D image.
    zooms
        Voxel sizes (mm).
    mask
        Fitting mask (the brain mask, as ANTs N4 in MRIQC's SynthStrip workflow).
    grid_mm
        Target voxel size of the fitting grid.
    iterations
        Maximum iterations per fitting level (number of levels = its length).
    control_points
        B-spline control points per axis at the first level.
    convergence
        N4 convergence threshold.
    threads
        SimpleITK thread count.

    Returns
    -------
    (corrected, bias)
        ``corrected = data / bias`` (float32) and the multiplicative bias field (float32).
    """
    arr = np.ascontiguousarray(np.asarray(data, dtype=np.float32).transpose(2, 1, 0))
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing([float(z) for z in zooms])
    shrink = max(1, round(grid_mm / min(zooms)))
    factors = [max(1, min(shrink, n // 8)) for n in img.GetSize()]
    small = sitk.Shrink(img, factors)
    if mask is None:
        otsu = sitk.OtsuThresholdImageFilter()
        otsu.SetInsideValue(0)
        otsu.SetOutsideValue(1)
        otsu.SetNumberOfThreads(int(threads))
        mask_arr = sitk.GetArrayFromImage(otsu.Execute(small)) > 0
        mask_arr = ndi.binary_fill_holes(mask_arr)
    else:
        full = sitk.GetImageFromArray(
            np.ascontiguousarray((np.asarray(mask) > 0).astype(np.uint8).transpose(2, 1, 0))
        )
        full.CopyInformation(img)
        mask_arr = sitk.GetArrayFromImage(sitk.Shrink(full, factors)) > 0
    mask_arr = mask_arr.astype(np.uint8)
    if mask_arr.sum() < 10:
        mask_arr[:] = 1
    mask_img = sitk.GetImageFromArray(mask_arr)
    mask_img.CopyInformation(small)
    n4 = sitk.N4BiasFieldCorrectionImageFilter()
    n4.SetMaximumNumberOfIterations([int(i) for i in iterations])
    n4.SetNumberOfControlPoints([int(control_points)] * 3)
    n4.SetConvergenceThreshold(float(convergence))
    n4.SetNumberOfThreads(int(threads))
    n4.Execute(small, mask_img)
    log_bias = n4.GetLogBiasFieldAsImage(img)
    bias = np.ascontiguousarray(
        np.exp(sitk.GetArrayFromImage(log_bias).transpose(2, 1, 0)), dtype=np.float32
    )
    corrected = (np.asarray(data, dtype=np.float32) / bias).astype(np.float32)
    return corrected, bias


def enhance(data: np.ndarray, wm_prob: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Replace voxels above the 99.98th percentile by draws from the WM distribution.

    Parameters
    ----------
    data
        Image (positive part used for the percentile).
    wm_prob
        WM probability used as weights of the mean and SD.
    rng
        Random generator (seeded by the caller).

    Returns
    -------
    numpy.ndarray
        A float32 copy with the outliers replaced.
    """
    out = np.array(data, dtype=np.float32, copy=True)
    pos = out[out > 0]
    if pos.size == 0:
        return out
    range_max = np.percentile(pos, 99.98)
    excess = out > range_max
    weights = np.clip(np.asarray(wm_prob, dtype=np.float64), 0, None)
    weights[excess] = 0
    if weights.sum() <= 0:
        return out
    mu = np.average(out, weights=weights)
    sigma = np.sqrt(np.average((out - mu) ** 2, weights=weights))
    out[excess] = rng.normal(mu, sigma, int(excess.sum())).astype(np.float32)
    return out


def head_mask(
    data: np.ndarray,
    brain_mask: np.ndarray,
    zooms: tuple[float, float, float],
    *,
    sigma: float = 4.0,
    threshold: float = 15.0,
    grid_mm: float = 2.0,
) -> np.ndarray:
    """Head mask from the gradient magnitude of the (enhanced) image, as MRIQC.

    Images finer than ``grid_mm`` are processed on a block-averaged grid of about
    ``grid_mm`` (integer factor f; brain mask block-max) with the Gaussian sigma divided by
    f (same physical smoothing) and the result is upsampled (nearest neighbour). The
    morphology then acts on coarse voxels (radius 2 = 2 f native voxels).

    Parameters
    ----------
    data
        INU-corrected (and enhanced) image.
    brain_mask
        Brain mask (forced into the head).
    zooms
        Voxel sizes (mm).
    sigma
        Base Gaussian sigma in native voxels (scaled by ``2 - zooms / min(zooms)``).
    threshold
        Gradient threshold on the 0-100 scale.
    grid_mm
        Processing grid (see above); 0 disables the coarse grid.

    Returns
    -------
    numpy.ndarray
        Boolean head mask.

    Raises
    ------
    ValueError
        If the result has fewer than 100 voxels.
    """
    shape = np.shape(data)
    f = block_factor(tuple(zooms), grid_mm) if grid_mm > 0 else 1
    img = block_reduce(np.asarray(data, dtype=np.float32), f, edge="pad").astype(np.float32)
    brain = block_reduce(np.asarray(brain_mask) > 0, f, how="max", edge="pad")
    zooms = tuple(float(z) * f for z in zooms)
    sigma = sigma / f
    datamax = np.percentile(img, 99.5)
    if datamax > 0:
        img *= 100.0 / datamax
    img[brain] = 100.0
    zooms_a = np.asarray(zooms, dtype=float)
    sig = sigma * (2.0 - zooms_a / zooms_a.min())
    grad = ndi.gaussian_gradient_magnitude(img, sig)
    gradmax = np.percentile(grad, 99.5)
    if gradmax > 0:
        grad *= 100.0 / gradmax
    grad[brain] = 100.0
    struct = ndi.iterate_structure(ndi.generate_binary_structure(3, 2), 2)
    mask = grad > threshold
    mask = ndi.binary_closing(mask, struct, iterations=2)
    mask = ndi.binary_erosion(mask, ndi.generate_binary_structure(3, 2))
    mask |= ndi.binary_dilation(brain, struct, iterations=2)
    mask = largest_components(mask, keep=2)
    mask = ndi.binary_fill_holes(mask, struct)
    mask = block_upsample(mask, f, shape)
    if int(mask.sum()) < 100:
        raise ValueError("head mask has fewer than 100 voxels")
    return mask


def largest_components(
    mask: np.ndarray, keep: int = 1, structure: np.ndarray | None = None
) -> np.ndarray:
    """Keep the ``keep`` largest connected components of a binary mask.

    Parameters
    ----------
    mask
        Binary mask.
    keep
        Number of components to keep.
    structure
        Connectivity structure for :func:`scipy.ndimage.label` (default: 6-connectivity).

    Returns
    -------
    numpy.ndarray
        Boolean mask with only the largest components.
    """
    mask = np.asarray(mask) > 0
    labels, nlab = ndi.label(mask, structure=structure)
    if nlab <= keep:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    order = np.argsort(sizes, kind="stable")[::-1][:keep]
    return np.isin(labels, order[sizes[order] > 0])


def rotation_mask(data: np.ndarray, min_voxels: int = 500) -> np.ndarray:
    """Zero-padding ("rotation") mask as MRIQC ``RotationMask``.

    Voxels <= 0, padded by one voxel of ones, opened with a 3-D connectivity-2 structure,
    the two largest components kept, un-padded; dropped (all zeros) when < ``min_voxels``.

    Parameters
    ----------
    data
        Image intensities.
    min_voxels
        Masks smaller than this are discarded.

    Returns
    -------
    numpy.ndarray
        uint8 mask, 1 = padding voxel.
    """
    mask = np.asarray(data) <= 0
    mask = np.pad(mask, 1, mode="constant", constant_values=True)
    struct = ndi.generate_binary_structure(3, 2)
    mask = ndi.binary_opening(mask, structure=struct)
    mask = largest_components(mask, keep=2)
    mask = mask[1:-1, 1:-1, 1:-1]
    if int(mask.sum()) < min_voxels:
        return np.zeros(mask.shape, dtype=np.uint8)
    return mask.astype(np.uint8)
