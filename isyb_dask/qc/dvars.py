"""DVARS and standardised DVARS (Power 2012; Nichols 2013) as nipype ``compute_dvars``.

Steps (METHODS §6; nipype ``ComputeDVARS`` interface defaults, as MRIQC runs it):

1. in-mask voxel series (float32) scaled by ``1000 / median`` of all in-mask values over
   voxels and time (intensity normalisation);
2. robust SD per voxel, ``(P75 - P25) / 1.349`` with numpy ``method="lower"`` percentiles;
   voxels with robust SD <= ``variance_tol`` (1e-7) are dropped;
3. lag-1 autocorrelation ``rho`` per voxel by Yule-Walker on the demeaned series
   (biased autocovariances: ``rho = sum x_t x_{t+1} / sum x_t^2``, as nitime ``AR_est_YW``);
4. predicted SD of the temporal difference ``s_v = sqrt(2 (1 - rho_v)) * SD_v``;
5. ``dvars_t = sqrt(mean_v (x_{v,t} - x_{v,t-1})^2)`` (T-1 values);
6. ``std_dvars_t = dvars_t / mean_v(s_v)`` and
   ``vx_dvars_t = sqrt(mean_v ((x_{v,t} - x_{v,t-1}) / s_v)^2)``.

MRIQC's ``dvars_std``, ``dvars_nstd`` and ``dvars_vstd`` are the time means of
``std_dvars``, ``dvars`` and ``vx_dvars`` respectively (its ``ComputeDVARS`` output columns
are ``std, nstd, vxstd``).

The only difference from nipype is arithmetic: the autocorrelation is a direct float64 sum
instead of an FFT convolution of float32 data, and differences are accumulated in float64
(relative differences ~1e-6).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["DVARS", "compute_dvars", "dvars_summary"]


class DVARS(NamedTuple):
    """Per-frame DVARS series (each ``T - 1`` values, frame ``t`` vs ``t - 1``)."""

    std_dvars: np.ndarray
    dvars: np.ndarray
    vx_dvars: np.ndarray
    n_voxels: int


def _lag1_autocorrelation(series: np.ndarray) -> np.ndarray:
    """Yule-Walker AR(1) coefficient of each row (demeaned, biased autocovariance)."""
    demeaned = series.astype(np.float64) - series.mean(axis=1, dtype=np.float64)[:, None]
    # nipype casts the demeaned series to float32 before the AR fit.
    demeaned = demeaned.astype(np.float32).astype(np.float64)
    r0 = np.einsum("ij,ij->i", demeaned, demeaned)
    r1 = np.einsum("ij,ij->i", demeaned[:, 1:], demeaned[:, :-1])
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = np.where(r0 > 0, r1 / r0, 0.0)
    return rho


def compute_dvars(
    data: np.ndarray,
    mask: np.ndarray,
    *,
    intensity_normalization: float = 1000.0,
    remove_zerovariance: bool = True,
    variance_tol: float = 1e-7,
) -> DVARS:
    """Standardised, non-standardised and voxelwise-standardised DVARS.

    Parameters
    ----------
    data
        Motion-corrected series ``(X, Y, Z, T)``.
    mask
        Brain mask ``(X, Y, Z)``; voxels != 0 are used.
    intensity_normalization
        Target median after scaling (0 disables the scaling).
    remove_zerovariance
        Drop voxels whose robust SD is <= ``variance_tol``.
    variance_tol
        Robust-SD tolerance of the zero-variance removal.

    Returns
    -------
    DVARS
        ``std_dvars``, ``dvars``, ``vx_dvars`` (float64, ``T - 1`` each) and the number of
        voxels used.

    Raises
    ------
    ValueError
        If shapes do not match, there are fewer than 3 volumes, the in-mask median is not
        positive or no voxel is left.
    """
    arr = np.asarray(data)
    msk = np.asarray(mask) != 0
    if arr.ndim != 4 or arr.shape[:3] != msk.shape:
        raise ValueError(f"DVARS needs a 4-D series and a matching 3-D mask, got "
                         f"{arr.shape} and {msk.shape}")
    if arr.shape[3] < 3:
        raise ValueError(f"DVARS needs at least 3 volumes, got {arr.shape[3]}")
    mfunc = np.asarray(arr[msk], dtype=np.float32)
    if mfunc.shape[0] == 0:
        raise ValueError("DVARS: the mask is empty")
    if intensity_normalization != 0:
        median = np.median(mfunc)
        if not median > 0:
            raise ValueError(f"DVARS: in-mask median is {median} (must be > 0 to normalise)")
        mfunc = (mfunc / median) * np.float32(intensity_normalization)
    p75 = np.percentile(mfunc, 75, axis=1, method="lower")
    p25 = np.percentile(mfunc, 25, axis=1, method="lower")
    robust_sd = (p75 - p25) / 1.349
    if remove_zerovariance:
        keep = robust_sd > variance_tol
        mfunc = mfunc[keep]
        robust_sd = robust_sd[keep]
    if mfunc.shape[0] == 0:
        raise ValueError("DVARS: every in-mask voxel has zero variance")
    rho = _lag1_autocorrelation(mfunc)
    diff_sdhat = np.sqrt(2.0 * (1.0 - rho)) * robust_sd.astype(np.float64)
    diff = np.diff(mfunc.astype(np.float64), axis=1)
    dvars = np.sqrt(np.mean(diff**2, axis=0))
    std_dvars = dvars / diff_sdhat.mean()
    with np.errstate(divide="ignore", invalid="ignore"):
        vx = np.sqrt(np.mean((diff / diff_sdhat[:, None]) ** 2, axis=0))
    return DVARS(std_dvars=std_dvars, dvars=dvars, vx_dvars=vx, n_voxels=int(mfunc.shape[0]))


def dvars_summary(result: DVARS) -> dict[str, float]:
    """MRIQC DVARS IQMs (time means).

    Parameters
    ----------
    result
        Output of :func:`compute_dvars`.

    Returns
    -------
    dict
        ``dvars_std`` (mean standardised DVARS), ``dvars_nstd`` (mean DVARS, x10 %ΔBOLD
        units after the 1000/median scaling) and ``dvars_vstd`` (mean voxelwise-standardised
        DVARS).
    """
    return {
        "dvars_std": float(np.mean(result.std_dvars)),
        "dvars_nstd": float(np.mean(result.dvars)),
        "dvars_vstd": float(np.mean(result.vx_dvars)),
    }
