"""Tests of isyb_dask.qc.func_iqms: GCOR, tSNR and mean-EPI IQMs against definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage as ndi

from isyb_dask.qc.func_iqms import gcor, mean_epi_iqms, tsnr, tsnr_map


def _series(seed=0, shape=(7, 6, 5), n_t=30):
    rng = np.random.default_rng(seed)
    common = rng.normal(size=n_t)
    data = 500.0 + rng.normal(size=shape + (n_t,)) * 5.0 + 3.0 * common
    mask = np.ones(shape, dtype=np.uint8)
    mask[0] = 0
    data[3, 3, 3] = 420.0  # constant voxel inside the mask
    return data.astype(np.float32), mask


def test_gcor_equals_mean_of_correlation_matrix() -> None:
    data, mask = _series()
    vox = data[mask > 0].astype(np.float64)
    n = vox.shape[0]
    varying = vox.std(axis=1) > 0
    corr = np.corrcoef(vox[varying])  # constant series: zero row/column (AFNI 3dTnorm)
    expected = corr.sum() / n**2
    assert gcor(data, mask) == pytest.approx(expected, rel=1e-9)
    assert gcor(data, mask, chunk=17) == pytest.approx(expected, rel=1e-9)


def test_gcor_extremes() -> None:
    t = np.sin(np.linspace(0, 6, 40))
    same = np.broadcast_to(100 + t, (4, 4, 3, 40)).copy()
    assert gcor(same, np.ones((4, 4, 3))) == pytest.approx(1.0, rel=1e-12)
    rng = np.random.default_rng(1)
    noise = rng.normal(size=(10, 10, 10, 200))
    assert gcor(noise, np.ones((10, 10, 10))) < 0.01  # ~1/T for independent series


def test_tsnr_by_definition() -> None:
    data, mask = _series(seed=3)
    data[2, 2, 2] = 300.0 + np.linspace(0, 1e-4, data.shape[3])  # SD <= 1e-3 -> 0
    vals = []
    for idx in zip(*np.nonzero(mask)):
        x = data[idx].astype(np.float64)
        sd = math.sqrt(sum((v - x.mean()) ** 2 for v in x) / len(x))
        vals.append(x.mean() / sd if sd > 1e-3 else 0.0)
    assert tsnr(data, mask) == pytest.approx(float(np.median(vals)), rel=1e-9)
    tmap = tsnr_map(data)
    assert tmap[2, 2, 2] == 0.0 and tmap[3, 3, 3] == 0.0
    assert tsnr(data, mask) == pytest.approx(float(np.median(tmap[mask > 0])), rel=1e-12)


def _mean_epi(seed=2, shape=(40, 40, 30)):
    rng = np.random.default_rng(seed)
    ijk = np.indices(shape).astype(float)
    r = np.sqrt(((ijk[0] - 20) / 14) ** 2 + ((ijk[1] - 20) / 16) ** 2 + ((ijk[2] - 15) / 11) ** 2)
    brain = r < 1
    epi = np.where(brain, 700.0, 0.0) + np.abs(rng.normal(0, 15, shape))
    epi += np.where(brain, rng.normal(0, 60, shape), 0.0)
    return np.round(np.maximum(epi, 0)), brain.astype(np.uint8)


def test_mean_epi_iqms_against_definitions() -> None:
    epi, mask = _mean_epi()
    out = mean_epi_iqms(epi, mask, (3.0, 3.0, 3.5))
    fg = epi[mask > 0]
    bg = epi[mask == 0]
    n = fg.size
    snr_ref = np.median(fg) / (fg.std() * math.sqrt(n / (n - 1)))
    assert out["snr"] == pytest.approx(snr_ref, rel=1e-3)  # MRIQC rounds stats to 4 dp
    fber_ref = np.median(fg**2) / np.median(bg**2)
    assert out["fber"] == pytest.approx(fber_ref, rel=1e-4)
    x = epi.ravel()
    b = math.sqrt((x**2).sum())
    n_all = x.size
    efc_ref = np.sum(x / b * np.log((x + 1e-16) / b)) / (
        n_all * (1 / math.sqrt(n_all)) * math.log(1 / math.sqrt(n_all))
    )
    assert out["efc"] == pytest.approx(efc_ref, abs=6e-5)
    assert out["summary_fg_n"] == n and out["summary_bg_n"] == bg.size
    assert out["summary_fg_median"] == pytest.approx(np.median(fg))


def test_fwhm_of_smoothed_noise() -> None:
    rng = np.random.default_rng(4)
    sigma = 1.5  # voxels; AFNI's estimator targets the kernel FWHM = 2.35482 sigma
    noise = ndi.gaussian_filter(rng.normal(size=(48, 48, 48)), sigma, mode="wrap")
    img = 1000.0 + 100.0 * noise / noise.std()
    mask = np.zeros(img.shape, np.uint8)
    mask[4:-4, 4:-4, 4:-4] = 1
    out = mean_epi_iqms(img, mask, (2.0, 2.0, 3.0))
    for key in ("fwhm_x", "fwhm_y", "fwhm_z", "fwhm_avg"):
        assert out[key] == pytest.approx(2.35482 * sigma, rel=0.05), key


def test_errors() -> None:
    with pytest.raises(ValueError):
        gcor(np.ones((3, 3, 3, 5)), np.zeros((3, 3, 3)))
    with pytest.raises(ValueError):
        tsnr(np.ones((3, 3, 3, 5)), np.ones((3, 3, 4)))
    with pytest.raises(ValueError):
        mean_epi_iqms(np.ones((10, 10, 10)), np.zeros((10, 10, 10)), (1, 1, 1))


def test_non_steady_state_equals_nipype(tmp_path) -> None:
    nb = pytest.importorskip("nibabel")
    confounds = pytest.importorskip("nipype.algorithms.confounds")
    from isyb_dask.qc.func_iqms import non_steady_state_volumes

    rng = np.random.default_rng(8)
    data = 600.0 + rng.normal(0, 4, size=(6, 6, 4, 60))
    data[..., 0] *= 1.8  # T1 not yet at steady state: bright first volumes
    data[..., 1] *= 1.3
    data[..., 2] *= 1.1
    path = tmp_path / "bold.nii.gz"
    nb.save(nb.Nifti1Image(data.astype(np.float32), np.eye(4)), path)
    res = confounds.NonSteadyStateDetector(in_file=str(path)).run(cwd=str(tmp_path))
    ours = non_steady_state_volumes(data.astype(np.float32))
    assert ours == res.outputs.n_volumes_to_discard == 3
    assert non_steady_state_volumes(data[..., 3:]) == 0


def test_gsr_of_synthetic_nyquist_ghost() -> None:
    from isyb_dask.qc.func_iqms import gsr

    shape = (40, 40, 10)
    brain = np.zeros(shape, bool)
    brain[14:26, 12:28, 2:8] = True
    epi = np.full(shape, 10.0)
    epi[brain] = 1000.0
    ghost = np.roll(brain, 20, axis=1) & ~brain
    epi[ghost] += 30.0  # 3 % ghost along the second axis
    assert gsr(epi, brain, axis=1) == pytest.approx(30.0 / 1000.0, rel=1e-12)
    # no ghost along the first axis (its "background" holds the real ghost: slightly < 0)
    assert -0.005 < gsr(epi, brain, axis=0) <= 0.0
