"""Functional (BOLD) image-quality metrics: GCOR, tSNR and the mean-EPI IQMs (METHODS §6).

* ``gcor`` follows AFNI ``@compute_gcor``: every in-mask voxel series is demeaned and
  scaled to unit L2 norm (``3dTnorm -norm2 -polort 0``; all-constant series stay 0), the
  unit series are averaged over the mask (``3dmaskave``) giving g(t), and
  GCOR = sum_t g(t)^2 (``3dTstat -sos``), which equals the mean of the full N x N
  correlation matrix, diagonal included.
* ``non_steady_state_volumes`` follows nipype ``NonSteadyStateDetector`` (MRIQC's dummy-scan
  detection, ``dummy_trs``): global signal (mean over all voxels) of the first 50
  volumes, modified z-score 0.6745 |g - median| / MAD, and the number of leading volumes
  with z > 3.5.
* ``tsnr`` follows nipype ``TSNR`` without detrending, as MRIQC runs it: the voxelwise
  ratio mean_t / SD_t (population SD, ddof 0; voxels with SD <= 1e-3 get 0), and MRIQC's
  IQM is its median over the brain mask.
* ``gsr`` is MRIQC's ghost-to-signal ratio along one in-plane axis: the brain mask rolled
  by N/2 along that axis minus the brain is the ghost region, the rest of the
  background the non-ghost region; GSR = (mean ghost - mean non-ghost) / median brain.
* ``snr``, ``fber``, ``efc``, ``fwhm_*`` and ``summary_{fg,bg}_*`` are computed on the mean
  EPI with negative values set to 0 (MRIQC ``FunctionalQC``) using the shared definitions
  of :mod:`isyb_dask.qc.common`, :mod:`~isyb_dask.qc.summary` and :mod:`~isyb_dask.qc.fwhm`:
  summary statistics with fg = brain mask and
  bg = its complement (binary weights), SNR = fg median / (fg SD * sqrt(n / (n - 1))),
  FBER with the *brain* mask as foreground (no rotation mask), EFC over the whole image,
  FWHM by AFNI's classic first-difference estimator within the brain mask, in voxels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from isyb_dask.qc import common
from isyb_dask.qc.fwhm import fwhm_afni
from isyb_dask.qc.summary import summary_stats_regions

__all__ = [
    "gcor",
    "gsr",
    "mean_epi_iqms",
    "non_steady_state_volumes",
    "tsnr",
    "tsnr_map",
]


def _masked_series(data: np.ndarray, mask: np.ndarray) -> np.ndarray:
    arr = np.asarray(data)
    msk = np.asarray(mask) != 0
    if arr.ndim != 4 or arr.shape[:3] != msk.shape:
        raise ValueError(f"need a 4-D series and a matching 3-D mask, got {arr.shape} and "
                         f"{msk.shape}")
    if not msk.any():
        raise ValueError("the mask is empty")
    return arr[msk]


def non_steady_state_volumes(
    data: np.ndarray, max_volumes: int = 50, thresh: float = 3.5
) -> int:
    """Number of leading non-steady-state volumes (nipype ``NonSteadyStateDetector``).

    Parameters
    ----------
    data
        Series ``(X, Y, Z, T)``.
    max_volumes
        Only the first ``max_volumes`` volumes are examined (nipype: 50).
    thresh
        Modified z-score threshold (Iglewicz & Hoaglin; nipype: 3.5).

    Returns
    -------
    int
        Count of consecutive leading volumes whose global signal has a modified z-score
        above ``thresh``. When the MAD is 0 a volume counts only if it differs from the
        median (nipype would divide by zero).
    """
    arr = np.asarray(data)
    if arr.ndim != 4:
        raise ValueError(f"need a 4-D series, got shape {arr.shape}")
    glob = arr[..., :max_volumes].mean(axis=(0, 1, 2), dtype=np.float64)
    diff = np.abs(glob - np.median(glob))
    mad = float(np.median(diff))
    if mad > 0:
        z = 0.6745 * diff / mad
    else:
        z = np.where(diff > 0, np.inf, 0.0)
    count = 0
    for value in z:
        if value <= thresh:
            break
        count += 1
    return count


def gcor(data: np.ndarray, mask: np.ndarray, chunk: int = 20000) -> float:
    """Global correlation of a BOLD series within a mask (AFNI ``@compute_gcor``).

    Parameters
    ----------
    data
        Series ``(X, Y, Z, T)`` (after head-motion correction).
    mask
        ``(X, Y, Z)``; voxels != 0 are used.
    chunk
        Voxels processed at a time (memory bound only; result unchanged).

    Returns
    -------
    float
        GCOR = sum_t (mean over voxels of the unit-norm demeaned series)^2.

    Raises
    ------
    ValueError
        On shape mismatch or an empty mask.
    """
    series = _masked_series(data, mask)
    n_vox, n_t = series.shape
    total = np.zeros(n_t, dtype=np.float64)
    for start in range(0, n_vox, chunk):
        block = series[start : start + chunk].astype(np.float64)
        block -= block.mean(axis=1, keepdims=True)
        norms = np.sqrt(np.einsum("ij,ij->i", block, block))
        nz = norms > 0
        total += (block[nz] / norms[nz, None]).sum(axis=0)
    g = total / n_vox
    return float(np.dot(g, g))


def tsnr_map(data: np.ndarray, min_sd: float = 1e-3) -> np.ndarray:
    """Voxelwise temporal SNR, mean_t / SD_t (ddof 0), 0 where SD <= ``min_sd``.

    Parameters
    ----------
    data
        Series ``(X, Y, Z, T)``.
    min_sd
        SD threshold below which the tSNR is set to 0 (nipype: 1e-3).

    Returns
    -------
    numpy.ndarray
        Float64 ``(X, Y, Z)`` map.
    """
    arr = np.asarray(data, dtype=np.float64)
    mean = arr.mean(axis=3)
    sd = arr.std(axis=3)
    out = np.zeros(mean.shape)
    ok = sd > min_sd
    out[ok] = mean[ok] / sd[ok]
    return out


def tsnr(data: np.ndarray, mask: np.ndarray, min_sd: float = 1e-3) -> float:
    """MRIQC ``tsnr``: median over the mask of :func:`tsnr_map`.

    Parameters
    ----------
    data
        Series ``(X, Y, Z, T)``.
    mask
        ``(X, Y, Z)``; voxels != 0 are used.
    min_sd
        See :func:`tsnr_map`.

    Returns
    -------
    float
        Median tSNR in the mask.
    """
    series = _masked_series(data, mask).astype(np.float64)
    mean = series.mean(axis=1)
    sd = series.std(axis=1)
    vals = np.zeros(mean.shape)
    ok = sd > min_sd
    vals[ok] = mean[ok] / sd[ok]
    return float(np.median(vals))


def gsr(mean_epi: np.ndarray, mask: np.ndarray, axis: int) -> float:
    """Ghost-to-signal ratio of an N/2 (Nyquist) ghost along one array axis (MRIQC ``gsr``).

    Parameters
    ----------
    mean_epi
        3-D mean EPI.
    mask
        Brain mask (voxels != 0).
    axis
        Array axis of the ghost (the phase-encoding axis; MRIQC reports the axes closest to
        world x and y).

    Returns
    -------
    float
        (mean of the ghost region - mean of the other background) / median in the brain.

    Raises
    ------
    ValueError
        If a region is empty.
    """
    epi = np.asarray(mean_epi, dtype=np.float64)
    brain = np.asarray(mask) != 0
    ghost = np.roll(brain, epi.shape[axis] // 2, axis=axis) & ~brain
    other = ~brain & ~ghost
    if not (brain.any() and ghost.any() and other.any()):
        raise ValueError("gsr: brain, ghost or background region is empty")
    return float((epi[ghost].mean() - epi[other].mean()) / np.median(epi[brain]))


def mean_epi_iqms(
    mean_epi: np.ndarray, mask: np.ndarray, zooms: Sequence[float]
) -> dict[str, float]:
    """Spatial IQMs of the mean EPI: SNR, FBER, EFC, FWHM and summary statistics.

    Parameters
    ----------
    mean_epi
        3-D temporal mean of the motion-corrected series.
    mask
        Brain mask (voxels != 0); must have at least 100 voxels.
    zooms
        Voxel sizes in mm (for the FWHM in voxels).

    Returns
    -------
    dict
        ``snr``, ``fber``, ``efc``, ``fwhm_x``, ``fwhm_y``, ``fwhm_z``, ``fwhm_avg`` and
        ``summary_{fg,bg}_{mean,median,p05,p95,stdv,mad,k,n}``.

    Raises
    ------
    ValueError
        If the mask has fewer than 100 voxels or shapes differ.
    """
    epi = np.asarray(mean_epi, dtype=np.float64)
    epi = np.where(np.isfinite(epi), np.maximum(epi, 0.0), 0.0)
    msk = (np.asarray(mask) != 0).astype(np.uint8)
    if epi.shape != msk.shape or epi.ndim != 3:
        raise ValueError(f"mean EPI {epi.shape} and mask {msk.shape} must be the same 3-D shape")
    if int(msk.sum()) < 100:
        raise ValueError(f"brain mask has only {int(msk.sum())} voxels (MRIQC needs >= 100)")
    stats = summary_stats_regions(epi, {"fg": msk, "bg": 1 - msk})
    out: dict[str, float] = {
        "snr": common.snr(stats["fg"]["median"], stats["fg"]["stdv"], stats["fg"]["n"]),
        "fber": common.fber(epi, msk),
        "efc": common.efc(epi),
    }
    fx, fy, fz, favg = fwhm_afni(epi, msk, zooms)
    out.update({"fwhm_x": fx, "fwhm_y": fy, "fwhm_z": fz, "fwhm_avg": favg})
    for region, vals in stats.items():
        for key, val in vals.items():
            out[f"summary_{region}_{key}"] = float(val)
    return out
