"""Dense fields, the ANTs/ITK conventions and the written ITK HDF5 transforms."""

from __future__ import annotations

import numpy as np
import pytest

from isyb_dask.anat.warpfield import DenseField, field_from_ants, grid_points


def _grid(shape=(30, 34, 28), step=4.0, origin=(-60.0, -70.0, -50.0)):
    aff = np.diag([step, step, step, 1.0])
    aff[:3, 3] = origin
    return shape, aff


def _known_field(shape, aff):
    """A smooth warp: 1.02 scaling about the origin plus a sine displacement (RAS mm)."""
    pts = grid_points(shape, aff)
    disp = 0.02 * pts
    disp[..., 0] += 3.0 * np.sin(pts[..., 1] / 25.0)
    disp[..., 2] += 2.0 * np.cos(pts[..., 0] / 30.0)
    return DenseField(disp.astype(np.float32), aff)


def _expected(x):
    out = 1.02 * x
    out[:, 0] += 3.0 * np.sin(x[:, 1] / 25.0)
    out[:, 2] += 2.0 * np.cos(x[:, 0] / 30.0)
    return out


def test_dense_field_maps_points_and_composes():
    shape, aff = _grid()
    fld = _known_field(shape, aff)
    rng = np.random.default_rng(0)
    x = rng.uniform(-40, 40, size=(500, 3))
    # trilinear interpolation of a smooth field on a 4 mm grid: well under 0.1 mm
    assert np.abs(fld(x) - _expected(x)).max() < 0.1
    shift = DenseField(np.broadcast_to(np.array([1.0, -2.0, 0.5], np.float32),
                                       shape + (3,)).copy(), aff)
    comp = fld.then(shift)
    assert np.abs(comp(x) - (_expected(x) + [1.0, -2.0, 0.5])).max() < 0.1


def test_log_jacobian_of_a_scaling():
    shape, aff = _grid()
    pts = grid_points(shape, aff)
    fld = DenseField((0.1 * pts).astype(np.float32), aff)
    lj = fld.log_jacobian()
    assert np.allclose(lj, 3 * np.log(1.1), atol=1e-4)


def test_field_from_ants_follows_the_image_convention(tmp_path):
    """An ANTs translation of +3 mm in LPS x maps reference points 3 mm to the RAS left."""
    ants = pytest.importorskip("ants")
    shape, aff = _grid()
    tx = ants.create_ants_transform(transform_type="AffineTransform", dimension=3,
                                    translation=[3.0, 0.0, 0.0])
    path = tmp_path / "t.mat"
    ants.write_transform(tx, str(path))
    fld = field_from_ants(np.zeros(shape, np.float32), aff, [str(path)])
    assert np.allclose(fld.data, [-3.0, 0.0, 0.0], atol=1e-4)
    # and ANTs resampling with the same list moves a blob accordingly
    from isyb_dask.anat.warpfield import ants_from_array

    img = np.zeros(shape, np.float32)
    img[15, 17, 14] = 1.0  # RAS x = 0
    out = ants.apply_transforms(ants_from_array(img, aff), ants_from_array(img, aff),
                                [str(path)]).numpy()
    i = np.unravel_index(np.argmax(out), shape)[0]
    assert i in (15, 16)  # output x = input x + 3 mm -> 0.75 voxel to the right


def test_write_transforms_round_trip_with_simpleitk(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    from isyb_dask.anat.normalize import StandardNormalization, write_transforms

    shape, aff = _grid()
    fwd = _known_field(shape, aff)
    inv = DenseField(-fwd.data, aff)  # not an exact inverse; only the file round trip matters
    norm = StandardNormalization("MNI152NLin6Asym", fwd, inv, (shape, aff), {"seed": 1})
    paths = write_transforms(norm, tmp_path, "01")
    names = sorted(p.name for p in paths)
    assert "sub-01_from-T1w_to-MNI152NLin6Asym_mode-image_xfm.h5" in names
    assert "sub-01_from-MNI152NLin6Asym_to-T1w_mode-image_xfm.h5" in names
    assert "sub-01_from-T1w_to-MNI152NLin6Asym_mode-image_xfm.json" in names
    rng = np.random.default_rng(1)
    x = rng.uniform(-40, 40, size=(200, 3))
    lps = np.diag([-1.0, -1.0, 1.0])
    for path, fld in ((paths[0], fwd), (paths[2], inv)):
        tx = sitk.ReadTransform(str(path))
        got = np.array([tx.TransformPoint(tuple(p)) for p in (x @ lps)]) @ lps
        assert np.abs(got - fld(x)).max() < 0.5
        assert np.abs(got - fld(x)).max() < 1e-3  # same field, same interpolation


def test_image_to_standard_known_shift():
    from isyb_dask.anat.normalize import StandardNormalization

    shape, aff = _grid()
    d = np.broadcast_to(np.array([8.0, 0, 0], np.float32), shape + (3,)).copy()
    shift = DenseField(d, aff)
    norm = StandardNormalization("MNI152NLin6Asym", shift, DenseField(-shift.data, aff),
                                 (shape, aff), {})
    data = np.zeros(shape, np.float32)
    data[20, 10, 10] = 1.0  # at x = +20 in the T1w
    out = norm.image_to_standard(data, aff)
    assert np.unravel_index(np.argmax(out), shape) == (18, 10, 10)  # standard x = +12
    assert np.allclose(norm.points_to_standard(norm.points_to_t1w(np.zeros((1, 3)))), 0.0)
    with pytest.raises(ValueError):
        norm.image_to_standard(data, aff, interpolation="cubic")


@pytest.mark.slow
def test_normalize_from_an_initial_affine_runs_the_deformable_stage_only():
    """With a start (the atlas registration's T1w -> 2009aSym affine), ANTs runs SyNOnly from
    it: a subject moved by 12 mm and a start that knows the move must map back to within the
    accuracy of the unseeded route; a start in the wrong direction (the convention swapped)
    would leave a 24 mm error that the deformable stage cannot remove."""
    import nibabel as nb

    from isyb_dask.anat.bridge import get_bridge, template_maps
    from isyb_dask.anat.normalize import normalize_to_standard

    t1, aff = template_maps(1.0)["t1"]
    shift = np.array([12.0, -8.0, 5.0])
    moved = aff.copy()
    moved[:3, 3] += shift
    img = nb.Nifti1Image((t1 * 1000).astype(np.float32), moved)
    t1w_to_mni = np.eye(4)
    t1w_to_mni[:3, 3] = -shift
    norm = normalize_to_standard(img, t1 > 0.05, None, seed=1, threads=1, initial=t1w_to_mni)
    assert norm.info["start"].startswith("the atlas registration")
    rng = np.random.default_rng(4)
    x = rng.uniform([-55, -80, -30], [55, 50, 60], size=(300, 3))
    err = np.linalg.norm(norm.points_to_t1w(x) - (get_bridge().to_2009a(x) + shift), axis=1)
    assert np.median(err) < 1.0 and np.percentile(err, 95) < 2.0
    with pytest.raises(ValueError, match="invertible"):
        normalize_to_standard(img, t1 > 0.05, None, seed=1, threads=1, initial=np.zeros((4, 4)))


@pytest.mark.slow
def test_normalize_recovers_a_known_shift_of_the_template():
    """Subject = the 2009aSym brain moved by a known translation: standard -> T1w must be
    the bridge followed by that translation (checks the LPS and point/image conventions)."""
    import nibabel as nb

    from isyb_dask.anat.bridge import get_bridge, template_maps
    from isyb_dask.anat.normalize import normalize_to_standard

    t1, aff = template_maps(1.0)["t1"]
    shift = np.array([6.0, -4.0, 3.0])
    moved = aff.copy()
    moved[:3, 3] += shift
    img = nb.Nifti1Image((t1 * 1000).astype(np.float32), moved)
    norm = normalize_to_standard(img, t1 > 0.05, None, seed=1, threads=1)
    rng = np.random.default_rng(3)
    x = rng.uniform([-55, -80, -30], [55, 50, 60], size=(300, 3))  # inside the brain box
    expected = get_bridge().to_2009a(x) + shift
    err = np.linalg.norm(norm.points_to_t1w(x) - expected, axis=1)
    assert np.median(err) < 1.0 and np.percentile(err, 95) < 2.0
    back = np.linalg.norm(norm.points_to_standard(norm.points_to_t1w(x)) - x, axis=1)
    assert np.median(back) < 0.5
    lj, _ = norm.log_jacobian_standard()
    assert lj.shape == norm.grid[0] and np.isfinite(lj).all()


def test_written_h5_resamples_like_image_to_standard_in_ants(tmp_path):
    """antsApplyTransforms (through antspyx) opens the h5 and resamples as the object does."""
    ants = pytest.importorskip("ants")
    from scipy import ndimage as ndi

    from isyb_dask.anat.normalize import StandardNormalization, write_transforms
    from isyb_dask.anat.warpfield import ants_from_array

    shape, aff = _grid()
    fwd = _known_field(shape, aff)
    norm = StandardNormalization("MNI152NLin6Asym", fwd, DenseField(-fwd.data, aff),
                                 (shape, aff), {})
    path = write_transforms(norm, tmp_path, "01")[0]
    data = ndi.gaussian_filter(np.random.default_rng(0).normal(size=shape), 2).astype(np.float32)
    ours = norm.image_to_standard(data, aff)
    img = ants_from_array(data, aff)
    theirs = ants.apply_transforms(img, img, [str(path)]).numpy()
    inner = (slice(3, -3),) * 3
    assert np.abs(ours - data)[inner].max() > 0.02  # the warp does something
    assert np.abs(ours - theirs)[inner].max() < 1e-4


def test_syn_fields_equal_the_ants_composition(tmp_path):
    """syn_fields (NumPy) == antsApplyTransforms --compose on a warp + affine pair."""
    ants = pytest.importorskip("ants")
    from isyb_dask.anat.warpfield import ants_from_array, syn_fields

    shape, aff = _grid()
    pts = grid_points(shape, aff)
    # an LPS displacement field on the fixed grid, written as ANTs writes its warps
    u = np.stack([2.0 * np.sin(pts[..., 1] / 20.0), 1.5 * np.cos(pts[..., 2] / 15.0),
                  np.sin(pts[..., 0] / 30.0)], axis=-1).astype(np.float32)
    ref = ants_from_array(np.zeros(shape, np.float32), aff)
    warp = ants.from_numpy(u, origin=ref.origin, spacing=ref.spacing, direction=ref.direction,
                           has_components=True)
    ants.image_write(warp, str(tmp_path / "w.nii.gz"))
    inv = ants.from_numpy(-u, origin=ref.origin, spacing=ref.spacing, direction=ref.direction,
                          has_components=True)
    ants.image_write(inv, str(tmp_path / "iw.nii.gz"))
    tx = ants.create_ants_transform(transform_type="AffineTransform", dimension=3,
                                    matrix=np.array([[1.05, 0.02, 0], [0, 0.97, 0.03],
                                                     [0.01, 0, 1.02]]),
                                    translation=[3.0, -2.0, 1.0], center=[5.0, -4.0, 2.0])
    ants.write_transform(tx, str(tmp_path / "a.mat"))
    fwd_list = [str(tmp_path / "w.nii.gz"), str(tmp_path / "a.mat")]
    inv_list = [str(tmp_path / "a.mat"), str(tmp_path / "iw.nii.gz")]
    mshape, maff = (26, 30, 24), aff.copy()
    maff[:3, 3] += [2.0, -3.0, 1.0]
    fwd, back = syn_fields(fwd_list, inv_list, mshape, maff)
    ref_fwd = field_from_ants(np.zeros(shape, np.float32), aff, fwd_list)
    ref_back = field_from_ants(np.zeros(mshape, np.float32), maff, inv_list,
                               whichtoinvert=[True, False])
    assert np.abs(fwd.data - ref_fwd.data).max() < 1e-3
    assert np.abs(back.data - ref_back.data).max() < 1e-3


def test_cropped_template_keeps_the_brain_and_its_world_coordinates():
    """The SyN's fixed image: the 4 mm 2009aSym brain cut to its box + 8 mm, same world grid."""
    from isyb_dask.anat.bridge import template_maps
    from isyb_dask.anat.normalize import _cropped_template

    full, full_aff = template_maps(4.0)["t1"]
    crop, crop_aff = _cropped_template(4.0, 8.0)
    assert crop.size < 0.75 * full.size  # the crop is what saves the time
    # every brain voxel is kept, with 2 voxels (8 mm) of margin where the box allows
    brain = np.argwhere(full > 0.05)
    offset = np.rint(np.linalg.solve(crop_aff, full_aff @ [0, 0, 0, 1])[:3]).astype(int)  # crop index of full (0,0,0)
    assert np.all(brain.min(0) + offset >= np.minimum(2, brain.min(0)))
    assert np.all(brain.max(0) + offset <= np.asarray(crop.shape) - 1 - np.minimum(
        2, np.asarray(full.shape) - 1 - brain.max(0)))
    # the same voxel values at the same world points
    ijk = brain[:: 97]
    world = ijk @ full_aff[:3, :3].T + full_aff[:3, 3]
    c = np.rint(world @ np.linalg.inv(crop_aff)[:3, :3].T + np.linalg.inv(crop_aff)[:3, 3])
    assert np.array_equal(crop[tuple(c.astype(int).T)], full[tuple(ijk.T)])
    assert int((crop > 0.05).sum()) == int((full > 0.05).sum())  # no brain voxel cut off


def test_template_maps_are_read_once_and_read_only():
    from isyb_dask.anat.bridge import template_maps

    a, b = template_maps(4.0), template_maps(4.0)
    assert a["t1"][0] is b["t1"][0]
    with pytest.raises(ValueError):
        a["t1"][0][0, 0, 0] = 1.0
