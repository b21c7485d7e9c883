"""Masks for the anatomical IQMs: INU correction, head, hat, artifact and air masks (METHODS §5.1).

Pure functions on arrays (RAS-conformed voxel grids). The stage
(:mod:`isyb_dask.qc.anat_stage`) chains them; registration of the reference atlas lives in
:mod:`isyb_dask.qc.segmentation`'s caller because it needs SimpleITK images.

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
* Hat mask: complement of the head mask with the slices below the inion and, in the
  anterior half of the y axis, below the glabella set to "head" (landmarks in MNI mm mapped
  to the image through the template registration). The slice indices are clipped to the
  grid (MRIQC would wrap around with a negative index).
* Artifact mask: hat voxels whose intensity divided by the MAD of the positive hat voxels
  exceeds ``zscore`` (10), ignoring voxels whose distance to the head, normalised by its
  maximum over the hat region, is below 0.10, opened with 6-connectivity. (MRIQC's current
  code zeroes that distance inside the hat region before the test, which leaves the
  artifact mask empty; we follow the documented intent.)
* Air mask: hat minus artifacts minus rotation (zero-padding) voxels minus every region
  removed by defacing (``exclude_masks``, 0 = removed), so that defaced zeros do not bias
  the background statistics (mriqc#1182).
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from isyb_dask.qc.common import GAUSSIAN_3_4, largest_components

__all__ = [
    "GLABELLA_MNI",
    "INION_MNI",
    "air_mask",
    "artifact_mask",
    "enhance",
    "hat_mask",
    "head_mask",
    "n4_correct",
    "wm_harmonize_factor",
    "wm_harmonize_route",
    "HARMONIZE_ROUTES",
]

#: Glabella and inion in MNI152NLin2009cAsym world mm (MRIQC ``ArtifactMask`` defaults).
GLABELLA_MNI = (0.0, 90.0, -14.0)
INION_MNI = (0.0, -120.0, -14.0)


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


def _block_factor(zooms: tuple[float, ...], grid_mm: float) -> int:
    return max(1, round(grid_mm / min(zooms)))


def _downsample(arr: np.ndarray, f: int, how: str) -> np.ndarray:
    """Block mean (``how="mean"``) or block max (``"max"``) by an integer factor (edge-padded)."""
    if f == 1:
        return arr
    pad = [(0, (-n) % f) for n in arr.shape]
    a = np.pad(arr, pad, mode="edge")
    shp = []
    for n in a.shape:
        shp += [n // f, f]
    a = a.reshape(shp)
    return a.mean(axis=(1, 3, 5)) if how == "mean" else a.max(axis=(1, 3, 5))


def _upsample(arr: np.ndarray, f: int, shape: tuple[int, ...]) -> np.ndarray:
    """Nearest-neighbour upsampling by an integer factor, cropped to ``shape``."""
    if f == 1:
        return arr
    out = arr
    for axis in range(3):
        out = np.repeat(out, f, axis=axis)
    return np.ascontiguousarray(out[: shape[0], : shape[1], : shape[2]])


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
    f = _block_factor(tuple(zooms), grid_mm) if grid_mm > 0 else 1
    img = _downsample(np.asarray(data, dtype=np.float32), f, "mean").astype(np.float32)
    brain = _downsample(np.asarray(brain_mask) > 0, f, "max")
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
    mask = _upsample(mask, f, shape)
    if int(mask.sum()) < 100:
        raise ValueError("head mask has fewer than 100 voxels")
    return mask


def _landmark_slice(point_vox: np.ndarray, size: int) -> int:
    return int(np.clip(int(point_vox), 0, size))


def hat_mask(
    head: np.ndarray,
    affine: np.ndarray,
    mni_to_image_mm: np.ndarray,
    *,
    glabella_mni: tuple[float, float, float] = GLABELLA_MNI,
    inion_mni: tuple[float, float, float] = INION_MNI,
) -> tuple[np.ndarray, dict[str, float]]:
    """Air above the nasion-inion planes ("hat"), on a RAS-conformed grid.

    Parameters
    ----------
    head
        Head mask (RAS voxel order: k increases superiorly, j anteriorly).
    affine
        Voxel-to-world affine of the image.
    mni_to_image_mm
        4x4 matrix mapping MNI world mm to image world mm.
    glabella_mni, inion_mni
        Landmarks in MNI mm.

    Returns
    -------
    (hat, landmarks)
        Boolean hat mask and the voxel slice indices used (``inion_k``, ``glabella_k``).
    """
    pts = np.array([[*glabella_mni, 1.0], [*inion_mni, 1.0]]).T
    vox = np.linalg.inv(affine) @ (np.asarray(mni_to_image_mm) @ pts)
    glabella_k = _landmark_slice(vox[2, 0], head.shape[2])
    inion_k = _landmark_slice(vox[2, 1], head.shape[2])
    filled = np.asarray(head) > 0
    filled = filled.copy()
    filled[:, :, :inion_k] = True
    filled[:, head.shape[1] // 2 :, :glabella_k] = True
    return ~filled, {"inion_k": float(inion_k), "glabella_k": float(glabella_k)}


def artifact_mask(
    data: np.ndarray,
    hat: np.ndarray,
    head: np.ndarray,
    *,
    zscore: float = 10.0,
    zooms: tuple[float, float, float] = (1.0, 1.0, 1.0),
    grid_mm: float = 2.0,
) -> np.ndarray:
    """Artifact voxels in the hat region (Mortamet et al. 2009, as MRIQC ``ArtifactMask``).

    Parameters
    ----------
    data
        Image intensities (original scale).
    hat
        Hat (air) mask.
    head
        Head mask (for the distance to the head).
    zscore
        Threshold on intensity / MAD of the positive hat voxels.
    zooms, grid_mm
        The distance to the head is computed on a block grid of about ``grid_mm``
        (nearest-neighbour upsampled; it is only compared with 10 % of its maximum).

    Returns
    -------
    numpy.ndarray
        Boolean artifact mask (subset of ``hat``).
    """
    hat = np.asarray(hat) > 0
    out = np.zeros(hat.shape, dtype=bool)
    bg = np.asarray(data, dtype=np.float64)[hat]
    pos = bg[bg > 0]
    if pos.size < 10:
        return out
    spread = np.median(np.abs(pos - np.median(pos))) / GAUSSIAN_3_4
    if spread <= 0:
        return out
    out[hat] = bg / spread > zscore
    if not out.any():
        return out
    f = _block_factor(tuple(zooms), grid_mm) if grid_mm > 0 else 1
    coarse_head = _downsample(np.asarray(head) > 0, f, "max")
    dist = _upsample(ndi.distance_transform_edt(~coarse_head), f, hat.shape)
    dmax = dist[hat].max() if hat.any() else 0.0
    if dmax > 0:
        out &= dist / dmax >= 0.10
    out = ndi.binary_opening(out, ndi.generate_binary_structure(3, 1))
    return out & hat


def air_mask(
    hat: np.ndarray,
    artifacts: np.ndarray,
    rotation: np.ndarray | None = None,
    exclude: tuple[np.ndarray, ...] | list[np.ndarray] = (),
) -> np.ndarray:
    """Final air mask: hat minus artifacts, rotation padding and defaced regions.

    Parameters
    ----------
    hat
        Hat mask.
    artifacts
        Artifact mask.
    rotation
        Rotation / zero-padding mask (> 0 excluded).
    exclude
        Face masks written by the deface stage (``desc-face<Template>_mask``: 1 = the region
        that face masking may change); their ones are excluded from the air mask.

    Returns
    -------
    numpy.ndarray
        Boolean air mask.
    """
    air = (np.asarray(hat) > 0) & ~(np.asarray(artifacts) > 0)
    if rotation is not None:
        air &= ~(np.asarray(rotation) > 0)
    for face in exclude:
        air &= ~(np.asarray(face) > 0)
    return air


def wm_harmonize_factor(
    data: np.ndarray,
    wm_prob: np.ndarray,
    *,
    thresh: float = 0.9,
    erode: bool = True,
    brain: np.ndarray | None = None,
    min_voxels: int = 30,
) -> float:
    """MRIQC ``Harmonize`` factor 1000 / median(data in WM); see :func:`wm_harmonize_route`."""
    return wm_harmonize_route(
        data, wm_prob, thresh=thresh, erode=erode, brain=brain, min_voxels=min_voxels
    )[0]


#: Reference regions of the harmonization, in the order they are tried.
HARMONIZE_ROUTES = ("wm_eroded", "wm", "fallback: brain_p75_p95")


def wm_harmonize_route(
    data: np.ndarray,
    wm_prob: np.ndarray,
    *,
    thresh: float = 0.9,
    erode: bool = True,
    brain: np.ndarray | None = None,
    min_voxels: int = 30,
) -> tuple[float, str]:
    """MRIQC ``Harmonize`` factor 1000 / median(data in WM), WM = P(WM) >= thresh, eroded,
    and which reference region gave it.

    When fewer than ``min_voxels`` WM voxels remain (coarse voxels: partial volume keeps
    P(WM) below 0.9), the un-eroded mask is used, and then, as some MRIQC versions do, the
    brain voxels whose intensity lies between the 75th and 95th percentiles (METHODS §5.1).

    Parameters
    ----------
    data
        INU-corrected image.
    wm_prob
        WM posterior.
    thresh
        Probability threshold.
    erode
        Erode the WM mask with the 3-D connectivity-2 structure.
    brain
        Brain mask for the percentile fallback (none: no fallback).
    min_voxels
        Smallest usable WM mask.

    Returns
    -------
    factor, route
        The scaling factor and one of :data:`HARMONIZE_ROUTES` (``"wm_eroded"``, ``"wm"``
        or ``"fallback: brain_p75_p95"``), recorded in the store (``qc_anat``
        ``harmonization_route``).

    Raises
    ------
    ValueError
        If no usable reference region is found.
    """
    values = np.asarray(data)
    wm = np.asarray(wm_prob) >= thresh
    route = "wm"
    if erode:
        eroded = ndi.binary_erosion(wm, ndi.generate_binary_structure(3, 2))
        if eroded.sum() >= min_voxels:
            wm, route = eroded, "wm_eroded"
    if wm.sum() < min_voxels and brain is not None and np.asarray(brain).any():
        inside = values[np.asarray(brain, bool)]
        lo, hi = np.percentile(inside, [75, 95])
        wm = np.asarray(brain, bool) & (values >= lo) & (values <= hi)
        route = HARMONIZE_ROUTES[2]
    if wm.sum() < min_voxels:
        raise ValueError("harmonization: empty white-matter mask")
    med = float(np.median(values[wm]))
    if med <= 0:
        raise ValueError("harmonization: non-positive WM median")
    return 1000.0 / med, route
