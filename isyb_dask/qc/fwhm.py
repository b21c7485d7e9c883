"""AFNI's classic first-difference smoothness estimate (METHODS §5.2, §6).

``3dFWHMx -ShowMeClassicFWHM`` (``mri_estimate_FWHM_1dif``) in numpy: the FWHM per axis
from the variance of first differences, in *voxels* (AFNI's mm values printed with 6
significant digits, divided by the voxel size); an invalid axis is reported as 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["FWHM_PER_SIGMA", "fwhm_afni"]

#: AFNI's sigma-to-FWHM factor (``SIGMA_TO_FWHM`` in ``mrilib.h``).
FWHM_PER_SIGMA = 2.35482


def _afni_print(value: float) -> float:
    """Value as AFNI prints it with ``%g`` (6 significant digits)."""
    return float(f"{value:g}")


def fwhm_afni(
    data: np.ndarray, mask: np.ndarray, zooms: Sequence[float]
) -> tuple[float, float, float, float]:
    """Classic AFNI 3dFWHMx FWHM (first-difference estimator) in voxels, as MRIQC reports.

    For the mask M: var = sample variance (ddof 1) of the masked values; for each axis a,
    var_a = sample variance (ddof 1) of the first differences x(i+1) - x(i) over pairs with
    both voxels in M (0 when fewer than 6 pairs); arg = 1 - var_a / (2 var);
    FWHM_a = 2.35482 sqrt(-1 / (4 ln arg)) * zoom_a when 0 < arg < 1, else invalid.
    AFNI prints 6 significant digits and 0 for an invalid axis; MRIQC divides the printed
    mm values by the voxel sizes and averages x, y, z arithmetically.

    Parameters
    ----------
    data
        3-D image (for 4-D input pass one volume; ``-detrend`` is a no-op for 3-D data).
    mask
        Voxels > 0 are used.
    zooms
        Voxel sizes (mm) along the three array axes.

    Returns
    -------
    tuple of float
        ``(fwhm_x, fwhm_y, fwhm_z, fwhm_avg)`` in voxels.

    Raises
    ------
    ValueError
        If the mask has fewer than 16 voxels (AFNI refuses such masks).
    """
    arr = np.asarray(data, dtype=np.float64)
    msk = np.asarray(mask) > 0
    if arr.ndim != 3 or arr.shape != msk.shape:
        raise ValueError(f"fwhm_afni needs matching 3-D data/mask, got {arr.shape}, {msk.shape}")
    if int(msk.sum()) < 16:
        raise ValueError("fwhm_afni: mask has fewer than 16 voxels")
    vals = arr[msk]
    count = vals.size
    fsum = float(vals.sum())
    fsq = float(np.dot(vals, vals))
    var = (fsq - fsum * fsum / count) / (count - 1.0) if count >= 9 else 0.0
    out: list[float] = []
    for axis in range(3):
        first = [slice(None)] * 3
        second = [slice(None)] * 3
        first[axis] = slice(0, -1)
        second[axis] = slice(1, None)
        pair = msk[tuple(first)] & msk[tuple(second)]
        diff = (arr[tuple(second)] - arr[tuple(first)])[pair]
        npair = diff.size
        if npair < 6:
            var_a = 0.0
        else:
            dsum = float(diff.sum())
            var_a = (float(np.dot(diff, diff)) - dsum * dsum / npair) / (npair - 1.0)
        fwhm_mm = 0.0
        if count >= 9 and fsq > 0 and var > 0:
            arg = 1.0 - 0.5 * (var_a / var)
            if 0.0 < arg < 1.0:
                fwhm_mm = FWHM_PER_SIGMA * math.sqrt(-1.0 / (4.0 * math.log(arg))) * zooms[axis]
        out.append(_afni_print(fwhm_mm) / float(zooms[axis]))
    return out[0], out[1], out[2], float(np.mean(out))
