"""Ground-truth defacing scores on a generated head (true face region known)."""

from __future__ import annotations

import nibabel as nb
import numpy as np
import pytest
from scipy import ndimage as ndi

from isyb_dask.deface.truth import face_truth_metrics, truth_face_mask_path
from isyb_dask.synth.cohort import generate_study


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    root = tmp_path_factory.mktemp("truth")
    generate_study(root, 1, "chinese", seed=4, voxel_size=3.0, modalities=("anat",),
                   orientation="LAS")
    img = nb.load(str(root / "sub-0001" / "anat" / "sub-0001_T1w.nii.gz"))
    mask_path = truth_face_mask_path(root, "sub-0001")
    assert mask_path is not None
    lm = root / "derivatives" / "synth-truth" / "sub-0001" / "anat" / "sub-0001_desc-landmarks.tsv"
    assert "prn" in lm.read_text()
    mask = np.asarray(nb.load(str(mask_path)).dataobj) > 0
    return np.asarray(img.dataobj, dtype=np.float64), mask, img.affine


def test_untouched_face_keeps_all_relief(head):
    o, mask, aff = head
    m = face_truth_metrics(o, o.copy(), mask, aff)
    assert m["face_coverage"] == 0.0
    assert m["face_relief_original_mm"] > 1.0  # a face has relief (nose, lips, brow)
    assert m["face_relief_mm"] == pytest.approx(m["face_relief_original_mm"])


def test_zeroed_face_is_covered_and_flat(head):
    o, mask, aff = head
    d = np.where(mask, 0.0, o)
    m = face_truth_metrics(o, d, mask, aff)
    assert m["face_coverage"] > 0.95
    assert m["face_relief_mm"] < 0.3 * m["face_relief_original_mm"]


def test_blur_leaves_part_of_the_relief(head):
    o, mask, aff = head
    d = np.where(mask, ndi.gaussian_filter(o, 3.0), o)
    blur = face_truth_metrics(o, d, mask, aff)
    zero = face_truth_metrics(o, np.where(mask, 0.0, o), mask, aff)
    assert 0.0 < blur["face_coverage"] < 1.0
    assert zero["face_relief_mm"] < blur["face_relief_mm"] < blur["face_relief_original_mm"]


def test_skin_layer_on_the_face_box_equals_the_whole_grid_rule(head):
    """The skin depth is computed on the face's bounding box only; the layer is the same."""
    from isyb_dask.deface.truth import SKIN_MM, _canonical, _skin_depth_near, _skin_threshold

    o, mask, aff = head
    oc, caff = _canonical(o, aff)
    face = _canonical(mask.astype(np.float32), aff)[0] > 0.5
    head_mask = oc > _skin_threshold(oc)
    vox = np.sqrt((caff[:3, :3] ** 2).sum(0))
    whole = ndi.distance_transform_edt(ndi.binary_fill_holes(head_mask), sampling=vox)
    boxed = _skin_depth_near(head_mask, face, vox)
    layer_whole = face & head_mask & (whole <= SKIN_MM)
    assert layer_whole.sum() > 50
    assert np.array_equal(layer_whole, face & head_mask & (boxed <= SKIN_MM))
    near = face & (whole <= SKIN_MM)
    np.testing.assert_allclose(boxed[near], whole[near])  # exact where it decides


def test_templates_of_one_subject_share_the_original_part(head, tmp_path):
    """subject_truth_metrics scores each defaced file exactly as the one-pair function."""
    from isyb_dask.deface.truth import subject_truth_metrics

    o, mask, aff = head
    paths = {}
    for name, d in {"zero": np.where(mask, 0.0, o),
                    "blur": np.where(mask, ndi.gaussian_filter(o, 3.0), o)}.items():
        paths[name] = tmp_path / f"{name}.nii.gz"
        nb.save(nb.Nifti1Image(d.astype(np.float32), aff), paths[name])
    nb.save(nb.Nifti1Image(o.astype(np.float32), aff), tmp_path / "o.nii.gz")
    nb.save(nb.Nifti1Image(mask.astype(np.uint8), aff), tmp_path / "m.nii.gz")
    got = subject_truth_metrics(tmp_path / "o.nii.gz", paths, tmp_path / "m.nii.gz")
    for name, path in paths.items():
        d = np.asarray(nb.load(str(path)).dataobj, dtype=np.float64)
        want = face_truth_metrics(o.astype(np.float32).astype(np.float64), d, mask, aff)
        assert got[name] == pytest.approx(want, rel=1e-12)
