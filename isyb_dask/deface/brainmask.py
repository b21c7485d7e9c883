"""The subject's own brain mask for the brain guarantee when no anatomy is given.

When the per-subject anatomical reference (:mod:`isyb_dask.anat.reference`) is not
available, the deface stage estimates the brain itself: the reference atlas brain mask
(on the built-in head's grid) is carried to the subject by the built-in head's
registration, then grown by at most ``grow_mm`` into connected voxels whose intensity is
that of brain tissue (above half the median of the carried mask), so that a brain larger
than the affinely mapped atlas one is still protected. The result is never smaller than the
carried mask.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from nibabel.affines import voxel_sizes
from scipy import ndimage as ndi

from isyb_dask import registration as reg
from isyb_dask.blocks import padded_box

__all__ = ["grow_brain", "subject_brain_mask"]


def grow_brain(data: np.ndarray, brain: np.ndarray, voxel_mm: np.ndarray, grow_mm: float) -> np.ndarray:
    """Grow ``brain`` by up to ``grow_mm`` into connected tissue-bright voxels."""
    brain = np.asarray(brain, dtype=bool)
    if not brain.any() or grow_mm <= 0:
        return brain
    d = np.asarray(data, dtype=np.float32)
    thr = 0.5 * float(np.median(d[brain]))
    vox = np.asarray(voxel_mm, dtype=float)
    pad = np.ceil(grow_mm / vox).astype(int) + 1
    box = padded_box(brain, pad)
    near = ndi.distance_transform_edt(~brain[box], sampling=vox) <= grow_mm
    cand = (near & (d[box] > thr)) | brain[box]
    lab, _ = ndi.label(cand)
    keep = np.unique(lab[brain[box]])
    out = brain.copy()
    out[box] |= np.isin(lab, keep[keep > 0])
    return out


def subject_brain_mask(
    data: np.ndarray,
    affine: np.ndarray,
    registration: reg.AffineRegistration,
    atlas_brain: sitk.Image,
    *,
    grow_mm: float = 3.0,
    threads: int = 1,
) -> np.ndarray:
    """Brain mask of the subject (canonical grid) from the built-in head's registration.

    Parameters
    ----------
    data, affine
        Subject image and affine (canonical grid).
    registration
        Subject -> built-in head registration.
    atlas_brain
        Reference atlas brain mask on the built-in head's grid (uint8 SimpleITK image).
    grow_mm
        Largest growth into brain-bright voxels (:func:`grow_brain`).
    threads
        SimpleITK threads.
    """
    fixed = reg.to_sitk(np.zeros(np.asarray(data).shape, np.float32), affine)
    warped = reg.sitk_to_array(
        reg.resample_to(sitk.Cast(atlas_brain, sitk.sitkFloat32), fixed, registration.transform,
                        "linear", threads=threads)
    ) > 0.5
    vox = voxel_sizes(np.asarray(affine))
    return grow_brain(data, warped, vox, grow_mm)
