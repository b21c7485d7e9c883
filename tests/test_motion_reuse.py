"""BOLD preprocessing reuses the QC stage's motion parameters instead of estimating again."""

from __future__ import annotations

import numpy as np
import pytest

from isyb_dask.bold.hmc import apply_parameters, realign_series


def _phantom(shape=(24, 26, 20)):
    g = np.indices(shape, dtype=np.float64)
    c = (np.array(shape) - 1)[:, None, None, None] / 2
    r2 = (((g - c) / (np.array(shape)[:, None, None, None] / 3)) ** 2).sum(0)
    return (1000 * np.exp(-r2) + 200 * np.sin(g[0] / 3) * np.exp(-r2 / 2)).astype(np.float32)


def test_apply_parameters_equals_realign_output():
    affine = np.diag([3.0, 3.0, 3.5, 1.0])
    vol = _phantom()
    rng = np.random.default_rng(3)
    true = np.zeros((6, 6))
    true[1:, :3] = rng.normal(0, 0.6, (5, 3))
    true[1:, 3:] = rng.normal(0, 0.01, (5, 3))
    from isyb_dask.bold.hmc import rigid_matrix, rotation_center, volume_to_sitk

    import SimpleITK as sitk

    series = np.empty(vol.shape + (6,), np.float32)
    centre = rotation_center(vol.shape, affine)
    ref = volume_to_sitk(vol, affine)
    for t in range(6):
        # volume t is the reference seen through the inverse motion
        inv = np.linalg.inv(rigid_matrix(true[t], centre))
        tx = sitk.AffineTransform(3)
        tx.SetMatrix(inv[:3, :3].ravel().tolist())
        tx.SetTranslation(inv[:3, 3].tolist())
        series[..., t] = sitk.GetArrayFromImage(sitk.Resample(ref, ref, tx, sitk.sitkLinear, 0.0)).T
    realigned, params = realign_series(series, affine)
    again = apply_parameters(series, affine, params)
    # Away from the field-of-view border (where a sample point exactly on the edge may fall
    # on either side after the parameter round trip) the two resamplings are identical.
    inner = (slice(2, -2),) * 3
    np.testing.assert_allclose(again[inner], realigned[inner], atol=1e-3 * vol.max())
    np.testing.assert_array_equal(again[..., 0], series[..., 0])
    with pytest.raises(ValueError, match="params"):
        apply_parameters(series, affine, params[:3])
