"""ALFF and fALFF (METHODS §8).

Two named variants are available:

``"ccs"`` (default, the paper's CCS surface route, ``LFCD_alff.m``)
    Each series is demeaned and its discrete Fourier transform ``X_k`` taken over the ``N``
    samples (no padding). The amplitude of bin ``k`` is ``|X_k| / N`` and its frequency
    ``k / (N * TR)``. The spectrum used is bins ``0 .. ceil(N/2) - 1`` (DC included, which is 0
    after demeaning; the Nyquist bin of an even ``N`` excluded). ALFF is the *sum* of the
    amplitudes of the bins whose frequency lies strictly between the band edges; fALFF is
    ALFF divided by the sum of the amplitudes of the whole spectrum used.
    A sinusoid ``A cos(2 pi f0 t + phi)`` with ``f0`` on a bin inside the band gives
    ``ALFF = A / 2`` exactly (its energy is split between bins ``k0`` and ``N - k0``).

``"cpac"`` (C-PAC ``alff.py``)
    The demeaned series is band-passed by zeroing the FFT bins outside ``[f_lo, f_hi]``
    (edges inclusive, like AFNI ``3dBandpass``; no padding to a fast length and no extra
    detrending here). ALFF is the sample standard deviation (``ddof=1``, as ``3dTstat
    -stdev``) of the band-passed series and fALFF the ratio of that SD to the SD of the
    unfiltered series. The same sinusoid gives ``ALFF = A * sqrt(N / (2 (N - 1)))``.

Zero-variance series give 0 for both maps. The band must contain at least one bin for the
given ``TR`` and series length, otherwise :class:`~isyb_dask.errors.InputError` is raised.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from isyb_dask.errors import InputError

__all__ = ["band_bins", "alff_falff"]

Variant = Literal["ccs", "cpac"]
_CHUNK = 4096


def band_bins(
    n_timepoints: int,
    tr: float,
    band: tuple[float, float] = (0.01, 0.1),
    *,
    inclusive: bool = False,
) -> np.ndarray:
    """Indices of the one-sided FFT bins inside a frequency band.

    Parameters
    ----------
    n_timepoints
        Series length ``N``.
    tr
        Repetition time in seconds.
    band
        ``(f_lo, f_hi)`` in Hz.
    inclusive
        Keep bins on the band edges (C-PAC) instead of strictly inside (CCS).

    Returns
    -------
    numpy.ndarray
        Integer bin indices ``k`` (frequency ``k / (N TR)``), restricted to
        ``0 <= k < ceil(N / 2)``.

    Raises
    ------
    InputError
        If the band is malformed or contains no bin for this ``N`` and ``TR``.
    """
    f_lo, f_hi = float(band[0]), float(band[1])
    if not (tr > 0 and n_timepoints >= 2):
        raise InputError(f"ALFF needs TR > 0 and at least 2 volumes (TR={tr}, N={n_timepoints})")
    if not (0 <= f_lo < f_hi):
        raise InputError(f"ALFF band must satisfy 0 <= f_lo < f_hi, got {band}")
    k = np.arange((n_timepoints + 1) // 2)
    freq = k / (n_timepoints * tr)
    if inclusive:
        # a small relative tolerance so that an edge exactly on a bin is kept despite rounding
        eps = 1e-9 / (n_timepoints * tr)
        sel = (freq >= f_lo - eps) & (freq <= f_hi + eps)
    else:
        sel = (freq > f_lo) & (freq < f_hi)
    bins = k[sel]
    if bins.size == 0:
        raise InputError(
            f"ALFF band {f_lo}-{f_hi} Hz contains no frequency bin for N={n_timepoints} volumes "
            f"at TR={tr} s (bin spacing {1.0 / (n_timepoints * tr):.4g} Hz); "
            "the series is too short for this band"
        )
    return bins


def alff_falff(
    data: np.ndarray,
    tr: float,
    band: tuple[float, float] = (0.01, 0.1),
    *,
    mask: np.ndarray | None = None,
    variant: Variant = "ccs",
) -> tuple[np.ndarray, np.ndarray]:
    """Compute ALFF and fALFF maps.

    Parameters
    ----------
    data
        Series with time on the last axis: ``(X, Y, Z, T)`` volume or ``(V, T)`` vertices.
        Preprocessed, *not* band-passed.
    tr
        Repetition time in seconds.
    band
        Low-frequency band in Hz, default 0.01-0.1.
    mask
        Boolean array of ``data.shape[:-1]``; values outside are 0. Default: all.
    variant
        ``"ccs"`` (FFT amplitude sum, default) or ``"cpac"`` (SD ratio); see the module doc.

    Returns
    -------
    alff, falff
        float32 arrays of shape ``data.shape[:-1]``. ALFF is in signal units; fALFF in
        ``[0, 1]``.

    Raises
    ------
    InputError
        If the band contains no bin or ``variant`` is unknown.
    """
    data = np.asarray(data)
    if data.ndim < 2:
        raise InputError(f"ALFF needs a series with time on the last axis, got shape {data.shape}")
    if variant not in ("ccs", "cpac"):
        raise InputError(f"unknown ALFF variant {variant!r} (use 'ccs' or 'cpac')")
    spatial = data.shape[:-1]
    n = data.shape[-1]
    sel = np.ones(spatial, bool) if mask is None else np.asarray(mask, bool)
    if sel.shape != spatial:
        raise InputError(f"ALFF mask shape {sel.shape} does not match data {spatial}")
    bins = band_bins(n, tr, band, inclusive=(variant == "cpac"))

    flat = data.reshape(-1, n)
    idx = np.flatnonzero(sel.ravel())
    lo, hi = int(bins[0]), int(bins[-1]) + 1  # the band's bins are contiguous
    n_spec = (n + 1) // 2
    alff = np.zeros(idx.size)
    falff = np.zeros(idx.size)
    for start in range(0, idx.size, _CHUNK):  # chunks keep the FFT buffers in cache
        y = flat[idx[start:start + _CHUNK]].astype(np.float64)
        flat_series = np.ptp(y, axis=1) == 0
        y -= y.mean(axis=1, keepdims=True)
        spec = np.fft.rfft(y, axis=1)
        if variant == "ccs":
            amp = np.abs(spec[:, :n_spec]) / n
            num = amp[:, lo:hi].sum(axis=1)
            den = amp.sum(axis=1)
        else:
            spec[:, :lo] = 0
            spec[:, hi:] = 0
            num = np.fft.irfft(spec, n=n, axis=1).std(axis=1, ddof=1)
            den = y.std(axis=1, ddof=1)
        ok = ~flat_series & (den > 0)  # zero-variance series -> 0
        a = np.where(ok, num, 0.0)
        alff[start:start + _CHUNK] = a
        falff[start:start + _CHUNK] = np.where(ok, a / np.where(ok, den, 1.0), 0.0)
    out_a = np.zeros(spatial, np.float32)
    out_f = np.zeros(spatial, np.float32)
    out_a.reshape(-1)[idx] = alff
    out_f.reshape(-1)[idx] = np.clip(falff, 0.0, 1.0)
    return out_a, out_f
