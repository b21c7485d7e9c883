"""Tests of isyb_dask.metrics.gmv (Jacobian-modulated grey-matter volume)."""

from __future__ import annotations

import numpy as np
import pytest

from isyb_dask.metrics.fslr import load_fslr32k
from isyb_dask.metrics.gmv import gm_probability, gmv_surface, modulated_gm
from isyb_dask.metrics.spaces import jacobian_determinant


def _scaling(s):
    a = np.diag([s, s, s, 1.0])
    a[:3, 3] = [1.0, -2.0, 3.0]
    return a


def test_modulation_divides_by_jacobian():
    gm = np.full((4, 4, 4), 0.6, np.float32)
    a = _scaling(1.2)
    assert jacobian_determinant(a) == pytest.approx(1.728)
    np.testing.assert_allclose(modulated_gm(gm, a), 0.6 / 1.728, rtol=1e-6)
    with pytest.raises(ValueError):
        modulated_gm(gm, np.diag([-1.0, 1, 1, 1]))


def test_gmv_surface_of_constant_gm_is_density_everywhere():
    surf = load_fslr32k()
    # native grid: MNI box shrunk by 1/1.2 (a "small brain"), 2.5 mm voxels
    s = 1.2
    shape = (64, 76, 64)
    affine = np.diag([2.5, 2.5, 2.5, 1.0])
    affine[:3, 3] = [-80.0, -95.0, -70.0]
    to_mni = _scaling(s)
    gm = np.full(shape, 0.8, np.float32)
    out = gmv_surface(gm, affine, to_mni, surf=surf)
    ok = np.isfinite(out)
    assert ok.sum() > 0.99 * surf.cortex.sum()
    np.testing.assert_allclose(out[ok], 0.8 / s**3, rtol=1e-5)
    # a bigger subject (smaller native->MNI scale) has a larger GMV
    big = gmv_surface(gm, affine, _scaling(0.9), surf=surf)
    np.testing.assert_allclose(np.nanmedian(big), 0.8 / 0.9**3, rtol=1e-5)


def test_gm_probability_falls_back_to_prior():
    rng = np.random.default_rng(0)
    t1 = rng.normal(100, 10, (12, 12, 12)).astype(np.float32)
    brain = np.zeros(t1.shape, bool)
    brain[4:8, 4:8, 4:8] = True  # far fewer than the 1000 voxels segmentation needs
    priors = np.stack([np.full(t1.shape, v, np.float32) for v in (0.2, 0.5, 0.3)])
    gm, info = gm_probability(t1, (2.0, 2.0, 2.0), brain, priors)
    assert "atlas GM prior" in info["source"]
    np.testing.assert_array_equal(gm, 0.5 * brain)
