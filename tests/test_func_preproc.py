"""Tests of the BOLD preprocessing steps and chain."""

from __future__ import annotations

import json

import nibabel as nb
import numpy as np
import pytest

from isyb_dask.errors import InputError
from isyb_dask.metrics.func_preproc import (
    GLOBAL_MEAN,
    despike,
    epi_mask,
    framewise_displacement,
    friston24,
    polynomial_regressors,
    preprocess_bold,
    regress_out,
    scale_global_mean,
    slice_time_correct,
    spike_regressors,
)


def test_despike_replaces_spikes_by_interpolation():
    rng = np.random.default_rng(0)
    t = np.arange(120)
    clean = 100 + 5 * np.sin(2 * np.pi * t / 40) + rng.normal(0, 0.5, size=(50, 120))
    data = clean.copy()
    pos = rng.integers(2, 118, size=50)
    data[np.arange(50), pos] += 40.0  # 80 noise SDs
    data[0, 60] += 40.0
    data[0, 61] += 40.0  # a two-volume spike
    out, spikes = despike(data)
    assert spikes[np.arange(50), pos].all() and spikes[0, 60] and spikes[0, 61]
    assert spikes.sum() <= 50 + 2 + 5  # at most a handful of false positives
    # replaced by the mean of the neighbours in time: error within a few noise SDs
    for v, p in enumerate(pos):
        if not spikes[v, p - 1] and not spikes[v, p + 1]:
            assert out[v, p] == pytest.approx(0.5 * (data[v, p - 1] + data[v, p + 1]), abs=1e-3)
        assert abs(out[v, p] - clean[v, p]) < 3.0
    lin = data[0, 59] + (data[0, 62] - data[0, 59]) * np.array([1, 2]) / 3
    assert np.allclose(out[0, 60:62], lin, atol=1e-3)
    untouched = ~spikes
    assert np.allclose(out[untouched], data[untouched], atol=1e-4)


def test_despike_false_positive_rate_on_white_noise():
    rng = np.random.default_rng(1)
    _, spikes = despike(rng.normal(size=(2000, 200)))
    assert spikes.mean() < 1e-4  # Gaussian: P(|z| > 5) ~ 6e-7, inflated by the sigma estimate


def test_slice_timing_fourier_exact_for_periodic_signal_and_linear():
    tr, n_t = 2.0, 64
    times = np.array([0.0, 0.5, 1.0, 1.5])
    ref = 0.75
    freq_hz = 5 / (n_t * tr)  # 5 cycles over the run: periodic and band-limited
    n = np.arange(n_t)
    data = np.zeros((2, 1, 4, n_t))
    for k, s_k in enumerate(times):
        data[:, 0, k] = np.cos(2 * np.pi * freq_hz * (n * tr + s_k))
    out, used_ref = slice_time_correct(data, tr, times)
    assert used_ref == ref
    expected = np.cos(2 * np.pi * freq_hz * (n * tr + ref))
    # linear detrending of a periodic signal leaves a non-periodic residual: the error is
    # largest at the ends of the run; check the interior to 1 % of the amplitude
    assert np.abs(out[0, 0, :, 8:-8] - expected[8:-8]).max() < 0.01
    # a pure linear ramp is shifted exactly by both methods (interior for "linear")
    ramp = np.zeros((1, 1, 4, n_t))
    for k, s_k in enumerate(times):
        ramp[0, 0, k] = 3 + 0.1 * (n * tr + s_k)
    for method in ("fourier", "linear"):
        shifted, _ = slice_time_correct(ramp, tr, times, method=method)
        assert np.allclose(shifted[0, 0, :, 1:-1], 3 + 0.1 * (n[1:-1] * tr + ref), atol=1e-4)
    with pytest.raises(InputError):
        slice_time_correct(data, tr, times[:3])


def test_motion_expansions():
    p = np.zeros((4, 6))
    p[1, 0] = 0.3  # mm
    p[2, 5] = 0.01  # rad -> 0.5 mm at 50 mm
    x = friston24(p)
    assert x.shape == (4, 24)
    assert np.allclose(x[:, 6 + 0], [0, 0.3, -0.3, 0]) and np.allclose(x[:, 12], p[:, 0] ** 2)
    assert np.allclose(framewise_displacement(p), [0, 0.3, 0.3 + 0.5, 0.5])
    s = spike_regressors(np.array([False, True, False, True]))
    assert s.shape == (4, 2) and s[1, 0] == 1 and s[3, 1] == 1 and s.sum() == 2


def test_regress_out_matches_lstsq_and_removes_known_components():
    rng = np.random.default_rng(2)
    n_t = 80
    conf = rng.normal(size=(n_t, 3))
    noise = rng.normal(size=(4, 5, 2, n_t))
    poly = polynomial_regressors(n_t)
    coefs = rng.normal(size=(4, 5, 2, 3))
    trend = rng.normal(size=(4, 5, 2, 3))
    data = 1000 + noise + coefs @ conf.T + trend @ poly.T
    mask = np.ones((4, 5, 2), bool)
    mask[0, 0, 0] = False
    res = regress_out(data, mask, conf)
    x = np.hstack([poly, conf])
    y = noise[mask].T
    expected = y - x @ np.linalg.lstsq(x, y, rcond=None)[0]  # residual of the noise alone
    assert np.allclose(res[mask], expected.T, atol=1e-3)
    assert np.all(res[0, 0, 0] == 0)
    with pytest.raises(InputError, match="degrees of freedom"):
        regress_out(data[..., :5], mask, conf[:5])


def test_scale_and_mask():
    vol = np.zeros((12, 12, 12, 3), np.float32)
    vol[3:9, 3:9, 3:9] = 400
    mask = epi_mask(vol.mean(-1))
    assert mask.sum() == 216
    scaled, factor = scale_global_mean(vol, mask)
    assert factor == pytest.approx(25.0) and scaled[mask].mean() == pytest.approx(GLOBAL_MEAN)


def _phantom(n_t: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    grid = np.indices((16, 16, 10)).astype(float)
    r2 = ((grid[0] - 7.5) / 6) ** 2 + ((grid[1] - 7.5) / 6) ** 2 + ((grid[2] - 4.5) / 4) ** 2
    brain = r2 < 1
    base = np.where(brain, 800 + 200 * grid[0] / 16, 20.0)
    t = np.arange(n_t)
    signal = 10 * np.sin(2 * np.pi * 0.05 * t * 2.0)  # 0.05 Hz at TR 2 s
    data = base[..., None] + brain[..., None] * signal + rng.normal(0, 2, (16, 16, 10, n_t))
    return data.astype(np.float32), brain


def _no_motion(x, affine, threads=1):
    return x, np.zeros((x.shape[-1], 6))


def test_preprocess_chain_keeps_signal_without_confounds():
    rng = np.random.default_rng(3)
    n_t = 45
    data, brain = _phantom(n_t, rng)
    times = np.linspace(0, 1.8, 10)
    original = data.copy()
    clean, mask, info = preprocess_bold(data, np.diag([3.0, 3, 3, 1]), 2.0, times,
                                        realign=_no_motion)
    assert np.array_equal(data, original)  # input untouched
    assert clean.shape == (16, 16, 10, n_t - 5) and clean.dtype == np.float32
    assert info["confound_names"] == []  # all-zero motion regressors are dropped
    # hole filling may add a few enclosed voxels of the discretised ellipsoid's surface
    assert (mask & brain).sum() / brain.sum() > 0.9
    assert (mask & ~brain).sum() <= 0.02 * brain.sum()
    assert np.abs(clean[mask].mean(1)).max() < 1e-2
    assert info["mean"][mask].mean() == pytest.approx(GLOBAL_MEAN, rel=1e-5)
    assert info["slice_reference_time"] == pytest.approx(0.9)
    # the 0.05 Hz sinusoid (amplitude 10 on ~850, noise SD 2) survives detrending. The
    # phantom ignores slice timing, so the correction shifts each slice by <= 0.9 s of a 20 s
    # period: correlation with the unshifted, identically detrended truth >= cos(2 pi 0.045)
    truth = np.sin(2 * np.pi * 0.05 * np.arange(5, n_t) * 2.0)
    poly = polynomial_regressors(n_t - 5)
    truth -= poly @ np.linalg.lstsq(poly, truth, rcond=None)[0]
    r = [np.corrcoef(v, truth)[0, 1] for v in clean[mask][::50]]
    assert np.median(r) > 0.9


def test_preprocess_chain_removes_wm_signal():
    rng = np.random.default_rng(4)
    n_t = 45
    data, brain = _phantom(n_t, rng)
    wm = np.zeros(brain.shape)
    wm[6:10, 6:10, 3:7] = 1.0  # a "WM" region carrying the same signal
    clean, mask, info = preprocess_bold(data, np.diag([3.0, 3, 3, 1]), 2.0, None,
                                        tissue_probs={"wm": wm}, realign=_no_motion)
    assert info["confound_names"] == ["wm_mean"] and info["slice_reference_time"] is None
    # signal SD before: 10 / sqrt 2 = 7.1 raw units; after: only noise (SD 2) remains
    assert np.median(clean[mask].std(1)) < 2.5 * info["scale_factor"]
    with pytest.raises(InputError, match="volumes"):
        preprocess_bold(data[..., :10], np.eye(4), 2.0, None, realign=_no_motion)


def test_preprocess_real_bold_with_motion_correction(shared_data):
    base = shared_data / "func" / "xa30_sub1_bold_task-fa_20vol"
    img = nb.load(f"{base}.nii.gz")
    data = np.asanyarray(img.dataobj)[:, :, 10:22].astype(np.float32)
    meta = json.loads(base.with_suffix(".json").read_text())
    clean, mask, info = preprocess_bold(
        data, img.affine, meta["RepetitionTime"], meta["SliceTiming"][10:22], motion_model=6)
    assert clean.shape == data.shape[:3] + (15,)
    assert info["params"].shape == (15, 6) and np.all(np.isfinite(info["params"]))
    assert np.abs(info["params"][:, :3]).max() < 5 and np.abs(info["params"][:, 3:]).max() < 0.1
    assert mask.sum() > 1000
    assert np.abs(clean[mask].mean(1)).max() < 1e-2
    # residual SD is a small fraction of the 10,000 global mean (a few percent at most)
    assert 0 < np.median(clean[mask].std(1)) < 500


def test_despike_window_variants_agree_on_clear_spikes():
    from scipy import ndimage as ndi

    from isyb_dask.metrics.func_preproc import _median5

    rng = np.random.default_rng(5)
    y = rng.normal(size=(300, 60)).astype(np.float32)
    assert np.array_equal(_median5(y), ndi.median_filter(y, size=(1, 5), mode="nearest"))
    y[np.arange(300), rng.integers(3, 57, 300)] += 30.0
    _, s5 = despike(y)
    _, s7 = despike(y, window=7)
    assert s5.sum() >= 300 and np.array_equal(s5.sum(1) > 0, s7.sum(1) > 0)
    with pytest.raises(InputError):
        despike(y, window=4)


def test_bandpass_keeps_in_band_and_removes_out_of_band():
    from isyb_dask.metrics.func_preproc import bandpass

    n_t, tr = 200, 2.0
    n = np.arange(n_t)
    inside = 2.0 * np.cos(2 * np.pi * 20 * n / n_t)  # 0.05 Hz
    outside = np.cos(2 * np.pi * 70 * n / n_t) + 0.5 * np.cos(2 * np.pi * 1 * n / n_t)
    out = bandpass((50 + inside + outside)[None, :], tr)
    assert np.allclose(out[0], inside, atol=1e-4)
    with pytest.raises(InputError):
        bandpass(np.zeros((1, 10)), 0.1)
