"""Safe NIfTI loading: each kind of broken file gives an InputError naming the problem."""

from __future__ import annotations

import gzip

import nibabel as nb
import numpy as np
import pytest

from isyb_dask.errors import InputError
from isyb_dask.io.nifti import load_image, save_like


def _img(tmp_path, data, name="img.nii.gz", affine=None):
    path = tmp_path / name
    nb.save(nb.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return path


def test_good_image_round_trip(tmp_path):
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    img = load_image(_img(tmp_path, data), ndim=3)
    out = save_like(np.asarray(img.dataobj) + 0.4, img, tmp_path / "o" / "x.nii.gz")
    back = nb.load(str(out))
    assert back.get_data_dtype() == np.int16
    np.testing.assert_array_equal(np.asarray(back.dataobj), data)
    np.testing.assert_allclose(back.affine, img.affine)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_bytes(b"this is not an image at all" * 20), "not a readable NIfTI"),
        (lambda p: p.write_bytes(gzip.compress(b"\x00" * 100)), "not a readable NIfTI"),
    ],
)
def test_garbage_files(tmp_path, make, message):
    path = tmp_path / "bad.nii.gz"
    make(path)
    with pytest.raises(InputError, match=message):
        load_image(path)


def test_truncated(tmp_path):
    path = _img(tmp_path, np.random.default_rng(0).normal(size=(20, 20, 20)).astype(np.float32))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match="truncated or corrupt"):
        load_image(path)


def test_wrong_dims_nonfinite_constant_geometry(tmp_path):
    with pytest.raises(InputError, match="wrong dimensionality"):
        load_image(_img(tmp_path, np.ones((4, 4, 4, 3), np.float32) * np.arange(3)), ndim=3)
    with pytest.raises(InputError, match="no finite values"):
        load_image(_img(tmp_path, np.full((4, 4, 4), np.nan, np.float32), "n.nii.gz"))
    with pytest.raises(InputError, match="constant image"):
        load_image(_img(tmp_path, np.zeros((4, 4, 4), np.float32), "z.nii.gz"))
    # A singular sform (srow_z zeroed in the header bytes, as a broken converter might write).
    path = _img(tmp_path, np.arange(64, dtype=np.float32).reshape(4, 4, 4), "g.nii")
    raw = bytearray(path.read_bytes())
    raw[312:328] = bytes(16)
    path.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="implausible geometry"):
        load_image(path)
    with pytest.raises(InputError, match="does not exist"):
        load_image(tmp_path / "missing.nii.gz")


def test_no_head_in_field_of_view():
    from isyb_dask.io.nifti import check_head_in_view

    rng = np.random.default_rng(0)
    noise = np.abs(rng.normal(0, 1, (60, 70, 60))).astype(np.float32)
    speck = noise.copy()
    speck[10:12, 10:12, 10:12] = 50
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    with pytest.raises(InputError, match="no head in the field of view"):
        check_head_in_view(nb.Nifti1Image(speck, affine))
    # an ellipsoid the size of a head (semi-axes 75/90/85 mm: ~2.4 l) passes
    g = np.indices(noise.shape) * 3.0 - np.array([90, 105, 90])[:, None, None, None]
    head = noise + 100 * (((g[0] / 75) ** 2 + (g[1] / 90) ** 2 + (g[2] / 85) ** 2) < 1)
    check_head_in_view(nb.Nifti1Image(head.astype(np.float32), affine))


def test_noisy_head_passes_the_head_check():
    """A head-sized ellipsoid (100) in Rician noise of sigma 25, 2 mm voxels: on a decimated
    copy the noise split it (largest object 0 ml, refused); block-averaged it is one head."""
    from isyb_dask.io.nifti import check_head_in_view

    rng = np.random.default_rng(0)
    shape = (96, 112, 96)
    g = np.indices(shape) * 2.0 - np.array([96, 112, 96])[:, None, None, None]
    inside = ((g[0] / 75) ** 2 + (g[1] / 90) ** 2 + (g[2] / 85) ** 2) < 1
    re = 100.0 * inside + rng.normal(0, 25.0, shape)
    noisy = np.sqrt(re**2 + rng.normal(0, 25.0, shape) ** 2).astype(np.float32)
    check_head_in_view(nb.Nifti1Image(noisy, np.diag([2.0, 2.0, 2.0, 1.0])))


def test_real_heads_and_templates_pass_the_head_check(shared_data):
    from isyb_dask.io.nifti import check_head_in_view

    for rel in ("heads/xa30_sub1_T1w_tfl_2mm.nii.gz", "templates/mni152_fsl_T1_2mm_head.nii.gz",
                "templates/nilearn_icbm152_2009a_sym_T1_brain_1mm.nii.gz"):
        check_head_in_view(load_image(shared_data / rel))


@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.uint8])
def test_write_nifti_gives_nibabels_bytes(tmp_path, dtype):
    # the ISA-L stream decompresses to exactly the file nibabel writes (4-D, a flipped
    # non-contiguous view, an extension), and the mode is applied
    import gzip

    from isyb_dask.io.nifti import write_nifti

    rng = np.random.default_rng(0)
    data = (rng.normal(size=(9, 7, 5, 3)) * 100).astype(dtype)[::-1, :, ::2]
    aff = np.diag([2.0, 2.0, 3.0, 1.0])
    img = nb.Nifti1Image(data, aff)
    img.header.extensions.append(nb.nifti1.Nifti1Extension("comment", b"isyb"))
    ours = write_nifti(img, tmp_path / "a" / "ours.nii.gz", mode=0o600)
    nb.save(img, str(tmp_path / "nibabel.nii.gz"))
    assert gzip.decompress(ours.read_bytes()) == gzip.decompress(
        (tmp_path / "nibabel.nii.gz").read_bytes())
    assert (ours.stat().st_mode & 0o777) == 0o600
    back = nb.load(ours)
    assert np.array_equal(np.asarray(back.dataobj), data)
    assert not list((tmp_path / "a").glob(".tmp-*"))  # written atomically
