"""warp_atlas resamples only the subject voxels the atlas maps reach, with the whole-grid values."""

from __future__ import annotations

import nibabel as nb
import numpy as np
import SimpleITK as sitk

from isyb_dask.anat.segmentation import warp_atlas
from isyb_dask.registration import AffineRegistration, resample_to, sitk_to_array, to_sitk


def test_support_box_gives_the_whole_grid_values():
    rng = np.random.default_rng(4)
    atlas_aff = np.diag([2.0, 2.0, 2.0, 1.0])
    atlas_aff[:3, 3] = [-40.0, -50.0, -30.0]
    maps = []
    for k in range(4):  # brain mask + CSF/GM/WM priors, non-zero in a block off-centre
        d = np.zeros((40, 50, 30), np.float32)
        d[8 + k:30, 12:40 - k, 5:24] = rng.uniform(0.0, 0.6, (22 - k, 28 - k, 19))
        maps.append(nb.Nifti1Image(d, atlas_aff))
    subject = nb.Nifti1Image(np.zeros((90, 110, 80), np.float32), np.diag([1.0, 1.0, 1.0, 1.0]))
    subject.affine[:3, 3] = [-45.0, -55.0, -40.0]
    tx = sitk.AffineTransform(3)  # rotation, shear and shift (LPS, subject -> atlas)
    tx.SetMatrix((0.97, 0.12, -0.05, -0.1, 1.05, 0.08, 0.04, -0.06, 0.93))
    tx.SetTranslation((3.2, -4.1, 2.7))
    reg = AffineRegistration(tx, -1.0, True, {})
    got = warp_atlas(subject, reg, maps[0], tuple(maps[1:]))
    ref = to_sitk(subject)
    whole = [sitk_to_array(resample_to(to_sitk(m), ref, tx, "linear")) for m in maps]
    assert np.array_equal(got.brain, whole[0] >= 0.5)
    stack = np.clip(np.stack(whole[1:]), 0.0, 1.0).astype(np.float32)
    total = stack.sum(axis=0)
    stack[:, total > 1] /= total[total > 1]
    # the cropped grid's voxel centres are computed from a shifted origin: equal up to a
    # few float32 rounding steps (a weight of 1e-15 on a neighbour may become 0)
    assert np.abs(got.priors - stack).max() <= 1e-6
    assert got.brain.any() and (got.priors > 0).mean() < 0.5  # the support really is a part
