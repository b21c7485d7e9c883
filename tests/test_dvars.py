"""Tests of isyb_dask.qc.dvars against nipype ``compute_dvars`` and by definition."""

from __future__ import annotations

import nibabel as nb
import numpy as np
import pytest

from isyb_dask.qc.dvars import compute_dvars, dvars_summary


def _ar1_series(shape=(9, 8, 6), n_vol=40, rho=0.4, seed=0):
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, 1.0, shape + (n_vol,))
    out = np.empty_like(noise)
    out[..., 0] = noise[..., 0]
    for t in range(1, n_vol):
        out[..., t] = rho * out[..., t - 1] + np.sqrt(1 - rho**2) * noise[..., t]
    base = rng.uniform(400.0, 900.0, shape)
    data = (base[..., None] + 15.0 * out).astype(np.float32)
    mask = np.zeros(shape, dtype=np.uint8)
    mask[1:-1, 1:-1, 1:-1] = 1
    data[2, 2, 2, :] = 500.0  # zero-variance voxel inside the mask (removed)
    data[0, 0, 0, :] = 0.0  # outside the mask
    return data, mask


def test_dvars_equals_nipype(tmp_path) -> None:
    confounds = pytest.importorskip("nipype.algorithms.confounds")
    pytest.importorskip("nitime")
    data, mask = _ar1_series()
    aff = np.diag([3.0, 3.0, 3.5, 1.0])
    nb.save(nb.Nifti1Image(data, aff), tmp_path / "bold.nii.gz")
    nb.save(nb.Nifti1Image(mask, aff), tmp_path / "mask.nii.gz")
    ref_std, ref_nstd, ref_vx = confounds.compute_dvars(
        str(tmp_path / "bold.nii.gz"), str(tmp_path / "mask.nii.gz"),
        remove_zerovariance=True, variance_tol=1e-7, intensity_normalization=1000,
    )
    ours = compute_dvars(data, mask)
    assert ours.n_voxels == int(mask.sum()) - 1
    # float32 FFT autocorrelation in nitime vs float64 sums here: ~1e-6 relative.
    np.testing.assert_allclose(ours.std_dvars, ref_std, rtol=1e-5)
    np.testing.assert_allclose(ours.dvars, ref_nstd, rtol=1e-5)
    np.testing.assert_allclose(ours.vx_dvars, ref_vx, rtol=1e-5)
    summ = dvars_summary(ours)
    assert summ["dvars_std"] == pytest.approx(np.mean(ref_std), rel=1e-5)
    assert summ["dvars_nstd"] == pytest.approx(np.mean(ref_nstd), rel=1e-5)
    assert summ["dvars_vstd"] == pytest.approx(np.mean(ref_vx), rel=1e-5)


def test_dvars_definition_small() -> None:
    # Independent computation from METHODS §6 on a 2-voxel, 6-frame series.
    x = np.array([[10.0, 12.0, 11.0, 13.0, 12.0, 14.0], [20.0, 19.0, 22.0, 21.0, 20.0, 23.0]])
    data = x.reshape(2, 1, 1, 6).astype(np.float32)
    mask = np.ones((2, 1, 1), dtype=np.uint8)
    scaled = x / np.median(x) * 1000.0
    sd = np.array([
        (np.sort(v)[int(np.floor(0.75 * 5))] - np.sort(v)[int(np.floor(0.25 * 5))]) / 1.349
        for v in scaled
    ])
    dm = scaled - scaled.mean(axis=1, keepdims=True)
    rho = np.array([np.dot(v[1:], v[:-1]) / np.dot(v, v) for v in dm])
    shat = np.sqrt(2 * (1 - rho)) * sd
    d = np.diff(scaled, axis=1)
    dv = np.sqrt((d**2).mean(axis=0))
    res = compute_dvars(data, mask)
    np.testing.assert_allclose(res.dvars, dv, rtol=1e-5)
    np.testing.assert_allclose(res.std_dvars, dv / shat.mean(), rtol=1e-5)
    vx = np.sqrt(((d / shat[:, None]) ** 2).mean(0))
    np.testing.assert_allclose(res.vx_dvars, vx, rtol=1e-5)


def test_white_noise_standardised_dvars_near_one() -> None:
    rng = np.random.default_rng(5)
    data = (1000.0 + 10.0 * rng.normal(size=(12, 12, 8, 60))).astype(np.float32)
    res = compute_dvars(data, np.ones((12, 12, 8)))
    # robust SD of a normal sample is unbiased; white noise -> E[std DVARS] ~ 1
    assert abs(res.std_dvars.mean() - 1.0) < 0.08
    assert abs(res.vx_dvars.mean() - 1.0) < 0.1


def test_dvars_errors() -> None:
    with pytest.raises(ValueError):
        compute_dvars(np.ones((3, 3, 3, 2)), np.ones((3, 3, 3)))
    with pytest.raises(ValueError):
        compute_dvars(np.ones((3, 3, 3, 5)), np.zeros((3, 3, 3)))
    with pytest.raises(ValueError):
        compute_dvars(np.ones((3, 3, 3, 5)), np.ones((3, 3, 3)))


def test_dvars_equals_nipype_real_bold(shared_data, tmp_path) -> None:
    confounds = pytest.importorskip("nipype.algorithms.confounds")
    pytest.importorskip("nitime")
    from isyb_dask.qc.func_masks import automask

    bold = shared_data / "func" / "xa30_sub1_bold_task-fa_20vol.nii.gz"
    img = nb.load(bold)
    data = np.asarray(img.dataobj, dtype=np.float32)
    mask = automask(data.mean(axis=3))
    nb.save(nb.Nifti1Image(mask, img.affine), tmp_path / "mask.nii.gz")
    ref = confounds.compute_dvars(str(bold), str(tmp_path / "mask.nii.gz"),
                                  remove_zerovariance=True, variance_tol=1e-7,
                                  intensity_normalization=1000)
    ours = compute_dvars(data, mask)
    # nipype accumulates the squared differences of ~33k voxels in float32 along a
    # strided axis (relative error ~ sqrt(N) * 6e-8 ~ 1e-5 .. 1e-4); we sum in float64.
    for mine, theirs in zip((ours.std_dvars, ours.dvars, ours.vx_dvars), ref):
        np.testing.assert_allclose(mine, theirs, rtol=2e-4)
    # against a float64 evaluation of nipype's own formula, ours is exact
    mfunc = data[mask > 0].astype(np.float64)
    mfunc = mfunc / np.median(data[mask > 0]) * 1000.0
    dv64 = np.sqrt((np.diff(mfunc, axis=1) ** 2).mean(axis=0))
    np.testing.assert_allclose(ours.dvars, dv64, rtol=1e-6)
