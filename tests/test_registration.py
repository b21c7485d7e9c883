"""Tests of isyb_dask.registration (SimpleITK affine/rigid registration and grid helpers)."""

from __future__ import annotations

import nibabel as nb
import numpy as np
import pytest
import SimpleITK as sitk

from isyb_dask import registration as reg
from isyb_dask.deface.phantom import make_head


def _rot(ax: int, deg: float) -> np.ndarray:
    a = np.radians(deg)
    c, s = np.cos(a), np.sin(a)
    m = np.eye(3)
    i, j = [k for k in range(3) if k != ax]
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return m


def _known_pair(matrix: np.ndarray, shift: list[float]):
    head = make_head(3.0, seed=3)
    moving = reg.to_sitk(head.data, head.affine)
    truth = sitk.AffineTransform(3)
    truth.SetMatrix(matrix.ravel().tolist())
    truth.SetTranslation(shift)
    truth.SetCenter([0.0, 0.0, -10.0])
    fixed = reg.resample_to(moving, moving, truth)  # fixed(x) = moving(truth(x))
    return fixed, moving, truth


def _mean_error_mm(fixed: sitk.Image, est: sitk.Transform, truth: sitk.Transform) -> float:
    arr = reg.sitk_to_array(fixed)
    idx = np.argwhere(arr > 300)[::37]
    errs = []
    for p in idx:
        x = fixed.TransformContinuousIndexToPhysicalPoint([float(v) for v in p])
        errs.append(np.linalg.norm(np.subtract(est.TransformPoint(x), truth.TransformPoint(x))))
    return float(np.mean(errs))


def test_to_sitk_roundtrip_affine_and_values():
    aff = np.array([[0.0, 0.0, -2.0, 90.0], [-1.5, 0.0, 0.0, 10.0], [0.0, 3.0, 0.0, -5.0], [0, 0, 0, 1]])
    data = np.random.default_rng(0).random((4, 5, 6)).astype(np.float32)
    img = reg.to_sitk(data, aff)
    np.testing.assert_allclose(reg.sitk_affine(img), aff, atol=1e-9)
    np.testing.assert_array_equal(reg.sitk_to_array(img), data)
    # a voxel's physical point (LPS) equals the RAS affine applied to its index, x/y negated
    p = np.array(img.TransformIndexToPhysicalPoint([1, 2, 3]))
    ras = aff @ np.array([1, 2, 3, 1.0])
    np.testing.assert_allclose(p, ras[:3] * [-1, -1, 1], atol=1e-9)


@pytest.mark.parametrize("codes", [("L", "A", "S"), ("L", "I", "A"), ("P", "S", "R")])
def test_canonical_roundtrip(codes):
    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    ras = nb.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0]))
    from nibabel.orientations import axcodes2ornt, inv_ornt_aff, ornt_transform

    ornt = ornt_transform(axcodes2ornt("RAS"), axcodes2ornt(codes))
    other = ras.as_reoriented(ornt)
    assert nb.aff2axcodes(other.affine) == codes
    canon = reg.to_canonical(other)
    np.testing.assert_array_equal(np.asarray(canon.dataobj), data)
    np.testing.assert_allclose(canon.affine, ras.affine)
    back = reg.from_canonical(np.asarray(canon.dataobj), other.affine)
    np.testing.assert_array_equal(back, np.asarray(other.dataobj))
    assert inv_ornt_aff is not None


def test_affine_recovers_known_transform():
    matrix = _rot(0, 9.0) @ _rot(2, -5.0) @ np.diag([1.06, 0.94, 1.03])
    matrix[0, 1] += 0.03
    fixed, moving, truth = _known_pair(matrix, [5.0, -8.0, 6.0])
    res = reg.register_affine(fixed, moving, seed=11, threads=1)
    err = _mean_error_mm(fixed, res.transform, truth)
    assert err < 3.0 * 0.5  # mean error under half a 3 mm voxel
    assert res.plausible
    assert res.checks["violations"] == []
    np.testing.assert_allclose(res.checks["rotation_deg"], 10.3, atol=1.5)
    assert np.isfinite(res.metric) and res.metric < -0.5


def test_rigid_recovers_known_rotation_and_is_deterministic():
    matrix = _rot(0, -12.0) @ _rot(1, 4.0)
    fixed, moving, truth = _known_pair(matrix, [-6.0, 10.0, -4.0])
    a = reg.register_affine(fixed, moving, dof=6, seed=5, threads=1)
    b = reg.register_affine(fixed, moving, dof=6, seed=5, threads=1)
    assert a.transform.GetName() == "Euler3DTransform"
    assert _mean_error_mm(fixed, a.transform, truth) < 1.5
    np.testing.assert_array_equal(a.transform.GetParameters(), b.transform.GetParameters())
    np.testing.assert_allclose(a.checks["scales"], 1.0, atol=1e-6)


def test_affine_stage_keeps_the_last_plausible_transform(monkeypatch):
    """A 12-dof level that drifts into a reflection from a plausible start is not taken."""
    from isyb_dask.registration import affine as reg_affine

    matrix = _rot(0, 9.0) @ _rot(2, -5.0)
    fixed, moving, truth = _known_pair(matrix, [5.0, -8.0, 6.0])
    real_level = reg_affine._run_level
    calls = []

    def drifting_level(f, m, initial, **kw):
        out, metric = real_level(f, m, initial, **kw)
        calls.append(initial.GetName())
        if out.GetName() == "AffineTransform" and len(calls) >= 4:  # the 2nd affine level
            flipped = sitk.AffineTransform(out)
            a = np.array(out.GetMatrix()).reshape(3, 3) @ np.diag([-1.0, 1.0, 1.0])
            flipped.SetMatrix(a.ravel().tolist())
            return flipped, metric - 1.0  # a "better" metric must not win over plausibility
        return out, metric

    monkeypatch.setattr(reg_affine, "_run_level", drifting_level)
    res = reg.register_affine(fixed, moving, seed=11, threads=1)
    assert res.plausible, res.checks
    assert res.checks["determinant"] > 0
    assert res.checks.get("affine_stopped_at")  # says where the drift was stopped
    assert _mean_error_mm(fixed, res.transform, truth) < 3.0  # the previous level's estimate


def test_check_transform_flags_implausible():
    ok, checks = reg.check_transform(sitk.AffineTransform(3))
    assert ok and checks["rotation_deg"] == 0.0
    flip = sitk.AffineTransform(3)
    flip.SetMatrix(np.diag([-1.0, 1.0, 1.0]).ravel().tolist())
    ok, checks = reg.check_transform(flip)
    assert not ok and any("reflection" in v for v in checks["violations"])
    big = sitk.AffineTransform(3)
    big.SetMatrix(np.diag([2.0, 1.0, 1.0]).ravel().tolist())
    assert not reg.check_transform(big)[0]
    shear = sitk.AffineTransform(3)
    shear.SetMatrix([1.0, 0.5, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0])
    ok, checks = reg.check_transform(shear)
    assert not ok and checks["shears"][0] == pytest.approx(0.5)
    rot = sitk.AffineTransform(3)
    rot.SetMatrix(_rot(1, 70.0).ravel().tolist())
    ok, checks = reg.check_transform(rot)
    assert not ok and checks["rotation_deg"] == pytest.approx(70.0, abs=1e-3)


def test_matrix_ras_matches_point_mapping():
    tx = sitk.AffineTransform(3)
    tx.SetMatrix((_rot(2, 20.0) * 1.1).ravel().tolist())
    tx.SetTranslation([3.0, -2.0, 7.0])
    tx.SetCenter([10.0, 20.0, 30.0])
    m = reg.matrix_ras(tx)
    p_ras = np.array([12.0, -5.0, 40.0])
    lps_out = np.array(tx.TransformPoint((p_ras * [-1, -1, 1]).tolist()))
    np.testing.assert_allclose((m @ np.append(p_ras, 1))[:3], lps_out * [-1, -1, 1], atol=1e-9)


def test_real_head_mni_template_registers(shared_data):
    subj = reg.to_sitk(reg.to_canonical(nb.load(shared_data / "heads/xa30_sub1_T1w_tfl_2mm.nii.gz")))
    tmpl = reg.to_sitk(
        reg.to_canonical(nb.load(shared_data / "templates/mni152_fsl_T1_2mm_head.nii.gz"))
    )
    res = reg.register_affine(subj, tmpl, seed=1, threads=1)
    assert res.plausible, res.checks
    warped = reg.sitk_to_array(reg.resample_to(tmpl, subj, res.transform))
    target = reg.sitk_to_array(subj)
    # head masks of the warped template and of the subject overlap well (Dice)
    a = warped > 0.25 * np.percentile(warped[warped > 0], 90)
    b = target > 0.25 * np.percentile(target[target > 0], 90)
    inside = np.zeros_like(a)
    inside[:, :, 40:] = True  # template FOV stops at the chin: compare above it
    dice = 2 * (a & b & inside).sum() / ((a & inside).sum() + (b & inside).sum())
    assert dice > 0.85


def test_downsample_with_an_axis_already_at_the_step():
    """Thick slices (2 x 2 x 4 mm) to a 4 mm level: the 4 mm axis keeps its voxels, the
    others are averaged (block path), or Gaussian-smoothed alone (3 mm level) — no axis
    gets a zero sigma, which ITK refuses."""
    rng = np.random.default_rng(0)
    arr = rng.normal(100.0, 10.0, (30, 40, 50)).astype(np.float32)  # sitk order z, y, x
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((2.0, 2.0, 4.0))
    four = reg.downsample(img, 4.0)
    assert four.GetSpacing() == pytest.approx((4.0, 4.0, 4.0))
    assert four.GetSize() == (25, 20, 30)
    blocks = arr.reshape(30, 20, 2, 25, 2).mean(axis=(2, 4))
    assert np.allclose(sitk.GetArrayFromImage(four), blocks, atol=1e-3)
    three = reg.downsample(img, 3.0)  # x, y smoothed; z (4 mm, coarser than 3) not smoothed
    out = sitk.GetArrayFromImage(three)
    assert np.isfinite(out).all() and three.GetSize()[2] == 40
    assert out.std() < arr.std()  # the in-plane smoothing averaged noise away
