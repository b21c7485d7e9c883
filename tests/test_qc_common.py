"""Tests of isyb_dask.qc.common against references written from METHODS §5.2-§5.3."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage as ndi

from isyb_dask.qc import common, fwhm, summary

REL = 1e-6


# ---------------------------------------------------------------- independent references
def _ref_weighted_quantile(values, weights, p):
    """SAS weighted quantile written from the statsmodels docstring (plain Python loops)."""
    groups: dict[float, float] = {}
    for v, w in zip(values.tolist(), weights.tolist()):
        groups[v] = groups.get(v, 0.0) + w
    ys = sorted(groups)
    cum = []
    s = 0.0
    for y in ys:
        s += groups[y]
        cum.append(s)
    target = p * cum[-1]
    for j, cj in enumerate(cum):
        if abs(target - cj) < 1e-10 and j < len(cum) - 1:
            return (ys[j] + ys[j + 1]) / 2
        if cj > target:
            return ys[j]
    return ys[-1]


def _ref_stats(data, pvm):
    x = np.round(data.ravel().astype(np.float64))
    w = np.round(pvm.ravel().astype(np.float32), 3).astype(np.float64)
    mean = (x * w).sum() / w.sum()
    sd = math.sqrt(((x - mean) ** 2 * w).sum() / w.sum())
    med = _ref_weighted_quantile(x, w, 0.5)
    thr = data.ravel()[pvm.ravel() > 0.5 * pvm.max()].astype(np.float64)
    z = (thr - thr.mean()) / thr.std()
    kurt = (z**4).mean() - 3.0
    mad = np.median(np.abs(thr - med)) / 0.6744897501960817
    return {
        "mean": mean,
        "stdv": sd,
        "median": med,
        "p05": _ref_weighted_quantile(x, w, 0.05),
        "p95": _ref_weighted_quantile(x, w, 0.95),
        "k": kurt,
        "mad": mad,
        "n": pvm.astype(np.float64).sum(),
    }


def _ref_fwhm_axis(img, mask, axis, zoom):
    vals = img[mask]
    var = vals.var(ddof=1)
    diffs = []
    nx, ny, nz = img.shape
    step = [(1, 0, 0), (0, 1, 0), (0, 0, 1)][axis]
    for i in range(nx - step[0]):
        for j in range(ny - step[1]):
            for k in range(nz - step[2]):
                i2, j2, k2 = i + step[0], j + step[1], k + step[2]
                if mask[i, j, k] and mask[i2, j2, k2]:
                    diffs.append(img[i2, j2, k2] - img[i, j, k])
    var_a = np.var(diffs, ddof=1) if len(diffs) >= 6 else 0.0
    arg = 1 - var_a / (2 * var)
    if not 0 < arg < 1:
        return 0.0
    mm = 2.35482 * math.sqrt(-1 / (4 * math.log(arg))) * zoom
    return float(f"{mm:.6g}") / zoom


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def phantom():
    rng = np.random.default_rng(7)
    data = rng.normal(800, 60, (24, 26, 22)).astype(np.float32)
    pvm = rng.uniform(0, 1, data.shape).astype(np.float32)
    pvm[pvm < 0.3] = 0
    return data, pvm


def test_summary_stats_matches_reference(phantom):
    data, pvm = phantom
    got = summary.summary_stats(data, pvm, decimals=None)
    ref = _ref_stats(data, pvm)
    for key, val in ref.items():
        assert got[key] == pytest.approx(val, rel=REL, abs=1e-9), key


def test_summary_stats_binary_mask_exact_hit_median():
    # 4 voxels of values 1,2,3,4 with unit weights: pW = 2 hits s_2 exactly -> (2+3)/2.
    data = np.array([1, 2, 3, 4, 9, 9], dtype=np.float32).reshape(1, 2, 3)
    mask = np.array([1, 1, 1, 1, 0, 0], dtype=np.uint8).reshape(1, 2, 3)
    got = summary.summary_stats(data, mask, decimals=None)
    assert got["median"] == 2.5
    assert got["n"] == 4
    assert got["stdv"] == pytest.approx(np.std([1, 2, 3, 4]), rel=REL)


def test_summary_stats_agrees_with_statsmodels(phantom):
    sm = pytest.importorskip("statsmodels.stats.weightstats")
    data, pvm = phantom
    ws = sm.DescrStatsW(np.round(data.ravel()), weights=np.round(pvm.ravel(), 3))
    p05, med, p95 = ws.quantile([0.05, 0.5, 0.95], return_pandas=False)
    got = summary.summary_stats(data, pvm, decimals=None)
    assert (got["p05"], got["median"], got["p95"]) == (p05, med, p95)
    assert got["stdv"] == pytest.approx(ws.std, rel=REL)


def test_summary_stats_rounding_and_errors(phantom):
    data, pvm = phantom
    got = summary.summary_stats(data, pvm)
    assert got["mean"] == round(got["mean"], 4)
    with pytest.raises(ValueError):
        summary.summary_stats(data, np.zeros_like(pvm))
    with pytest.raises(ValueError):
        summary.summary_stats(data, pvm[:-1])


def test_snr_cnr_cjv_formulas():
    assert common.snr(1000.0, 50.0, 101.0) == pytest.approx(
        1000.0 / (50.0 * math.sqrt(101.0 / 100.0)), rel=REL
    )
    assert math.isnan(common.snr(1.0, 1.0, 1.0))
    assert common.cnr(1000, 700, 3, 40, 50) == pytest.approx(300 / math.sqrt(9 + 1600 + 2500))
    assert common.cjv(1000, 700, 40, 50) == pytest.approx(90 / 300)


def test_snr_known_ground_truth():
    # Gaussian region, mean 1000, sd 20: SNR -> 50 within sampling error (~1%).
    rng = np.random.default_rng(3)
    data = rng.normal(1000, 20, (40, 40, 40)).astype(np.float32)
    mask = np.ones(data.shape, np.uint8)
    assert summary.snr_region(data, mask) == pytest.approx(50.0, rel=0.02)


def test_fber_reference():
    rng = np.random.default_rng(1)
    data = rng.normal(0, 5, (20, 20, 20))
    data[5:15, 5:15, 5:15] += 300
    head = np.zeros(data.shape, bool)
    head[5:15, 5:15, 5:15] = True
    rot = np.zeros(data.shape, np.uint8)
    rot[:2] = 1
    air = ~head & (rot == 0)
    ref = np.median(data[head] ** 2) / np.median(data[air] ** 2)
    assert common.fber(data, head, rot, decimals=None) == pytest.approx(ref, rel=REL)
    assert common.fber(data, head, rot) == round(ref, 4)
    data[~head] = 0
    assert common.fber(data, head) == -1.0


def test_efc_reference_and_bounds():
    rng = np.random.default_rng(2)
    data = rng.uniform(0, 100, (12, 13, 14))
    rot = np.zeros(data.shape, np.uint8)
    rot[0] = 1
    x = data[rot == 0]
    n = x.size
    b = math.sqrt((x**2).sum())
    ref = (x / b * np.log((x + 1e-16) / b)).sum() / (n / math.sqrt(n) * math.log(1 / math.sqrt(n)))
    assert common.efc(data, rot, decimals=None) == pytest.approx(ref, rel=REL)
    assert common.efc(np.full((8, 8, 8), 5.0)) == pytest.approx(1.0, abs=1e-4)
    spike = np.zeros((8, 8, 8))
    spike[3, 3, 3] = 10
    assert common.efc(spike) == pytest.approx(0.0, abs=1e-4)


def test_fwhm_matches_loop_reference():
    rng = np.random.default_rng(5)
    img = ndi.gaussian_filter(rng.normal(size=(14, 15, 16)), (1.0, 1.5, 0.8))
    mask = np.zeros(img.shape, bool)
    mask[2:12, 3:13, 1:15] = True
    mask[5, 5, 5] = False
    zooms = (1.0, 1.2, 2.5)
    got = fwhm.fwhm_afni(img, mask, zooms)
    ref = [_ref_fwhm_axis(img, mask, a, zooms[a]) for a in range(3)]
    for g, r in zip(got[:3], ref):
        assert g == pytest.approx(r, rel=REL)
    assert got[3] == pytest.approx(np.mean(ref), rel=REL)


def test_fwhm_known_smoothness():
    # White noise smoothed with a Gaussian of sigma s voxels: classic FWHM = 2.35482 s.
    rng = np.random.default_rng(11)
    img = ndi.gaussian_filter(rng.normal(size=(48, 48, 48)), 2.0, mode="wrap")
    fx, fy, fz, _favg = fwhm.fwhm_afni(img, np.ones(img.shape, bool), (2.0, 2.0, 2.0))
    for val in (fx, fy, fz):
        assert val == pytest.approx(2.35482 * 2.0, rel=0.05)


def test_fwhm_invalid_axis_is_zero():
    rng = np.random.default_rng(0)
    img = rng.normal(size=(10, 10, 10))  # white noise: arg <= 0 on every axis
    img = np.repeat(img[:, :, :1], 10, axis=2)  # constant along z: arg == 1 -> invalid
    _fx, _fy, fz, _favg = fwhm.fwhm_afni(img, np.ones(img.shape, bool), (1, 1, 1))
    assert fz == 0.0
    with pytest.raises(ValueError):
        fwhm.fwhm_afni(img, np.zeros(img.shape, bool), (1, 1, 1))


def test_rotation_mask_corners():
    from isyb_dask.anat.masks import rotation_mask

    data = np.ones((30, 30, 30), np.float32)
    data[:6, :6, :] = 0  # zero padding in two corners (two components)
    data[-6:, -6:, :] = 0
    data[15, 15, 15] = 0  # isolated zero: removed by the opening
    rot = rotation_mask(data)
    assert rot[:6, :6].all() and rot[-6:, -6:].all()
    assert rot[15, 15, 15] == 0
    assert rot.sum() == 2 * 36 * 30
    small = np.ones((30, 30, 30), np.float32)
    small[:3, :3, :3] = 0
    assert rotation_mask(small).sum() == 0


def test_snr_dietrich_and_volume_fractions():
    assert common.snr_dietrich(1000.0, 10.0, 30.0) == pytest.approx(0.6551364 * 100.0)
    # MAD <= 1 (zero-filled air): falls back to the SD, then to -1
    assert common.snr_dietrich(1000.0, 0.5, 20.0) == pytest.approx(0.6551364 * 50.0)
    assert common.snr_dietrich(1000.0, 0.0, 0.0) == -1.0
    fr = common.volume_fractions({"a": np.full(4, 0.5), "b": np.ones(6)})
    assert fr == pytest.approx({"a": 0.25, "b": 0.75})
