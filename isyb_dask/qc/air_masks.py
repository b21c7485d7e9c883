"""QC background masks (hat, artifact, air) and the WM intensity harmonization (METHODS §5.1).

Pure functions on arrays (RAS-conformed voxel grids), built from the anatomy's head mask
(:func:`isyb_dask.anat.masks.head_mask`); the stage (:mod:`isyb_dask.qc.anat_stage`)
chains them.

Variants (and where they differ from MRIQC >= 23.1):

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
* Harmonization: ``1000 / median`` of the INU-corrected image in the eroded WM
  (P(WM) >= 0.9), then the un-eroded WM, then the 75th-95th percentile brain voxels.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from isyb_dask.blocks import block_factor, block_reduce, block_upsample
from isyb_dask.qc.common import GAUSSIAN_3_4

__all__ = [
    "GLABELLA_MNI",
    "HARMONIZE_ROUTES",
    "INION_MNI",
    "air_mask",
    "artifact_mask",
    "hat_mask",
    "wm_harmonize_factor",
    "wm_harmonize_route",
]

#: Glabella and inion in MNI152NLin2009cAsym world mm (MRIQC ``ArtifactMask`` defaults).
GLABELLA_MNI = (0.0, 90.0, -14.0)
INION_MNI = (0.0, -120.0, -14.0)


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
    f = block_factor(tuple(zooms), grid_mm) if grid_mm > 0 else 1
    coarse_head = block_reduce(np.asarray(head) > 0, f, how="max", edge="pad")
    dist = block_upsample(ndi.distance_transform_edt(~coarse_head), f, hat.shape)
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
