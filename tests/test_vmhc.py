"""Tests of VMHC on vertex pairs and on a symmetric volume grid."""

from __future__ import annotations

import numpy as np
import pytest

from isyb_dask.errors import InputError
from isyb_dask.metrics.vmhc import R_CLIP, fisher_z, mirror_x, vmhc_pairs, vmhc_volume

T = 120


def test_pairs_mirrored_independent_and_constant():
    rng = np.random.default_rng(0)
    left = rng.normal(size=(500, T))
    z_same = vmhc_pairs(left, 3 * left + 2)
    assert np.allclose(z_same, np.arctanh(R_CLIP), rtol=1e-5)
    noisy = left + 0.1 * rng.normal(size=left.shape)
    r_expected = 1 / np.sqrt(1 + 0.01)  # corr(x, x + e) with var(e) = 0.01 var(x)
    assert np.median(np.tanh(vmhc_pairs(left, noisy))) == pytest.approx(r_expected, abs=0.01)
    z_ind = vmhc_pairs(left, rng.normal(size=left.shape))
    # under independence z ~ N(0, 1/(T-3)): mean of 500 within 5 SE, SD within 20 %
    assert abs(z_ind.mean()) < 5 / np.sqrt(T - 3) / np.sqrt(500)
    assert z_ind.std() == pytest.approx(1 / np.sqrt(T - 3), rel=0.2)
    flat = left.copy()
    flat[3] = 5.0
    z_flat = vmhc_pairs(flat, left)
    assert np.isnan(z_flat[3])  # flat: missing, not 'no connectivity'
    assert np.isfinite(np.delete(z_flat, 3)).all()
    with pytest.raises(InputError):
        vmhc_pairs(left, left[:, :10])


def test_pairs_match_numpy_corrcoef():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(20, T)), rng.normal(size=(20, T))
    b[:10] += a[:10]
    expected = [np.arctanh(np.corrcoef(x, y)[0, 1]) for x, y in zip(a, b)]
    assert np.allclose(vmhc_pairs(a, b), expected, atol=1e-6)
    assert np.isnan(fisher_z(np.array([np.nan, 1.0]))[0])


def _symmetric_affine(nx: int, offset: float = 0.0) -> np.ndarray:
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    aff[0, 3] = -(nx - 1) + offset  # x = 2 i - (nx - 1) + offset
    return aff


def test_volume_mirrored_signals_high_and_midline_zero():
    rng = np.random.default_rng(2)
    nx = 9  # odd: index 4 is the mid-sagittal plane
    data = rng.normal(size=(nx, 4, 3, T))
    aff = _symmetric_affine(nx)
    mirrored, inside = mirror_x(data, aff)
    assert inside.all() and np.allclose(mirrored, data[::-1])
    sym = 0.5 * (data + data[::-1]) + 0.05 * rng.normal(size=data.shape)
    z = vmhc_volume(sym, aff)
    assert np.all(z[4] == 0)
    off_mid = np.delete(z, 4, axis=0)
    assert np.tanh(off_mid).min() > 0.95
    z_ind = vmhc_volume(data, aff)
    assert abs(np.delete(z_ind, 4, axis=0).mean()) < 5 / np.sqrt(T - 3) / np.sqrt(96)


def test_volume_half_voxel_offset_interpolates_and_mask():
    rng = np.random.default_rng(3)
    nx = 8
    aff = _symmetric_affine(nx, offset=1.0)  # mirror of i is 7 - i - 1 = 6 - i (integer)
    t_sig = rng.normal(size=T)
    # signal proportional to x-index-dependent weight: mirrored partners perfectly correlated
    data = np.broadcast_to(t_sig, (nx, 3, 3, T)) * (1 + np.arange(nx))[:, None, None, None]
    data = data + 1e-3 * rng.normal(size=data.shape)
    mask = np.ones((nx, 3, 3), bool)
    mask[1, 0, 0] = False  # the mirror of (5, 0, 0)
    z = vmhc_volume(data, aff, mask)
    assert z[7].max() == 0  # mirror (-1) off the grid
    assert z[5, 0, 0] == 0 and z[1, 0, 0] == 0
    assert np.tanh(z[0]).min() > 0.99
    aff_half = _symmetric_affine(nx, offset=0.5)  # fractional mirror -> linear interpolation
    mirrored, _ = mirror_x(np.arange(nx, dtype=float), aff_half)
    # x = 2 i - 6.5: the mirror of index i is 6.5 - i, half way between two voxels
    assert np.allclose(mirrored[:7], 6.5 - np.arange(7))
    assert mirrored[7] == 0  # 6.5 - 7 < 0 is off the grid
    # interpolated partners of a separable signal f(t) g(x) stay perfectly correlated
    z_half = vmhc_volume(data, aff_half)
    assert z_half[7].max() == 0 and np.tanh(z_half[:7]).min() > 0.99


def test_volume_rejects_non_symmetric_grid():
    rot = np.array([[0.0, 2, 0, 0], [2, 0, 0, 0], [0, 0, 2, 0], [0, 0, 0, 1]])
    with pytest.raises(InputError, match="symmetric"):
        vmhc_volume(np.random.default_rng(4).normal(size=(4, 4, 4, 10)), rot)
