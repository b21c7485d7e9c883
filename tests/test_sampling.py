"""Tests of isyb_dask.metrics.sampling (volume to fsLR 32k)."""

from __future__ import annotations

import numpy as np
import pytest

from isyb_dask.metrics.fslr import load_fslr32k
from isyb_dask.metrics.sampling import GM_DEPTHS, build_sampler, ribbon_points, sample_to_surface


def _mni_grid(step=3.0):
    shape = (64, 76, 62)
    affine = np.diag([step, step, step, 1.0])
    affine[:3, 3] = [-96.0, -132.0, -78.0]
    return shape, affine


def _linear(shape, affine, coef=(0.5, -0.25, 2.0), const=7.0):
    ijk = np.indices(shape).reshape(3, -1).T
    xyz = ijk @ affine[:3, :3].T + affine[:3, 3]
    return (xyz @ np.asarray(coef) + const).reshape(shape), np.asarray(coef), const


def test_linear_function_is_recovered_at_vertices():
    surf = load_fslr32k()
    shape, affine = _mni_grid()
    vol, coef, const = _linear(shape, affine)
    out = sample_to_surface(vol, affine)
    expected = ribbon_points(surf, GM_DEPTHS).mean(axis=0) @ coef + const
    assert np.isnan(out[~surf.cortex]).all()
    assert np.isfinite(out[surf.cortex]).all()
    # trilinear interpolation is exact for linear functions (float32 output)
    np.testing.assert_allclose(out[surf.cortex], expected[surf.cortex], atol=1e-3)


def test_native_volume_with_native_to_mni_affine():
    surf = load_fslr32k()
    shape, affine = _mni_grid()
    # a rigid native->MNI transform: rotate 10 deg about z and shift
    t = np.deg2rad(10.0)
    a = np.eye(4)
    a[:2, :2] = [[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]
    a[:3, 3] = [4.0, -6.0, 3.0]
    coef = np.array([1.0, 2.0, -0.5])
    ijk = np.indices(shape).reshape(3, -1).T
    x_native = ijk @ affine[:3, :3].T + affine[:3, 3]
    x_mni = x_native @ a[:3, :3].T + a[:3, 3]
    vol = (x_mni @ coef).reshape(shape)  # the function of MNI position, stored natively
    out = sample_to_surface(vol, affine, native_to_mni=a)
    expected = ribbon_points(surf).mean(axis=0) @ coef
    ok = np.isfinite(out)
    assert ok.sum() > 0.99 * surf.cortex.sum()
    np.testing.assert_allclose(out[ok], expected[ok], atol=1e-3)


def test_mask_excludes_outside_samples_and_4d():
    surf = load_fslr32k()
    shape, affine = _mni_grid()
    vol, _, _ = _linear(shape, affine)
    mask = np.ones(shape, bool)
    mask[: shape[0] // 2] = False  # keep only x >= 0 (right hemisphere side)
    poisoned = np.where(mask, vol, 1e6)  # values outside the mask must never leak in
    series = np.stack([poisoned, 2 * poisoned], axis=-1)
    sampler = build_sampler(shape, affine, mask=mask)
    out = sampler.apply(series)
    assert out.shape == (64984, 2)
    ok = np.isfinite(out[:, 0])
    assert ok[32492:].sum() > 0.95 * surf.cortex[32492:].sum()
    assert ok[:32492].sum() < 0.05 * surf.cortex[:32492].sum()
    assert np.nanmax(np.abs(out)) < 1e4
    np.testing.assert_allclose(out[ok, 1], 2 * out[ok, 0], rtol=1e-5)


def test_outside_volume_is_nan():
    shape = (10, 10, 10)
    affine = np.eye(4)  # covers 0..9 mm only: almost no vertex inside
    out = sample_to_surface(np.ones(shape), affine)
    assert np.isnan(out).mean() > 0.99
    with pytest.raises(ValueError):
        build_sampler(shape, affine).apply(np.ones((5, 5, 5)))


def test_real_mni_tissue_maps_agree_with_the_surfaces():
    """The S1200 surfaces lie in MNI space: the ribbon samples the MNI GM map."""
    import nibabel as nb

    from isyb_dask.atlas import get_reference_atlas
    from isyb_dask.metrics.sampling import WM_DEPTHS

    atlas = get_reference_atlas()
    med = {}
    for tissue in ("gm", "wm"):
        img = nb.load(str(getattr(atlas, f"mni_{tissue}_prob")))
        data = np.asarray(img.dataobj, dtype=np.float32)
        for name, depths in (("ribbon", GM_DEPTHS), ("below", WM_DEPTHS)):
            med[tissue, name] = np.nanmedian(sample_to_surface(data, img.affine, depths=depths))
    assert med["gm", "ribbon"] > 0.6 > med["wm", "ribbon"] + 0.2
    assert med["wm", "below"] > med["wm", "ribbon"] + 0.25
    assert med["gm", "below"] < med["gm", "ribbon"] - 0.2
