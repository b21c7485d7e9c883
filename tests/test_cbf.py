"""Tests of CBF quantification (ASL white-paper single-compartment model)."""

from __future__ import annotations

import json

import nibabel as nb
import numpy as np
import pytest
from scipy import ndimage as ndi

from isyb_dask.errors import InputError
from isyb_dask.metrics.cbf import blood_t1, cbf_from_asl, labeling_efficiency, read_aslcontext

PCASL_META = {
    "ArterialSpinLabelingType": "PCASL",
    "MagneticFieldStrength": 3,
    "PostLabelingDelay": 1.8,
    "LabelingDuration": 1.8,
    "MRAcquisitionType": "2D",
    "SliceTiming": [0.0, 0.04, 0.08, 0.12, 0.16],
    "M0Type": "Included",
}


def _forward_pcasl(cbf, m0, pld, tau=1.8, t1b=1.65, alpha=0.85, lam=0.9):
    """Independent forward model: dM = 2 alpha M0 T1b f (1 - e^-tau/T1b) e^-PLD/T1b / lambda."""
    f = cbf / 6000.0  # ml/100 g/min -> ml/g/s
    return 2 * alpha * m0 * t1b * f * (1 - np.exp(-tau / t1b)) * np.exp(-pld / t1b) / lam


def test_synthetic_pcasl_with_per_slice_pld_inverted_exactly():
    rng = np.random.default_rng(0)
    shape = (6, 7, 5)
    cbf_true = rng.uniform(10, 90, size=shape)
    m0 = rng.uniform(800, 1500, size=shape)
    pld = 1.8 + np.array(PCASL_META["SliceTiming"])[None, None, :]
    dm = _forward_pcasl(cbf_true, m0, pld)
    control = 300 + rng.uniform(0, 10, size=shape)
    # two pairs, label first; the M0 is the first volume (aslcontext "m0scan")
    series = np.stack([m0, control - dm, control, control - dm + 1, control + 1], axis=-1)
    types = ["m0scan", "label", "control", "label", "control"]
    cbf = cbf_from_asl(series, types, None, PCASL_META)
    assert np.allclose(cbf, cbf_true, rtol=1e-5)
    # the same with a separate M0 image and a mask
    mask = rng.random(shape) > 0.3
    cbf2 = cbf_from_asl(series[..., 1:], types[1:], m0, PCASL_META, mask=mask)
    assert np.allclose(cbf2[mask], cbf_true[mask], rtol=1e-5) and np.all(cbf2[~mask] == 0)
    # ignoring per-slice timing (3-D readout) underestimates the later slices
    meta3d = dict(PCASL_META, MRAcquisitionType="3D")
    cbf3 = cbf_from_asl(series, types, None, meta3d)
    expected = cbf_true * np.exp(-np.array(PCASL_META["SliceTiming"]) / 1.65)
    assert np.allclose(cbf3, expected, rtol=1e-5)


def test_pasl_formula_and_reversed_slice_order():
    meta = {"ArterialSpinLabelingType": "PASL", "MagneticFieldStrength": 1.5,
            "PostLabelingDelay": 1.8, "BolusCutOffFlag": True,
            "BolusCutOffDelayTime": [0.7, 1.6], "MRAcquisitionType": "2D",
            "SliceTiming": [0.0, 0.05], "SliceEncodingDirection": "k-"}
    m0, dm = 1000.0, 8.0
    data = np.zeros((1, 1, 2, 2))
    data[..., 0] = 100.0  # control
    data[..., 1] = 100.0 - dm  # label
    cbf = cbf_from_asl(data, ["control", "label"], m0, meta)
    t1b, alpha = 1.35, 0.98
    # reversed slice order: slice 0 was read last (0.05 s after slice 1)
    for k, ti in ((0, 1.85), (1, 1.8)):
        expected = 6000 * 0.9 * dm * np.exp(ti / t1b) / (2 * alpha * 0.7 * m0)
        assert cbf[0, 0, k] == pytest.approx(expected, rel=1e-6)


def test_constants_and_background_suppression():
    assert blood_t1(3.0) == 1.65 and blood_t1(1.5) == 1.35
    assert blood_t1(7.0) == pytest.approx((110 * 7 + 1316) / 1000)
    meta = dict(PCASL_META, BackgroundSuppression=True, BackgroundSuppressionNumberPulses=4)
    assert labeling_efficiency(meta) == 0.85  # default: no correction
    assert labeling_efficiency(meta, bs_efficiency=0.95) == pytest.approx(0.85 * 0.95**4)
    assert labeling_efficiency(dict(meta, LabelingEfficiency=0.7)) == 0.7


@pytest.mark.parametrize("field", ["LabelingDuration", "PostLabelingDelay",
                                   "MagneticFieldStrength", "ArterialSpinLabelingType"])
def test_missing_sidecar_field_named(field):
    meta = {k: v for k, v in PCASL_META.items() if k != field}
    data = np.ones((2, 2, 5, 3))
    with pytest.raises(InputError, match=field):
        cbf_from_asl(data, ["m0scan", "label", "control"], None, meta)


def test_no_m0_and_unpaired_volumes_rejected():
    data = np.ones((2, 2, 5, 3))
    with pytest.raises(InputError, match="M0"):
        cbf_from_asl(data[..., 1:], ["label", "control"], None, PCASL_META)
    with pytest.raises(InputError, match="control"):
        cbf_from_asl(data, ["m0scan", "label", "label"], None, PCASL_META)


def test_read_aslcontext(tmp_path):
    p = tmp_path / "sub-01_aslcontext.tsv"
    p.write_text("volume_type\nm0scan\nlabel\ncontrol\n")
    assert read_aslcontext(p) == ["m0scan", "label", "control"]
    p.write_text("volume_type\nfoo\n")
    with pytest.raises(InputError, match="foo"):
        read_aslcontext(p)
    p.write_text("type\nlabel\n")
    with pytest.raises(InputError, match="volume_type"):
        read_aslcontext(p)


def test_real_siemens_pcasl_plausible(shared_data):
    base = shared_data / "asl"
    data = np.asanyarray(nb.load(base / "xa30_sub1_pcasl_2d_7vol.nii.gz").dataobj).astype(float)
    meta = json.loads((base / "xa30_sub1_pcasl_2d_7vol.json").read_text())
    rel = np.asanyarray(nb.load(base / "xa30_sub1_pcasl_relCBF.nii.gz").dataobj).astype(float)
    types = ["m0scan"] + ["label", "control"] * 3  # PROVENANCE: volume 0 is M0, label first
    m0 = data[..., 0]
    brain = ndi.binary_fill_holes(m0 > 0.3 * np.percentile(m0, 99))
    cbf = cbf_from_asl(data, types, None, meta, mask=brain)
    med = float(np.median(cbf[brain]))
    assert 20 < med < 100  # whole-brain median (GM+WM), 3 pairs only
    assert np.corrcoef(cbf[brain], rel[brain])[0, 1] > 0.6
    assert np.all(cbf[~brain] == 0)


def test_per_volume_lists_and_deltam():
    # BIDS allows per-volume PLD / labelling duration lists; the M0 volume carries 0
    meta = dict(PCASL_META, PostLabelingDelay=[0, 1.8, 1.8], LabelingDuration=[0, 1.8, 1.8],
                MRAcquisitionType="3D")
    m0, cbf_true = 1000.0, 50.0
    dm = _forward_pcasl(cbf_true, m0, 1.8)
    data = np.zeros((1, 1, 5, 3))
    data[..., 0], data[..., 1], data[..., 2] = m0, 200 - dm, 200
    cbf = cbf_from_asl(data, ["m0scan", "label", "control"], None, meta)
    assert np.allclose(cbf, cbf_true, rtol=1e-6)
    dm_only = cbf_from_asl(np.full((1, 1, 5), dm), ["deltam"], m0, meta | {
        "PostLabelingDelay": 1.8, "LabelingDuration": 1.8})
    assert np.allclose(dm_only, cbf_true, rtol=1e-6)
    with pytest.raises(InputError, match="multi-delay"):
        cbf_from_asl(data, ["m0scan", "label", "control"], None,
                     dict(meta, PostLabelingDelay=[0, 1.5, 2.0]))
