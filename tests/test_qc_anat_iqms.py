"""T1w IQMs from given masks: equality with reference definitions and known-SNR phantoms."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage as ndi
from statsmodels.stats.weightstats import DescrStatsW

from isyb_dask.qc.anat_iqms import ANAT_IQMS, anat_iqms, harmonize

REL = 1e-6


def _phantom(shape=(40, 44, 36), sd=(30.0, 40.0, 25.0), air_sd=8.0, seed=0):
    """Nested ellipsoids: WM core, GM shell, CSF shell, scalp; Rayleigh-like air."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).astype(float)
    c = (np.array(shape) - 1) / 2
    r = np.sqrt(sum(((g - ci) / (0.45 * n)) ** 2 for g, ci, n in zip(grid, c, shape)))
    wm = r < 0.45
    gm = (r >= 0.45) & (r < 0.65)
    csf = (r >= 0.65) & (r < 0.75)
    scalp = (r >= 0.75) & (r < 0.95)
    head = r < 0.95
    data = np.abs(rng.normal(0, air_sd, shape))
    data[wm] = rng.normal(1000, sd[2], wm.sum())
    data[gm] = rng.normal(700, sd[1], gm.sum())
    data[csf] = rng.normal(300, sd[0], csf.sum())
    data[scalp] = rng.normal(1200, 60, scalp.sum())
    rot = np.zeros(shape, np.uint8)
    rot[:2, :2, :] = 1
    data[rot > 0] = 0
    air = ~head & (rot == 0)
    brain = r < 0.75
    return data.astype(np.float32), {
        "wm": wm,
        "gm": gm,
        "csf": csf,
        "head": head,
        "air": air,
        "brain": brain,
        "rot": rot,
    }


def _ref_stats(data, w):
    d = DescrStatsW(
        np.round(data.ravel().astype(np.float64)),
        weights=np.round(w.ravel().astype(np.float32), 3),
    )
    _p05, med, _p95 = d.quantile([0.05, 0.5, 0.95], return_pandas=False)
    return med, d.std, float(w.sum())


def test_iqms_equal_reference_definitions():
    data, m = _phantom()
    # soft PVMs: blur the binary tissue masks (weights with 3 decimals matter)
    pv = [np.clip(ndi.gaussian_filter(m[k].astype(float), 0.7), 0, 1) for k in ("csf", "gm", "wm")]
    pv = [p / np.maximum(sum(pv), 1e-9) * m["brain"] for p in pv]
    art = np.zeros_like(m["air"])
    art[-3:, -3:, :] = True  # pretend artifacts in a corner of the air
    air = m["air"] & ~art
    bias = np.linspace(0.8, 1.2, data.size, dtype=np.float32).reshape(data.shape)
    out = anat_iqms(
        data,
        data,
        head=m["head"],
        brain=m["brain"],
        air=air,
        rotation=m["rot"],
        pvms=pv,
        zooms=(1.0, 1.0, 1.0),
        artifacts=art,
        bias=bias,
    )
    assert tuple(out) == ANAT_IQMS
    ref = {k: _ref_stats(data, w) for k, w in zip(("csf", "gm", "wm"), pv)}
    ref["bg"] = _ref_stats(data, air.astype(float))
    for k in ("csf", "gm", "wm"):
        med, sd, n = ref[k]
        med, sd = round(med, 4), round(sd, 4)
        assert out[f"snr_{k}"] == pytest.approx(med / (sd * math.sqrt(n / (n - 1))), rel=REL)
        assert out[f"summary_{k}_n"] == pytest.approx(n, rel=REL)
    assert out["snr_total"] == pytest.approx(
        np.mean([out["snr_csf"], out["snr_wm"], out["snr_gm"]]), rel=REL
    )
    (mw, sw, _), (mg, sg, _), (_, sa, _) = ref["wm"], ref["gm"], ref["bg"]
    assert out["cnr"] == pytest.approx(abs(mw - mg) / math.sqrt(sa**2 + sw**2 + sg**2), rel=1e-5)
    # Dietrich SNR: 0.6551364 * median / MAD(air) (MAD > 1 here), MAD about the median
    bgx = data[air].astype(np.float64)
    mad_bg = round(np.median(np.abs(bgx - ref["bg"][0])) / 0.6744897501960817, 4)
    assert mad_bg > 1
    for k in ("csf", "gm", "wm"):
        assert out[f"snrd_{k}"] == pytest.approx(0.6551364 * round(ref[k][0], 4) / mad_bg, rel=REL)
    tot = sum(float(p.sum()) for p in pv)
    for k, p in zip(("csf", "gm", "wm"), pv):
        assert out[f"icvs_{k}"] == pytest.approx(float(p.sum()) / tot, rel=REL)
    assert out["qi_1"] == pytest.approx(art.sum() / (air.sum() + art.sum()), rel=REL)
    inside = bias[m["brain"]]
    assert out["inu_med"] == pytest.approx(np.median(inside), rel=REL)
    assert out["inu_range"] == pytest.approx(
        np.percentile(inside, 95) - np.percentile(inside, 5), rel=REL
    )
    head = m["head"]
    bgv = ~head & (m["rot"] == 0)
    fber_ref = np.median(data[head].astype(float) ** 2) / np.median(data[bgv].astype(float) ** 2)
    assert out["fber"] == pytest.approx(round(fber_ref, 4), rel=REL)
    x = data[m["rot"] == 0].astype(float)
    n = x.size
    b = math.sqrt((x**2).sum())
    efc_ref = (x / b * np.log((x + 1e-16) / b)).sum() / (n / math.sqrt(n) * math.log(n**-0.5))
    assert out["efc"] == pytest.approx(round(efc_ref, 4), abs=1e-12)
    assert out["fwhm_avg"] == pytest.approx(
        np.mean([out["fwhm_x"], out["fwhm_y"], out["fwhm_z"]]), rel=REL
    )
    assert all(np.isfinite(v) for v in out.values())


def test_phantom_snr_cnr_known_truth():
    sd = (30.0, 40.0, 25.0)
    air_sd = 8.0
    data, m = _phantom(shape=(64, 70, 60), sd=sd, air_sd=air_sd, seed=3)
    pv = [m[k].astype(np.float32) for k in ("csf", "gm", "wm")]
    out = anat_iqms(
        data,
        data,
        head=m["head"],
        brain=m["brain"],
        air=m["air"],
        rotation=m["rot"],
        pvms=pv,
        zooms=(1.0, 1.0, 1.0),
    )
    # binary masks: SNR_k -> mu_k / sd_k (sampling error ~1/sqrt(2n) < 1%, rounding ~0.1%)
    assert out["snr_wm"] == pytest.approx(1000 / sd[2], rel=0.02)
    assert out["snr_gm"] == pytest.approx(700 / sd[1], rel=0.02)
    assert out["snr_csf"] == pytest.approx(300 / sd[0], rel=0.02)
    sd_air = air_sd * math.sqrt(1 - 2 / math.pi)  # half-normal background
    assert out["cnr"] == pytest.approx(
        300 / math.sqrt(sd_air**2 + sd[1] ** 2 + sd[2] ** 2), rel=0.03
    )


def test_empty_air_mask_gives_nan_background():
    data, m = _phantom()
    pv = [m[k].astype(np.float32) for k in ("csf", "gm", "wm")]
    out = anat_iqms(
        data,
        data,
        head=m["head"],
        brain=m["brain"],
        air=np.zeros_like(m["air"]),
        rotation=None,
        pvms=pv,
        zooms=(1, 1, 1),
    )
    assert out["summary_bg_n"] == 0.0 and math.isnan(out["cnr"])
    assert out["snrd_total"] == -1.0 and math.isnan(out["qi_1"])
    assert math.isfinite(out["snr_wm"])


def test_harmonize_scales_and_clips():
    x = np.array([[[-5.0, np.nan, 2.0, 4.0]]], dtype=np.float32)
    h = harmonize(x, 250.0)
    assert h.tolist() == [[[0.0, 0.0, 500.0, 1000.0]]]
