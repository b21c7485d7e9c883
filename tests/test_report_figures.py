"""Unit tests of the subject-page picture helpers (generated volumes, known geometry)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from isyb_dask.report import subject_figures as sf


def test_tile_places_rotated_slices_side_by_side():
    vol = np.zeros((4, 3, 5), dtype=np.float32)
    for k in range(5):
        vol[:, :, k] = k + 1
    vol[0, 2, 1] = 99  # left-most x, anterior-most y of slice 1
    t = sf.tile(vol, [1, 3], cols=2)
    assert t.shape == (3, 8)  # rot90: rows = y (3), columns = x (4)
    assert t[0, 0] == 99  # anterior up, left on the left
    assert set(np.unique(t[:, 4:])) == {4.0}


def test_slice_indices_stay_inside_the_mask():
    mask = np.zeros((10, 10, 40), bool)
    mask[..., 10:30] = True
    ks = sf.slice_indices(mask, 4)
    assert len(ks) == 4 and all(10 <= k <= 29 for k in ks) and ks == sorted(ks)


def test_resample_to_identity_and_shift():
    rng = np.random.default_rng(0)
    data = rng.random((8, 9, 10)).astype(np.float32)
    img = nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0]))
    np.testing.assert_allclose(sf.resample_to(img, img, order=1), data, atol=1e-6)
    shift = np.eye(4)
    shift[0, 3] = 2.0  # one voxel along x in world mm
    moved = sf.resample_to(img, img, shift, order=0, slices=[3, 5])
    np.testing.assert_allclose(moved[:-1, :, 0], data[1:, :, 3])
    np.testing.assert_allclose(moved[:-1, :, 1], data[1:, :, 5])


def test_carpet_and_mosaics_write_pngs(tmp_path):
    rng = np.random.default_rng(1)
    bold = rng.normal(100, 5, (6, 6, 4, 30)).astype(np.float32)
    mask = np.ones((6, 6, 4), bool)
    conf = pd.DataFrame({"framewise_displacement": np.r_[np.nan, rng.uniform(0, 0.1, 29)],
                         "std_dvars": np.r_[np.nan, rng.uniform(0.9, 1.1, 29)]})
    conf.loc[10, "framewise_displacement"] = 0.9
    out = sf.carpet_plot(bold, mask, conf, tmp_path / "carpet.png", fd_threshold=0.5)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = nib.Nifti1Image(rng.random((12, 12, 10)).astype(np.float32), np.eye(4))
    p = sf.maps_mosaic([("FA", img, "1"), ("MD", img, "mm2/s")], tmp_path / "maps.png")
    q = sf.contour_mosaic(img, {"brain": np.asarray(img.dataobj) > 0.3}, tmp_path / "seg.png")
    r = sf.edge_check(img, img, tmp_path / "edges.png")
    for f in (p, q, r):
        assert f.stat().st_size > 1000


@pytest.mark.parametrize("shape", [(5, 5, 5, 3)])
def test_load_ras_takes_the_first_volume(tmp_path, shape):
    data = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    path = tmp_path / "x.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([-1.0, 1.0, 1.0, 1.0])), path)  # LAS
    img = sf.load_ras(path)
    assert img.shape == shape[:3]
    np.testing.assert_array_equal(np.asarray(img.dataobj), data[::-1, :, :, 0])
