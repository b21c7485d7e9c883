"""Tests of ALFF/fALFF (CCS amplitude-sum and C-PAC SD-ratio variants)."""

from __future__ import annotations

import numpy as np
import pytest

from isyb_dask.errors import InputError
from isyb_dask.metrics.alff import alff_falff, band_bins

N, TR = 200, 2.0  # bin spacing 1 / (N TR) = 0.0025 Hz


def _cos(k: int, amp: float, phase: float) -> np.ndarray:
    n = np.arange(N)
    return amp * np.cos(2 * np.pi * k * n / N + phase)


def test_sinusoid_amplitude_ccs_and_cpac():
    a, b = 3.0, 5.0
    # in band: bin 10 -> 0.025 Hz; out of band: bin 60 -> 0.15 Hz; plus a DC offset
    x = 100.0 + _cos(10, a, 0.3) + _cos(60, b, 1.1)
    alff, falff = alff_falff(x[None, :], TR)
    # |FFT|/N of a cosine of amplitude A on bin k0 is A/2 at k0 (and at N - k0, not summed)
    assert alff[0] == pytest.approx(a / 2, rel=1e-6)
    assert falff[0] == pytest.approx(a / (a + b), rel=1e-6)
    alff_c, falff_c = alff_falff(x[None, :], TR, variant="cpac")
    # SD (ddof=1) of the in-band cosine over N samples: A * sqrt(N / (2 (N - 1)))
    assert alff_c[0] == pytest.approx(a * np.sqrt(N / (2 * (N - 1))), rel=1e-6)
    assert falff_c[0] == pytest.approx(a / np.hypot(a, b), rel=1e-6)


def test_matches_direct_dft():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, N)) + 50
    alff, falff = alff_falff(x, TR)
    n = np.arange(N)
    for v in range(5):
        y = x[v] - x[v].mean()
        amps = []
        for k in range(N // 2):  # DC .. N/2 - 1 (Nyquist excluded for even N)
            amps.append(abs(np.sum(y * np.exp(-2j * np.pi * k * n / N))) / N)
        amps = np.array(amps)
        f = np.arange(N // 2) / (N * TR)
        band = (f > 0.01) & (f < 0.1)
        assert alff[v] == pytest.approx(amps[band].sum(), rel=1e-5)
        assert falff[v] == pytest.approx(amps[band].sum() / amps.sum(), rel=1e-5)
    assert np.all((falff >= 0) & (falff <= 1))


def test_edges_strict_vs_inclusive():
    # band edges exactly on bins 4 (0.01 Hz) and 40 (0.1 Hz)
    assert band_bins(N, TR).tolist() == list(range(5, 40))
    assert band_bins(N, TR, inclusive=True).tolist() == list(range(4, 41))


def test_zero_variance_mask_and_volume_shape():
    rng = np.random.default_rng(1)
    vol = rng.normal(size=(3, 4, 2, N)).astype(np.float32)
    vol[0, 0, 0] = 7.0
    mask = np.ones((3, 4, 2), bool)
    mask[2, 3, 1] = False
    alff, falff = alff_falff(vol, TR, mask=mask)
    assert alff.shape == (3, 4, 2) and alff.dtype == np.float32
    assert alff[0, 0, 0] == 0 and falff[0, 0, 0] == 0
    assert alff[2, 3, 1] == 0
    assert np.all(alff[mask & (np.arange(3)[:, None, None] > 0)] > 0)


def test_band_without_bins_rejected():
    with pytest.raises(InputError, match="no frequency bin"):
        alff_falff(np.random.default_rng(2).normal(size=(2, 10)), 0.1)
    with pytest.raises(InputError):
        alff_falff(np.zeros((2, 50)), 2.0, band=(0.1, 0.01))
