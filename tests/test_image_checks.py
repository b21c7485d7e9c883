"""Input validation of :func:`isyb_dask.io.nifti.load_image`: each fault is named.

Complex and RGB data, invalid voxel sizes (raw pixdim, which nibabel silently fixes),
missing or disagreeing qform/sform, Inf/NaN voxels (few: repaired and recorded; many:
refused with the fraction), 4-D single-volume images accepted as 3-D.
"""

from __future__ import annotations

import json

import nibabel as nb
import numpy as np
import pytest

from isyb_dask.errors import InputError
from isyb_dask.io.derivatives import write_sidecar
from isyb_dask.io.image_checks import REPAIR_MAX_FRACTION, display_name, recorded_repair
from isyb_dask.io.nifti import check_head_in_view, file_sha256, load_image


def _data(shape=(12, 12, 12)) -> np.ndarray:
    return np.random.default_rng(0).normal(100, 10, shape).astype(np.float32)


def _save(path, data, affine=None, qform=None, sform="same", zooms=None):
    """Write an image; ``zooms`` and a missing sform are patched into the header bytes
    afterwards (nibabel would otherwise rewrite them from the affine)."""
    import gzip

    affine = np.diag([2.0, 2.0, 2.0, 1.0]) if affine is None else affine
    img = nb.Nifti1Image(data, affine)
    img.header.set_sform(affine if sform == "same" else sform, code=0 if sform is None else 1)
    if qform is not None:
        img.header.set_qform(qform, code=1)
    nb.save(img, str(path))
    raw = bytearray(gzip.decompress(path.read_bytes()))
    if zooms is not None:
        raw[80:92] = np.asarray(zooms, dtype="<f4").tobytes()  # pixdim[1:4]
    if sform is None:
        raw[254:256] = np.int16(0).astype("<i2").tobytes()  # sform_code
    path.write_bytes(gzip.compress(bytes(raw)))
    return path


@pytest.fixture
def bids(tmp_path):
    anat = tmp_path / "bids" / "sub-01" / "anat"
    anat.mkdir(parents=True)
    return anat


def test_display_name_is_relative_to_the_bids_root(tmp_path):
    p = tmp_path / "bids" / "sub-01" / "ses-a" / "anat" / "sub-01_ses-a_T1w.nii.gz"
    assert display_name(p) == "sub-01/ses-a/anat/sub-01_ses-a_T1w.nii.gz"
    assert display_name(tmp_path / "x" / "y.nii") == "x/y.nii"


def test_complex_and_rgb_are_refused(bids):
    p = bids / "sub-01_T1w.nii.gz"
    nb.save(nb.Nifti1Image(_data().astype(np.complex64), np.eye(4)), str(p))
    with pytest.raises(InputError, match=r"^sub-01/anat/sub-01_T1w.nii.gz: complex-valued"):
        load_image(p, ndim=3)
    rgb = np.zeros((8, 8, 8), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgb["G"] = 7
    nb.save(nb.Nifti1Image(rgb, np.eye(4)), str(p))
    with pytest.raises(InputError, match=r"^sub-01/anat/sub-01_T1w.nii.gz: RGB colour data"):
        load_image(p, ndim=3)


def test_zero_voxel_sizes_without_qform_or_sform(bids):
    p = _save(bids / "sub-01_T1w.nii.gz", _data(), sform=None, zooms=(0, 0, 0))
    assert nb.load(str(p)).header.get_zooms()[:3] == (1.0, 1.0, 1.0)  # nibabel hides it
    with pytest.raises(InputError, match=r"invalid voxel size pixdim = \(0.0, 0.0, 0.0\)"):
        load_image(p, ndim=3)


@pytest.mark.parametrize("zooms, word", [((np.nan, 2, 2), "NaN"), ((2, -1, 2), "negative")])
def test_nan_and_negative_voxel_sizes(bids, zooms, word):
    p = _save(bids / "sub-01_T1w.nii.gz", _data(), zooms=zooms)
    with pytest.raises(InputError, match=f"invalid voxel size.*{word}"):
        load_image(p, ndim=3)


def test_missing_qform_and_sform(bids):
    p = _save(bids / "sub-01_T1w.nii.gz", _data(), sform=None)
    with pytest.raises(InputError, match="missing qform and sform"):
        load_image(p, ndim=3)


def test_sform_qform_mismatch_larger_than_a_voxel_fails(bids):
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    shifted = aff.copy()
    shifted[0, 3] = 2.5  # 2.5 mm > one 2 mm voxel
    p = _save(bids / "sub-01_T1w.nii.gz", _data(), affine=aff, qform=shifted)
    with pytest.raises(InputError, match=r"sform and qform disagree by 2.5 mm"):
        load_image(p, ndim=3)
    small = aff.copy()
    small[0, 3] = 0.5  # within a voxel: accepted (the sform is used)
    p = _save(bids / "sub-01_T1w.nii.gz", _data(), affine=aff, qform=small)
    np.testing.assert_allclose(load_image(p, ndim=3).affine, aff)


def test_many_inf_voxels_fail_with_the_fraction(bids):
    data = _data()
    data[data > np.percentile(data, 99)] = np.inf  # the brightest 1 %
    p = _save(bids / "sub-01_T1w.nii.gz", data)
    with pytest.raises(InputError, match=r"18 non-finite voxels \(1.042%: 0 NaN, 18 ±Inf\)"):
        load_image(p, ndim=3)


def test_thirty_percent_nan_names_the_nan_not_the_head(bids):
    data = _data((40, 40, 40))
    data[:12] = np.nan
    p = _save(bids / "sub-01_T1w.nii.gz", data)
    with pytest.raises(InputError, match=r"non-finite voxels \(30.000%: 19200 NaN"):
        check_head_in_view(load_image(p, ndim=3))


def test_few_nonfinite_voxels_are_repaired_and_recorded(bids, tmp_path):
    data = _data((20, 20, 20))
    data[5, 5, 5] = np.nan
    data[6, 6, 6] = -np.inf
    assert 2 / data.size <= REPAIR_MAX_FRACTION
    p = _save(bids / "sub-01_T1w.nii.gz", data)
    before = file_sha256(p)
    img = load_image(p, ndim=3)
    out = np.asarray(img.dataobj)
    assert np.isfinite(out).all()
    for idx in ((5, 5, 5), (6, 6, 6)):
        nb_ = data[idx[0] - 1:idx[0] + 2, idx[1] - 1:idx[1] + 2, idx[2] - 1:idx[2] + 2]
        assert out[idx] == pytest.approx(float(np.mean(nb_[np.isfinite(nb_)])), rel=1e-5)
    rec = img.extra["isyb_repair"]
    assert rec["voxels"] == 2 and rec["nan"] == 1 and rec["inf"] == 1
    assert recorded_repair(p) == rec
    side = write_sidecar(tmp_path / "d" / "x.nii.gz", {"a": 1}, sources=[p])
    meta = json.loads(side.read_text())
    assert meta["provenance"]["sources"][0]["repair"]["voxels"] == 2
    assert file_sha256(p) == before  # the input is never modified


def test_single_volume_4d_t1w_is_accepted(bids):
    p = _save(bids / "sub-01_T1w.nii.gz", _data()[..., None])
    img = load_image(p, ndim=3)
    assert img.shape == (12, 12, 12)
    p2 = _save(bids / "sub-01_bold.nii.gz", np.stack([_data()] * 2, axis=-1))
    with pytest.raises(InputError, match="wrong dimensionality"):
        load_image(p2, ndim=3)
