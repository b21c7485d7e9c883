"""Temporal cleaning steps of the BOLD preprocessing: despiking and slice-timing correction.

* despiking (AFNI ``3dDespike``-like, replace and interpolate): the smooth baseline of each
  voxel series is a running median over ``window`` volumes; residuals beyond ``threshold``
  robust noise SDs (``1.4826 * MAD`` of the first differences / sqrt 2) are spikes,
  replaced by linear interpolation between the nearest non-spike neighbours in time;
* slice timing: every slice is shifted to the middle of the slice-timing range by a Fourier
  phase shift of the linearly detrended series (trend added back at the shifted times), or
  by linear interpolation (``method="linear"``, ends held constant).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from scipy import ndimage as ndi

from isyb_dask.errors import InputError

__all__ = ["despike", "slice_time_correct"]

_CHUNK = 8192


def despike(
    data: np.ndarray, *, threshold: float = 5.0, window: int = 5, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Detect spikes per series and replace them by linear interpolation in time.

    Parameters
    ----------
    data
        Series with time on the last axis.
    threshold
        Spike threshold: residual from the running median, in robust noise SDs.
    window
        Running-median length in volumes (odd, >= 3).
    mask
        Boolean array of ``data.shape[:-1]``; only these series are despiked.

    Returns
    -------
    despiked, spikes
        float32 series and the boolean spike indicator (same shape as ``data``).
    """
    data = np.asarray(data)
    if window < 3 or window % 2 == 0:
        raise InputError(f"despike window must be odd and >= 3, got {window}")
    out = data.astype(np.float32, copy=True)
    spikes = np.zeros(data.shape, bool)
    sel = np.ones(data.shape[:-1], bool) if mask is None else np.asarray(mask, bool)
    n_t = data.shape[-1]
    if not sel.any() or n_t < window:
        return out, spikes
    flat_out = out.reshape(-1, n_t)
    flat_spk = spikes.reshape(-1, n_t)
    idx = np.flatnonzero(sel.ravel())
    for start in range(0, idx.size, _CHUNK):
        rows = idx[start:start + _CHUNK]
        y, spk = _despike_block(flat_out[rows], threshold, window)
        flat_out[rows] = y
        flat_spk[rows] = spk
    return out, spikes


def _median5(y: np.ndarray) -> np.ndarray:
    """Running median of 5 along axis 1 (edges repeated) by a min/max sorting network."""
    p = np.pad(y, ((0, 0), (2, 2)), mode="edge")
    n = y.shape[1]
    v = [p[:, i:i + n] for i in range(5)]

    def swap(i: int, j: int) -> None:
        v[i], v[j] = np.minimum(v[i], v[j]), np.maximum(v[i], v[j])

    for i, j in ((0, 1), (3, 4), (2, 4), (2, 3), (0, 3), (0, 2), (1, 4), (1, 3), (1, 2)):
        swap(i, j)
    return v[2]


def _despike_block(y: np.ndarray, threshold: float, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Despike the rows of a 2-D float32 block."""
    n_t = y.shape[1]
    if window == 5:
        base = _median5(y)
    else:
        base = ndi.median_filter(y, size=(1, window), mode="nearest")
    res = y - base
    # noise SD from the MAD of the first differences (robust to spikes and slow drifts; the
    # running-median residual itself underestimates it because the median tracks the noise)
    d = np.diff(y, axis=1)
    mad = np.median(np.abs(d - np.median(d, axis=1, keepdims=True)), axis=1, keepdims=True)
    sigma = 1.4826 * mad / np.sqrt(2.0)
    spk = (np.abs(res) > threshold * sigma) & (sigma > 0)
    rows = np.nonzero(spk.any(axis=1))[0]
    if rows.size:
        yy, ss = y[rows].astype(np.float64), spk[rows]
        t = np.broadcast_to(np.arange(n_t), yy.shape)
        prev = np.maximum.accumulate(np.where(~ss, t, -1), axis=1)
        nxt = np.minimum.accumulate(np.where(~ss, t, n_t)[:, ::-1], axis=1)[:, ::-1]
        prev_ok, next_ok = prev >= 0, nxt < n_t
        p = np.where(prev_ok, prev, np.where(next_ok, nxt, 0))
        q = np.where(next_ok, nxt, p)
        yp = np.take_along_axis(yy, p, axis=1)
        yq = np.take_along_axis(yy, q, axis=1)
        frac = np.where(q > p, (t - p) / np.maximum(q - p, 1), 0.0)
        y = y.copy()
        y[rows] = np.where(ss, yp + frac * (yq - yp), yy)
    return y, spk


def slice_time_correct(
    data: np.ndarray,
    tr: float,
    slice_timing: Sequence[float],
    *,
    slice_axis: int = 2,
    reference: float | None = None,
    method: Literal["fourier", "linear"] = "fourier",
) -> tuple[np.ndarray, float]:
    """Shift every slice's series to a common reference time.

    Parameters
    ----------
    data
        ``(X, Y, Z, T)`` series.
    tr
        Repetition time (s).
    slice_timing
        Acquisition time (s) of each slice along ``slice_axis`` relative to the volume start.
    slice_axis
        Spatial axis of the slices (0, 1 or 2).
    reference
        Target time within the TR; default the middle of the slice-timing range.
    method
        ``"fourier"`` (phase shift after linear detrending) or ``"linear"`` interpolation.

    Returns
    -------
    corrected, reference
        float32 series and the reference time used.
    """
    data = np.asarray(data)
    times = np.asarray(slice_timing, dtype=np.float64).ravel()
    if data.ndim != 4 or times.size != data.shape[slice_axis]:
        raise InputError(f"SliceTiming has {times.size} entries for {data.shape[slice_axis]} "
                         f"slices (data shape {data.shape})")
    if not (np.all(np.isfinite(times)) and times.min() >= 0 and times.max() < tr + 1e-6):
        raise InputError(f"SliceTiming values must lie within [0, TR={tr}) s")
    if method not in ("fourier", "linear"):
        raise InputError(f"unknown slice-timing method {method!r}")
    ref = 0.5 * (times.min() + times.max()) if reference is None else float(reference)
    n_t = data.shape[-1]
    moved = np.moveaxis(data, slice_axis, 0)
    out = np.empty(moved.shape, np.float32)
    t = np.arange(n_t, dtype=np.float64)
    freq = np.fft.rfftfreq(n_t)
    for k, s_k in enumerate(times):
        delta = (ref - s_k) / tr  # samples: new value at t + delta of the old sampling
        y = moved[k].astype(np.float64)
        if abs(delta) < 1e-12:
            out[k] = y
            continue
        if method == "linear":
            pos = np.clip(t + delta, 0, n_t - 1)
            lo = np.floor(pos).astype(int)
            hi = np.minimum(lo + 1, n_t - 1)
            w = pos - lo
            out[k] = (1 - w) * y[..., lo] + w * y[..., hi]
            continue
        tc = t - t.mean()
        slope = (y * tc).sum(-1, keepdims=True) / (tc * tc).sum()
        icpt = y.mean(-1, keepdims=True)
        resid = y - icpt - slope * tc
        spec = np.fft.rfft(resid, axis=-1) * np.exp(2j * np.pi * freq * delta)
        out[k] = np.fft.irfft(spec, n=n_t, axis=-1) + icpt + slope * (tc + delta)
    return np.moveaxis(out, 0, slice_axis), ref
