"""Block reduction (isyb_dask/blocks.py): values, edge policies, affine, upsampling."""

from __future__ import annotations

import numpy as np

from isyb_dask.blocks import block_affine, block_factor, block_reduce, block_upsample


def test_block_mean_crop_and_pad_against_loops():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(7, 6, 5)).astype(np.float32)
    crop = block_reduce(a, 2)
    assert crop.shape == (3, 3, 2)
    assert np.isclose(crop[1, 2, 1], a[2:4, 4:6, 2:4].mean())
    pad = block_reduce(a, 2, edge="pad")
    assert pad.shape == (4, 3, 3)
    # the last block of axis 0 holds voxel 6 twice (edge repeat)
    assert np.isclose(pad[3, 0, 2], a[6, 0:2, 4].mean())
    mask = np.zeros((4, 4, 4), bool)
    mask[3, 0, 0] = True
    assert block_reduce(mask, 2, how="max", edge="pad")[1, 0, 0]
    assert block_reduce(a, 1) is a
    assert block_reduce(a, (1, 2, 1)).shape == (7, 3, 5)


def test_block_affine_puts_coarse_voxels_at_block_centres():
    aff = np.array([[-2.0, 0, 0, 90], [0, 2, 0, -126], [0, 0, 2, -72], [0, 0, 0, 1]])
    coarse = block_affine(aff, 3)
    fine_centre = aff @ np.array([1.0, 1.0, 1.0, 1.0])  # centre of block 0 = fine voxel 1
    np.testing.assert_allclose(coarse @ np.array([0, 0, 0, 1.0]), fine_centre)
    np.testing.assert_allclose(np.abs(np.diag(coarse)[:3]), 6.0)
    assert block_factor((1.0, 1.0, 1.2), 2.0) == 2 and block_factor((3.0, 3.0, 3.0), 2.0) == 1


def test_upsample_inverts_padded_reduction_shape():
    m = np.zeros((5, 5, 5), bool)
    m[4, 4, 4] = True
    coarse = block_reduce(m, 2, how="max", edge="pad")
    back = block_upsample(coarse, 2, m.shape)
    assert back.shape == m.shape and back[4, 4, 4]
    assert back.sum() == 1  # the block of (4, 4, 4) is the single corner voxel once cropped


def test_padded_box_grows_and_clips():
    from isyb_dask.blocks import padded_box

    m = np.zeros((10, 12, 8), bool)
    m[2, 5:7, 6] = True
    assert padded_box(m, 1) == (slice(1, 4), slice(4, 8), slice(5, 8))  # clipped at 8
    assert padded_box(m, [3, 0, 0]) == (slice(0, 6), slice(5, 7), slice(6, 7))
