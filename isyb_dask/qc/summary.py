"""Weighted summary statistics of image regions, as MRIQC computes them (METHODS §5.2).

The data are rounded to ``rprec_data`` decimals and the weights (a partial-volume map or a
0/1 mask) to ``rprec_prob`` decimals before the weighted mean, SD (population, ddof 0) and
quantiles (SAS definition as in ``statsmodels.stats.weightstats.DescrStatsW.quantile``);
kurtosis and MAD use the un-rounded voxels whose weight exceeds half the maximum weight;
results are rounded to ``decimals`` places (MRIQC: 4). The IQM formulas built on them are
in :mod:`isyb_dask.qc.common`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.stats import kurtosis as _kurtosis

from isyb_dask.qc.common import GAUSSIAN_3_4, maybe_round, snr

__all__ = [
    "STAT_KEYS",
    "snr_region",
    "summary_stats",
    "summary_stats_regions",
    "weighted_quantiles",
]

#: Keys of the dict returned by :func:`summary_stats` (MRIQC ``summary_<region>_<key>``).
STAT_KEYS = ("mean", "median", "p05", "p95", "stdv", "mad", "k", "n")


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
        "mean": maybe_round(mean, decimals),
        "median": maybe_round(median, decimals),
        "p05": maybe_round(p05, decimals),
        "p95": maybe_round(p95, decimals),
        "stdv": maybe_round(stdv, decimals),
        "mad": maybe_round(mad, decimals),
        "k": maybe_round(kurt, decimals),
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
