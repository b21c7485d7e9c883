"""Image-quality metrics shared by the anatomical and functional QC (METHODS §5.2, §5.3, §6).

Pure numpy implementations of the *current* MRIQC definitions (nipreps/mriqc >= 23.1,
``mriqc/qc/anatomical.py`` and ``mriqc/interfaces/anatomical.py``) and of AFNI's classic
first-difference FWHM estimator (``3dFWHMx -ShowMeClassicFWHM``, ``mri_estimate_FWHM_1dif``).
Every function takes arrays and returns Python floats / arrays; nothing touches files.

Conventions (identical to MRIQC unless stated):

* summary statistics are *weighted* by a partial-volume map (PVM) or a 0/1 mask, with the
  data rounded to ``rprec_data`` decimals and the weights to ``rprec_prob`` decimals before
  the weighted mean, SD (population, ddof 0) and quantiles (SAS definition as in
  ``statsmodels.stats.weightstats.DescrStatsW.quantile``); kurtosis and MAD use the
  un-rounded voxels whose weight exceeds half the maximum weight; results are rounded to
  ``decimals`` places (MRIQC: 4).
* ``snr`` uses the region *median* (MRIQC's code does; its docstring says mean).
* FBER/EFC are rounded to 4 decimals; FBER is -1 when the background energy is < 1e-3.
* FWHM values are in *voxels*: AFNI's mm values printed with 6 significant digits, divided
  by the voxel size; an invalid axis is reported as 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage as ndi
from scipy.stats import kurtosis as _kurtosis

__all__ = [
    "DIETRICH_FACTOR",
    "FWHM_PER_SIGMA",
    "GAUSSIAN_3_4",
    "STAT_KEYS",
    "cjv",
    "cnr",
    "efc",
    "fber",
    "fwhm_afni",
    "largest_components",
    "rotation_mask",
    "snr",
    "snr_dietrich",
    "snr_region",
    "summary_stats",
    "summary_stats_regions",
    "volume_fractions",
    "weighted_quantiles",
]

#: Normal quantile at 3/4 (``scipy.stats.norm.ppf(0.75)``), the MAD consistency constant.
GAUSSIAN_3_4 = 0.6744897501960817
#: AFNI's sigma-to-FWHM factor (``SIGMA_TO_FWHM`` in ``mrilib.h``).
FWHM_PER_SIGMA = 2.35482

#: Keys of the dict returned by :func:`summary_stats` (MRIQC ``summary_<region>_<key>``).
STAT_KEYS = ("mean", "median", "p05", "p95", "stdv", "mad", "k", "n")


def _maybe_round(value: float, decimals: int | None) -> float:
    value = float(value)
    return value if decimals is None else round(value, decimals)


class _Prepared:
    """Rounded data and its distinct values, shared by the regions of one image."""

    def __init__(self, data: np.ndarray, rprec_data: int) -> None:
        self.flat = np.asarray(data).reshape(-1)
        self.rdata = np.round(self.flat.astype(np.float64), rprec_data)
        self.vmin = 0.0
        self.idx: np.ndarray | None = None
        self.present: np.ndarray | None = None
        finite = bool(np.isfinite(self.rdata).all())
        if finite and self.rdata.size:
            vmin = float(self.rdata.min())
            vmax = float(self.rdata.max())
            if vmax - vmin < 2e7 and rprec_data == 0:
                # Fast exact path for integer-valued data (MRIQC rounds to 0 decimals).
                self.vmin = vmin
                self.idx = (self.rdata - vmin).astype(np.int64)
                self.present = np.bincount(self.idx) > 0

    def groups(self, sel: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Distinct sorted values of the *whole* image with the summed weights of ``sel``.

        Zero-weight values are kept as groups, as statsmodels does (they matter when a
        quantile target hits a cumulative weight exactly).
        """
        if self.idx is not None and self.present is not None:
            wsum = np.bincount(self.idx[sel], weights=weights, minlength=self.present.size)
            uniq = np.flatnonzero(self.present)
            return uniq.astype(np.float64) + self.vmin, wsum[uniq]
        full = np.zeros(self.rdata.size, dtype=np.float64)
        full[sel] = weights
        uniq, inverse = np.unique(self.rdata, return_inverse=True)
        return uniq, np.bincount(inverse.ravel(), weights=full, minlength=uniq.size)


def _sas_quantiles(uniq: np.ndarray, wsum: np.ndarray, probs: Sequence[float]) -> np.ndarray:
    cweights = np.cumsum(wsum)
    targets = np.asarray(probs, dtype=np.float64) * cweights[-1]
    ii = np.minimum(np.searchsorted(cweights, targets), cweights.size - 1)
    out = uniq[ii].copy()
    exact = (np.abs(targets - cweights[ii]) < 1e-10) & (ii < cweights.size - 1)
    out[exact] = (uniq[ii[exact]] + uniq[ii[exact] + 1]) / 2.0
    return out


def weighted_quantiles(
    values: np.ndarray, weights: np.ndarray, probs: Sequence[float]
) -> np.ndarray:
    """Weighted quantiles with the SAS definition used by statsmodels ``DescrStatsW``.

    Weights are summed over exact ties, giving distinct values y_1 < y_2 < ... with
    cumulative weights s_j and total W. For probability p: if pW falls strictly between
    s_j and s_{j+1} the quantile is y_{j+1}; if pW equals s_j (within 1e-10) it is
    (y_j + y_{j+1}) / 2; if pW < s_1 it is y_1.

    Parameters
    ----------
    values
        Data values (any shape, flattened).
    weights
        Non-negative weights, same size as ``values``.
    probs
        Probability points in [0, 1].

    Returns
    -------
    numpy.ndarray
        One quantile per probability point.
    """
    vals = np.asarray(values, dtype=np.float64).ravel()
    wts = np.asarray(weights, dtype=np.float64).ravel()
    uniq, inverse = np.unique(vals, return_inverse=True)
    wsum = np.bincount(inverse.ravel(), weights=wts, minlength=uniq.size)
    return _sas_quantiles(uniq, wsum, probs)


def _region_stats(
    prep: _Prepared, pvm: np.ndarray, rprec_prob: int, decimals: int | None
) -> dict[str, float]:
    prob = np.asarray(pvm).reshape(-1)
    if prob.size != prep.flat.size:
        raise ValueError(f"data size {prep.flat.size} != weight map size {prob.size}")
    prob = prob.astype(np.float32, copy=False)
    pmax = float(prob.max()) if prob.size else 0.0
    if not pmax > 0:
        raise ValueError("summary_stats: region is empty (no positive weight)")
    sel = np.flatnonzero(prob > 0)
    psel = prob[sel]
    rw = np.round(psel, rprec_prob).astype(np.float64)
    xsel = prep.rdata[sel]
    sumw = rw.sum()
    mean = float(np.dot(xsel, rw) / sumw)
    stdv = math.sqrt(float(np.dot((xsel - mean) ** 2, rw) / sumw))
    uniq, wsum = prep.groups(sel, rw)
    p05, median, p95 = _sas_quantiles(uniq, wsum, (0.05, 0.5, 0.95))
    thresholded = prep.flat[sel[psel > 0.5 * pmax]].astype(np.float64)
    kurt = float(_kurtosis(thresholded)) if thresholded.size > 1 else float("nan")
    mad = float(np.median(np.abs(thresholded - median) / GAUSSIAN_3_4))
    return {
        "mean": _maybe_round(mean, decimals),
        "median": _maybe_round(median, decimals),
        "p05": _maybe_round(p05, decimals),
        "p95": _maybe_round(p95, decimals),
        "stdv": _maybe_round(stdv, decimals),
        "mad": _maybe_round(mad, decimals),
        "k": _maybe_round(kurt, decimals),
        "n": float(psel.astype(np.float64).sum()),
    }


def summary_stats(
    data: np.ndarray,
    pvm: np.ndarray,
    *,
    rprec_data: int = 0,
    rprec_prob: int = 3,
    decimals: int | None = 4,
) -> dict[str, float]:
    """Weighted summary statistics of one region, as current MRIQC ``summary_stats``.

    Parameters
    ----------
    data
        Image intensities (3-D, any float dtype).
    pvm
        Partial-volume / probability map of the region, or a 0/1 mask (same shape).
        Negative weights are ignored.
    rprec_data, rprec_prob
        Decimals to which data and weights are rounded before the weighted statistics.
    decimals
        Decimals of the returned values (``None``: no rounding). ``n`` is never rounded.

    Returns
    -------
    dict
        ``mean`` (weighted), ``median``, ``p05``, ``p95`` (weighted SAS quantiles),
        ``stdv`` (weighted population SD), ``mad`` (normalised MAD around the weighted
        median) and ``k`` (Fisher kurtosis, biased) of the voxels with weight
        > 0.5 * max(weight), and ``n`` = sum of the (unrounded) weights.

    Raises
    ------
    ValueError
        If shapes differ or the region has no positive weight.
    """
    if np.shape(data) != np.shape(pvm):
        raise ValueError(f"data shape {np.shape(data)} != weight map shape {np.shape(pvm)}")
    return _region_stats(_Prepared(data, rprec_data), pvm, rprec_prob, decimals)


def summary_stats_regions(
    data: np.ndarray,
    pvms: Mapping[str, np.ndarray],
    *,
    rprec_data: int = 0,
    rprec_prob: int = 3,
    decimals: int | None = 4,
) -> dict[str, dict[str, float]]:
    """:func:`summary_stats` for several regions (``{"bg": air, "csf": ..., ...}``).

    The data are rounded and indexed once for all regions.

    Parameters
    ----------
    data
        Image intensities.
    pvms
        Region name -> weight map (same shape as ``data``).
    rprec_data, rprec_prob, decimals
        As in :func:`summary_stats`.

    Returns
    -------
    dict
        Region name -> statistics dict.
    """
    prep = _Prepared(data, rprec_data)
    out = {}
    for name, pvm in pvms.items():
        if np.shape(pvm) != np.shape(data):
            raise ValueError(f"region {name!r}: shape {np.shape(pvm)} != {np.shape(data)}")
        out[name] = _region_stats(prep, pvm, rprec_prob, decimals)
    return out


def snr(median: float, stdv: float, n: float) -> float:
    """Single-region SNR = median / (stdv * sqrt(n / (n - 1))) (MRIQC ``snr``).

    Parameters
    ----------
    median
        Region median (MRIQC passes the median as the "mean" argument).
    stdv
        Region (weighted population) standard deviation.
    n
        Region size (sum of weights).

    Returns
    -------
    float
        The SNR (``nan`` when ``n <= 1`` or ``stdv == 0``).
    """
    if n <= 1 or stdv == 0:
        return float("nan")
    return float(median / (stdv * math.sqrt(n / (n - 1.0))))


def snr_region(data: np.ndarray, pvm: np.ndarray, **kwargs: int | None) -> float:
    """SNR of one region computed from :func:`summary_stats` of ``data`` in ``pvm``.

    Parameters
    ----------
    data
        Image intensities.
    pvm
        Weight map or 0/1 mask of the region.
    **kwargs
        Passed to :func:`summary_stats`.

    Returns
    -------
    float
        ``snr(median, stdv, n)``.
    """
    stats = summary_stats(data, pvm, **kwargs)
    return snr(stats["median"], stats["stdv"], stats["n"])


def cnr(mu_wm: float, mu_gm: float, sigma_air: float, sigma_wm: float, sigma_gm: float) -> float:
    """CNR = |mu_wm - mu_gm| / sqrt(sigma_air^2 + sigma_wm^2 + sigma_gm^2) (MRIQC ``cnr``).

    Parameters
    ----------
    mu_wm, mu_gm
        WM and GM location (MRIQC passes the medians).
    sigma_air, sigma_wm, sigma_gm
        Standard deviations of air, WM and GM.

    Returns
    -------
    float
        The contrast-to-noise ratio.
    """
    return float(abs(mu_wm - mu_gm) / math.sqrt(sigma_air**2 + sigma_wm**2 + sigma_gm**2))


#: 1 / sqrt(2 / (4 - pi)): Rayleigh correction of the air SD (Dietrich et al. 2007, A.12).
DIETRICH_FACTOR = 0.6551364


def snr_dietrich(median: float, mad_air: float, sigma_air: float) -> float:
    """Dietrich SNR (MRIQC ``snr_dietrich``): 0.6551364 * median / MAD(air).

    Falls back to the air SD when MAD(air) <= 1 (typical of zero-filled backgrounds) and
    returns -1 when that SD is <= 1e-3 as well.

    Parameters
    ----------
    median
        Tissue median.
    mad_air, sigma_air
        MAD and SD of the air region.

    Returns
    -------
    float
        The SNR.
    """
    if mad_air > 1.0:
        return float(DIETRICH_FACTOR * median / mad_air)
    return float(DIETRICH_FACTOR * median / sigma_air) if sigma_air > 1e-3 else -1.0


def volume_fractions(pvms: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Intracranial volume fractions: sum of each PVM over the sum of all (MRIQC ``icvs_*``).

    Parameters
    ----------
    pvms
        Tissue name -> partial-volume map.

    Returns
    -------
    dict
        Tissue name -> fraction (they sum to 1).
    """
    sums = {k: float(np.asarray(v, dtype=np.float64).sum()) for k, v in pvms.items()}
    total = sum(sums.values())
    return {k: v / total for k, v in sums.items()}


def cjv(mu_wm: float, mu_gm: float, sigma_wm: float, sigma_gm: float) -> float:
    """Coefficient of joint variation (sigma_wm + sigma_gm) / |mu_wm - mu_gm|.

    Parameters
    ----------
    mu_wm, mu_gm
        WM and GM location.
    sigma_wm, sigma_gm
        WM and GM standard deviations.

    Returns
    -------
    float
        The CJV (lower is better).
    """
    return float((sigma_wm + sigma_gm) / abs(mu_wm - mu_gm))


def fber(
    data: np.ndarray,
    head_mask: np.ndarray,
    rotation_mask: np.ndarray | None = None,
    *,
    decimals: int | None = 4,
) -> float:
    """Foreground-background energy ratio (MRIQC ``fber``).

    FBER = median(|x|^2 in head) / median(|x|^2 outside the head and the rotation mask).

    Parameters
    ----------
    data
        Image intensities.
    head_mask
        Foreground (head for T1w, brain for BOLD); voxels > 0 are foreground.
    rotation_mask
        Zero-padding voxels (> 0) excluded from the background.
    decimals
        Rounding of the result (MRIQC: 4).

    Returns
    -------
    float
        The ratio, or -1.0 when the background median energy is below 1e-3 (or the
        background is empty).
    """
    data = np.asarray(data, dtype=np.float64)
    head = np.asarray(head_mask) > 0
    fg_mu = np.median(np.abs(data[head]) ** 2)
    air = ~head
    if rotation_mask is not None:
        air &= ~(np.asarray(rotation_mask) > 0)
    if not air.any():
        return -1.0
    bg_mu = np.median(np.abs(data[air]) ** 2)
    if bg_mu < 1.0e-3:
        return -1.0
    return _maybe_round(fg_mu / bg_mu, decimals)


def efc(
    data: np.ndarray, rotation_mask: np.ndarray | None = None, *, decimals: int | None = 4
) -> float:
    """Entropy focus criterion normalised by its maximum (MRIQC ``efc``).

    Over the N voxels outside the rotation mask, b = sqrt(sum x^2),
    E = sum (x/b) ln((x + 1e-16)/b), EFC = E / (N (1/sqrt N) ln(1/sqrt N)).

    Parameters
    ----------
    data
        Image intensities (MRIQC passes non-negative data).
    rotation_mask
        Zero-padding voxels (> 0) left out.
    decimals
        Rounding of the result (MRIQC: 4).

    Returns
    -------
    float
        EFC in [0, 1] for non-negative data.
    """
    data = np.asarray(data, dtype=np.float64)
    keep = np.ones(data.shape, dtype=bool)
    if rotation_mask is not None:
        keep = ~(np.asarray(rotation_mask) > 0)
    x = data[keep]
    n_vox = float(x.size)
    x = x[x != 0]  # zero voxels contribute exactly 0 to the sum
    efc_max = n_vox * (1.0 / math.sqrt(n_vox)) * math.log(1.0 / math.sqrt(n_vox))
    b_max = math.sqrt(float(np.dot(x, x)))
    entropy = float(np.sum((x / b_max) * np.log((x + 1e-16) / b_max)))
    return _maybe_round(entropy / efc_max, decimals)


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
