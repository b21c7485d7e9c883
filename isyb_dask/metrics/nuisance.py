"""Nuisance model and filtering of the BOLD preprocessing.

24 motion regressors (6 parameters, their backward differences, and the squares of both),
mean WM and CSF signals, one spike regressor per volume with framewise displacement above a
threshold, and constant/linear/quadratic Legendre trends, removed in one least-squares
projection (:func:`regress_out`); 4-D global mean scaling; the ideal FFT band-pass used
before ReHo and VMHC (the one band-pass of the metrics).
"""

from __future__ import annotations

import numpy as np

from isyb_dask.errors import InputError
from isyb_dask.metrics.alff import band_bins

__all__ = [
    "bandpass",
    "framewise_displacement",
    "friston24",
    "polynomial_regressors",
    "regress_out",
    "scale_global_mean",
    "spike_regressors",
    "tissue_signal",
]

GLOBAL_MEAN = 10000.0
_CHUNK = 8192


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


def tissue_signal(data: np.ndarray, mask: np.ndarray, prob: np.ndarray | None,
                  threshold: float) -> np.ndarray | None:
    """Mean series of the in-mask voxels with ``prob > threshold`` (None: no map or < 5 voxels)."""
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
