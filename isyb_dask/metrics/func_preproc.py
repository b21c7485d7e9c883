"""Resting-state BOLD preprocessing for the functional metrics (METHODS §0a, issue 5).

Order (the paper's CCS description): drop dummy volumes -> despike -> slice-timing correction
-> head-motion correction -> 4-D global mean scaling to 10,000 -> nuisance regression together
with linear and quadratic detrending. Each step is a pure function on arrays; the chain is
:func:`preprocess_bold`.

Variants chosen (details in ``docs/metrics_volume.md``):

* despiking (AFNI ``3dDespike``-like, replace and interpolate): the smooth baseline of each
  voxel series is a running median over ``window`` volumes; residuals beyond ``threshold``
  robust noise SDs (``1.4826 * MAD`` of the first differences / sqrt 2) are spikes,
  replaced by linear interpolation between the nearest non-spike neighbours in time
  (3dDespike instead fits an L1 polynomial + sinusoid curve and squashes values, it does not
  interpolate);
* slice timing: shift every slice to the middle of the slice-timing range by a Fourier phase
  shift of the linearly detrended series (trend added back at the shifted times), or by linear
  interpolation (``method="linear"``, ends held constant);
* motion: :func:`isyb_dask.qc.hmc.realign_series` (rigid, SimpleITK), parameters in mm and
  radians;
* nuisance model: 24 motion regressors (6 parameters, their backward differences, and the
  squares of both — the "6 + derivatives + squares" expansion), mean WM and CSF signals when
  tissue probability maps are given, and one spike regressor per volume with framewise
  displacement (Power, 50 mm) above ``fd_threshold``. Spike regressors + the 24 parameters
  stand in for ICA-AROMA, which is not implemented. Constant, linear and quadratic
  (Legendre) trends are in the same least-squares fit, so detrending and nuisance removal are
  one projection.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
from scipy import ndimage as ndi

from isyb_dask.errors import InputError
from isyb_dask.metrics.alff import band_bins

__all__ = [
    "despike",
    "slice_time_correct",
    "friston24",
    "framewise_displacement",
    "spike_regressors",
    "epi_mask",
    "scale_global_mean",
    "polynomial_regressors",
    "regress_out",
    "bandpass",
    "preprocess_bold",
]

GLOBAL_MEAN = 10000.0
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


def friston24(params: np.ndarray) -> np.ndarray:
    """24-parameter motion expansion: parameters, backward differences and their squares.

    Parameters
    ----------
    params
        ``(T, 6)`` rigid-body parameters.

    Returns
    -------
    numpy.ndarray
        ``(T, 24)``: ``[p, dp, p**2, dp**2]`` with ``dp[0] = 0``.
    """
    p = np.asarray(params, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 6:
        raise InputError(f"motion parameters must be (T, 6), got {p.shape}")
    d = np.vstack([np.zeros((1, 6)), np.diff(p, axis=0)])
    return np.hstack([p, d, p**2, d**2])


def framewise_displacement(params: np.ndarray, radius: float = 50.0) -> np.ndarray:
    """Power framewise displacement (mm) from (mm, radian) parameters; ``FD[0] = 0``.

    The one FD definition is :func:`isyb_dask.qc.motion.framewise_displacement` (confounds
    table, ``fd_mean`` and the exclusion rule); this pads it with a leading 0 so that it has
    one value per volume for the spike regressors.

    Parameters
    ----------
    params
        ``(T, 6)`` translations (mm) then rotations (radians).
    radius
        Head radius converting rotations to arc length (mm).

    Returns
    -------
    numpy.ndarray
        ``(T,)`` FD.
    """
    from isyb_dask.qc.motion import framewise_displacement as power_fd

    return np.concatenate([[0.0], power_fd(params, radius=radius)])


def spike_regressors(flags: np.ndarray) -> np.ndarray:
    """One indicator column per flagged volume.

    Parameters
    ----------
    flags
        Boolean ``(T,)``.

    Returns
    -------
    numpy.ndarray
        ``(T, n_flagged)`` 0/1 matrix.
    """
    flags = np.asarray(flags, bool)
    idx = np.nonzero(flags)[0]
    out = np.zeros((flags.size, idx.size))
    out[idx, np.arange(idx.size)] = 1.0
    return out


def epi_mask(mean_image: np.ndarray) -> np.ndarray:
    """Brain mask of a mean EPI: Otsu threshold, largest component, holes filled.

    Parameters
    ----------
    mean_image
        3-D temporal mean.

    Returns
    -------
    numpy.ndarray
        Boolean mask.
    """
    img = np.nan_to_num(np.asarray(mean_image, dtype=np.float64))
    vals = img[img > 0]
    if vals.size < 10:
        raise InputError("BOLD mean image is empty: cannot build a brain mask")
    hist, edges = np.histogram(vals, bins=256)
    centres = 0.5 * (edges[1:] + edges[:-1])
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres) / np.maximum(w0, 1)
    m1 = ((hist * centres).sum() - np.cumsum(hist * centres)) / np.maximum(w1, 1)
    thr = centres[np.argmax(w0 * w1 * (m0 - m1) ** 2)]
    mask = img > thr
    lab, n = ndi.label(mask)
    if n > 1:
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        mask = lab == np.argmax(sizes)
    return ndi.binary_fill_holes(mask)


def scale_global_mean(
    data: np.ndarray, mask: np.ndarray, target: float = GLOBAL_MEAN
) -> tuple[np.ndarray, float]:
    """Multiply the whole series so that its 4-D mean inside the mask equals ``target``.

    Parameters
    ----------
    data
        ``(X, Y, Z, T)`` series.
    mask
        Boolean brain mask.
    target
        Desired global mean.

    Returns
    -------
    scaled, factor
        float32 series and the factor applied.
    """
    mean = float(np.asarray(data)[np.asarray(mask, bool)].mean(dtype=np.float64))
    if not np.isfinite(mean) or mean <= 0:
        raise InputError(f"BOLD global mean inside the mask is {mean}: cannot scale")
    factor = target / mean
    return (np.asarray(data, np.float32) * np.float32(factor)), factor


def polynomial_regressors(n_t: int, order: int = 2) -> np.ndarray:
    """Legendre polynomials 0..order on ``[-1, 1]`` sampled at ``n_t`` points.

    Parameters
    ----------
    n_t
        Number of volumes.
    order
        Highest degree (2 = constant, linear, quadratic).

    Returns
    -------
    numpy.ndarray
        ``(n_t, order + 1)``.
    """
    x = np.linspace(-1.0, 1.0, n_t)
    return np.polynomial.legendre.legvander(x, order)


def regress_out(
    data: np.ndarray, mask: np.ndarray, confounds: np.ndarray | None, *, poly_order: int = 2
) -> np.ndarray:
    """Residuals of a least-squares fit of confounds plus polynomial trends.

    Parameters
    ----------
    data
        ``(X, Y, Z, T)`` series.
    mask
        Boolean mask; residuals are 0 outside.
    confounds
        ``(T, P)`` regressors (may be ``None``); constant columns are dropped.
    poly_order
        Degree of the Legendre trend terms (constant included).

    Returns
    -------
    numpy.ndarray
        float32 residual series (zero temporal mean inside the mask).

    Raises
    ------
    InputError
        If the model leaves fewer than 2 residual degrees of freedom.
    """
    n_t = data.shape[-1]
    design = polynomial_regressors(n_t, poly_order)
    if confounds is not None and np.size(confounds):
        c = np.asarray(confounds, dtype=np.float64).reshape(n_t, -1)
        c = c[:, np.ptp(c, axis=0) > 0]
        if c.size:
            c = c - c.mean(0)
            design = np.hstack([design, c / np.linalg.norm(c, axis=0)])
    rank = np.linalg.matrix_rank(design)
    if n_t - rank < 2:
        raise InputError(f"nuisance model with {rank} independent regressors leaves "
                         f"{n_t - rank} degrees of freedom for {n_t} volumes; use a smaller "
                         "motion model or a longer run")
    m = np.asarray(mask, bool)
    out = np.zeros(data.shape, np.float32)
    pinv_t = np.linalg.pinv(design).T  # (T, P): beta = y @ pinv_t for row series y
    flat = np.asarray(data).reshape(-1, n_t)
    flat_out = out.reshape(-1, n_t)
    idx = np.flatnonzero(m.ravel())
    for start in range(0, idx.size, _CHUNK):
        rows = idx[start:start + _CHUNK]
        y = flat[rows].astype(np.float64)
        flat_out[rows] = y - (y @ pinv_t) @ design.T
    return out


def bandpass(
    data: np.ndarray,
    tr: float,
    band: tuple[float, float] = (0.01, 0.1),
    *,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Ideal FFT band-pass (edges inclusive, like AFNI ``3dBandpass``), mean removed.

    Used before ReHo and VMHC (METHODS §9: band-passed, unsmoothed input); ALFF/fALFF take
    the unfiltered residuals instead.

    Parameters
    ----------
    data
        Series with time on the last axis.
    tr
        Repetition time (s).
    band
        ``(f_lo, f_hi)`` in Hz.
    mask
        Boolean array of ``data.shape[:-1]``; other series are returned as 0.

    Returns
    -------
    numpy.ndarray
        float32 band-passed series.

    Raises
    ------
    InputError
        If the band holds no frequency bin for this run.
    """
    data = np.asarray(data)
    n_t = data.shape[-1]
    bins = band_bins(n_t, tr, band, inclusive=True)
    keep = np.zeros(n_t // 2 + 1, bool)
    keep[bins] = True
    if n_t % 2 == 0 and band[1] >= 1.0 / (2.0 * tr):
        keep[-1] = True  # Nyquist bin (not listed by band_bins) when the band reaches it
    sel = np.ones(data.shape[:-1], bool) if mask is None else np.asarray(mask, bool)
    out = np.zeros(data.shape, np.float32)
    flat, flat_out = data.reshape(-1, n_t), out.reshape(-1, n_t)
    idx = np.flatnonzero(sel.ravel())
    for start in range(0, idx.size, _CHUNK):
        rows = idx[start:start + _CHUNK]
        spec = np.fft.rfft(flat[rows].astype(np.float64), axis=-1)
        spec[:, ~keep] = 0
        flat_out[rows] = np.fft.irfft(spec, n=n_t, axis=-1)
    return out


def _tissue_signal(data: np.ndarray, mask: np.ndarray, prob: np.ndarray | None,
                   threshold: float) -> np.ndarray | None:
    if prob is None:
        return None
    prob = np.asarray(prob)
    if prob.shape != mask.shape:
        raise InputError(f"tissue probability map shape {prob.shape} does not match BOLD grid "
                         f"{mask.shape}")
    roi = mask & (prob > threshold)
    if roi.sum() < 5:
        return None
    return data[roi].mean(axis=0, dtype=np.float64)


def preprocess_bold(
    data: np.ndarray,
    affine: np.ndarray,
    tr: float,
    slice_timing: Sequence[float] | None,
    *,
    mask: np.ndarray | None = None,
    dummy_volumes: int = 5,
    tissue_probs: Mapping[str, np.ndarray] | None = None,
    threads: int = 1,
    slice_axis: int = 2,
    slice_method: Literal["fourier", "linear"] = "fourier",
    despike_threshold: float = 5.0,
    motion_model: Literal[0, 6, 12, 24] = 24,
    fd_threshold: float = 0.5,
    fd_radius: float = 50.0,
    tissue_threshold: float = 0.9,
    realign: Callable[..., tuple[np.ndarray, np.ndarray]] | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Preprocess a resting-state BOLD series for ALFF/fALFF, ReHo and VMHC.

    Parameters
    ----------
    data
        ``(X, Y, Z, T)`` raw BOLD series (not modified).
    affine
        Voxel-to-world affine.
    tr
        Repetition time (s).
    slice_timing
        BIDS ``SliceTiming`` (s) along ``slice_axis``; ``None`` skips the step.
    mask
        Brain mask; default: Otsu mask of the motion-corrected mean.
    dummy_volumes
        Volumes dropped at the start.
    tissue_probs
        Optional ``{"wm": prob, "csf": prob}`` on the BOLD grid for the mean WM/CSF signals.
    threads
        Threads for the motion correction.
    slice_axis, slice_method
        Slice axis and ``"fourier"`` or ``"linear"`` slice-timing interpolation.
    despike_threshold
        Spike threshold in robust SDs.
    motion_model
        Motion regressors: 24 (default), 12 (parameters + differences), 6 or 0.
    fd_threshold
        FD (mm) above which a volume gets a spike regressor (``inf`` disables).
    fd_radius
        Head radius (mm) of the FD (the QC's ``fd_radius``, so both use one FD).
    tissue_threshold
        Probability above which a voxel enters the WM/CSF signal.
    realign
        Motion-correction function with the signature of
        :func:`isyb_dask.qc.hmc.realign_series` (default that function).

    Returns
    -------
    cleaned, mask, info
        float32 residual series ``(X, Y, Z, T - dummy_volumes)`` with zero temporal mean in the
        mask and 0 outside; the boolean mask; ``info`` with ``params`` (T, 6), ``fd``,
        ``fd_mean``, ``spike_volumes``, ``n_despiked``, ``scale_factor``,
        ``slice_reference_time``, ``confound_names``, ``mean`` (temporal mean image of the
        scaled series, for mALFF or percent-signal scaling) and ``dropped``.

    Raises
    ------
    InputError
        On bad shapes, too few volumes or an unusable nuisance model.
    """
    arr = np.asarray(data)
    if arr.ndim != 4:
        raise InputError(f"BOLD series must be 4-D, got shape {arr.shape}")
    if not tr > 0:
        raise InputError(f"BOLD RepetitionTime must be > 0, got {tr}")
    if dummy_volumes < 0 or arr.shape[-1] - dummy_volumes < 8:
        raise InputError(f"BOLD series has {arr.shape[-1]} volumes; at least 8 must remain after "
                         f"dropping {dummy_volumes}")
    if motion_model not in (0, 6, 12, 24):
        raise InputError(f"motion_model must be 0, 6, 12 or 24, got {motion_model}")
    info: dict[str, Any] = {"dropped": int(dummy_volumes)}
    y = arr[..., dummy_volumes:].astype(np.float32)

    # despike inside a generous mask (the raw-mean mask dilated) to spare the background
    pre_mask = ndi.binary_dilation(epi_mask(y.mean(-1)), iterations=2) if mask is None else mask
    y, spk = despike(y, threshold=despike_threshold, mask=pre_mask)
    info["n_despiked"] = int(spk.sum())

    info["slice_reference_time"] = None
    if slice_timing is not None:
        y, info["slice_reference_time"] = slice_time_correct(
            y, tr, slice_timing, slice_axis=slice_axis, method=slice_method)

    if realign is None:
        from isyb_dask.qc.hmc import realign_series as realign
    y, params = realign(y, affine, threads=threads)
    y = np.asarray(y, np.float32)
    params = np.asarray(params, np.float64)
    fd = framewise_displacement(params, radius=fd_radius)
    info.update(params=params, fd=fd, fd_mean=float(fd[1:].mean()))

    m = epi_mask(y.mean(-1)) if mask is None else np.asarray(mask, bool)
    if m.shape != y.shape[:3]:
        raise InputError(f"BOLD mask shape {m.shape} does not match {y.shape[:3]}")
    y, factor = scale_global_mean(y, m)
    info["scale_factor"] = factor
    info["mean"] = np.where(m, y.mean(-1), 0).astype(np.float32)

    cols, names = [], []
    if motion_model:
        expanded = friston24(params)
        keep = {6: 6, 12: 12, 24: 24}[motion_model]
        sel = list(range(6)) if keep == 6 else (list(range(12)) if keep == 12 else list(range(24)))
        cols.append(expanded[:, sel])
        base = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]
        full = base + [b + "_derivative1" for b in base] + [b + "_power2" for b in base] + [
            b + "_derivative1_power2" for b in base]
        names += [full[i] for i in sel]
    for tissue in ("wm", "csf"):
        sig = _tissue_signal(y, m, (tissue_probs or {}).get(tissue), tissue_threshold)
        if sig is not None:
            cols.append(sig[:, None])
            names.append(f"{tissue}_mean")
    flags = fd > fd_threshold
    info["spike_volumes"] = np.nonzero(flags)[0].tolist()
    if flags.any():
        cols.append(spike_regressors(flags))
        names += [f"motion_outlier_{i:02d}" for i in info["spike_volumes"]]
    confounds = np.hstack(cols) if cols else np.zeros((y.shape[-1], 0))
    varying = np.ptp(confounds, axis=0) > 0 if confounds.size else np.zeros(0, bool)
    confounds = confounds[:, varying]  # e.g. all-zero motion of a still phantom
    info["confound_names"] = [nm for nm, keep in zip(names, varying) if keep]
    cleaned = regress_out(y, m, confounds, poly_order=2)
    return cleaned, m, info
