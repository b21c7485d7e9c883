"""Tests of the deface stage (isyb_dask.deface.stage, maskface) on generated heads."""

from __future__ import annotations

import functools
import json
import stat

import nibabel as nb
import numpy as np
import pytest
from nibabel.orientations import axcodes2ornt, ornt_transform
from scipy import ndimage as ndi
from sklearn.metrics import normalized_mutual_info_score

from isyb_dask import registration as reg
from isyb_dask.deface.config import DefaceConfig
from isyb_dask.deface.maskface import head_mask, protect_mask, ridler_calvard_geometric
from isyb_dask.deface.nmi import bin_labels
from isyb_dask.deface.phantom import make_head
from isyb_dask.deface.skin_depth import surface_depth_change
from isyb_dask.deface.stage import run_deface
from isyb_dask.deface.templates import Template

VOX = 3.0


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    d = tmp_path_factory.mktemp("tpl")
    ph = make_head(VOX, seed=1, noise=5.0)
    for name, arr in (("head", ph.data), ("face", ph.keep), ("brain", ph.brain.astype(np.uint8))):
        nb.save(nb.Nifti1Image(arr, ph.affine), d / f"{name}.nii.gz")
    return Template("phantom", d / "head.nii.gz", d / "face.nii.gz", d / "brain.nii.gz")


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    """A different head (longer, narrower, bigger nose), shifted and tilted, stored int16."""
    d = tmp_path_factory.mktemp("subj")
    ph = make_head(VOX, seed=2, radii=(70.0, 97.0, 78.0), nose_mm=27.0, noise=8.0)
    path = d / "sub-01_T1w.nii.gz"
    nb.save(nb.Nifti1Image(np.rint(ph.data).astype(np.int16), ph.affine), path)
    return path, ph


def _load(path):
    return np.asarray(nb.load(path).dataobj)


@pytest.fixture(scope="module")
def maskface_run(template, subject, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    res = run_deface(subject[0], "sub-01", [template], DefaceConfig(), out)
    return res, out


def test_brain_unchanged_and_face_changed(maskface_run, subject):
    res, out = maskface_run
    row = res["templates"]["phantom"]
    assert row["error"] is None and row["transform_plausible"]
    assert row["brain_voxels_changed"] == 0
    orig = _load(subject[0])
    path = out / "sub-01" / "anat" / "sub-01_desc-defacedphantom_T1w.nii.gz"
    img = nb.load(path)
    assert img.get_data_dtype() == np.int16 and img.shape == orig.shape
    np.testing.assert_allclose(img.affine, nb.load(subject[0]).affine)
    defaced = _load(path)
    ph = subject[1]
    # the true brain of the subject (not the carried-over one) is untouched
    np.testing.assert_array_equal(defaced[ph.brain], orig[ph.brain])
    # the face changed: the nose tip region is flattened (large mean change)
    face = ph.keep == 0
    changed = defaced != orig
    assert changed[face].sum() > 0.5 * changed.sum()
    assert row["face_voxels_changed"] == int(changed.sum()) > 500
    # facial relief obscured: fine detail (image minus its 6 mm Gaussian) in the changed
    # face voxels loses more than half of its energy
    def detail(a):
        a = a.astype(float)
        return a - ndi.gaussian_filter(a, 2.0)

    region = face & changed
    assert (detail(defaced)[region] ** 2).sum() < 0.5 * (detail(orig)[region] ** 2).sum()
    # the face mask written is the changed region, outside the (dilated) brain
    fmask = _load(res["face_masks"]["phantom"]).astype(bool)
    assert changed[~fmask].sum() == 0
    assert not (fmask & ph.brain).any()


def test_sidecar_and_no_face_bearing_outputs(maskface_run):
    res, out = maskface_run
    anat = out / "sub-01" / "anat"
    side = json.loads((anat / "sub-01_desc-defacedphantom_T1w.json").read_text())
    assert side["Template"] == "phantom" and side["Method"] == "maskface"
    assert side["DebrisVoxelsCleared"] == 0  # the phantom's air holds nothing bright
    assert np.asarray(side["SubjectToTemplateRAS"]).shape == (4, 4)
    assert side["provenance"]["version"]
    assert not list(anat.glob("*removedface*"))
    assert res["brain_mask"].exists()


def test_detached_specks_in_front_of_the_face_are_cleared(template, subject, tmp_path):
    """Two bright 2x2x2 specks ~15 mm in front of the eyes (like a frame or a ghost) stay
    in front of the new face unless the debris step clears them; the sidecar counts them."""
    _, ph = subject
    data = np.rint(ph.data).astype(np.int16)
    ijk = [np.rint(np.linalg.solve(ph.affine, [x, 100.0, -8.0, 1.0])[:3]).astype(int)
           for x in (-32.0, 32.0)]
    specks = np.zeros(data.shape, bool)
    for i, j, k in ijk:
        specks[i:i + 2, j:j + 2, k:k + 2] = True
    data[specks] = 650
    path = tmp_path / "sub-02_T1w.nii.gz"
    nb.save(nb.Nifti1Image(data, ph.affine), path)
    written = {}
    for clear in (False, True):
        out = tmp_path / f"clear{int(clear)}"
        res = run_deface(path, "sub-02", [template], DefaceConfig(clear_debris=clear, audit=False),
                         out)
        anat = out / "sub-02" / "anat"
        side = json.loads((anat / "sub-02_desc-defacedphantom_T1w.json").read_text())
        assert side["DebrisVoxelsCleared"] == res["templates"]["phantom"]["debris_voxels_cleared"]
        written[clear] = (_load(anat / "sub-02_desc-defacedphantom_T1w.nii.gz"),
                          _load(anat / "sub-02_desc-facephantom_mask.nii.gz"), side)
    kept, cleared = written[False][0], written[True][0]
    assert np.array_equal(kept[specks], data[specks])  # untouched without the step
    assert written[False][2]["DebrisVoxelsCleared"] == 0
    assert written[True][2]["DebrisVoxelsCleared"] == int(specks.sum())
    air = np.median(data[:, -5:, :])  # the background's level
    assert np.abs(cleared[specks].astype(float) - air).max() < 20.0  # noise sd 8
    assert written[True][1][specks].all()  # counted as replaced (face mask)
    assert np.array_equal(cleared[~specks], kept[~specks])  # nothing else differs


def test_noisy_head_is_defaced(template, tmp_path):
    """A head in strong background noise (Rician sigma 120 on tissue 650): the face moves
    by the same few mm as on a clean head and the brain stays as it is."""
    ph = make_head(VOX, seed=2, radii=(70.0, 97.0, 78.0), nose_mm=27.0, noise=120.0)
    path = tmp_path / "sub-03_T1w.nii.gz"
    nb.save(nb.Nifti1Image(np.rint(ph.data).astype(np.int16), ph.affine), path)
    res = run_deface(path, "sub-03", [template], DefaceConfig(audit=False), tmp_path / "out")
    row = res["templates"]["phantom"]
    assert row["error"] is None and row["brain_voxels_changed"] == 0
    assert row["surface_depth_change_mm"] >= 4.0  # the stage's own measure (7.5)
    # measured independently on the phantom's true face, both images median-filtered: 8.4 mm
    # (with the plain threshold's head mask the noise is "defaced" and the face kept: 0.0)
    orig = _load(path).astype(float)
    d = _load(tmp_path / "out" / "sub-03" / "anat" / "sub-03_desc-defacedphantom_T1w.nii.gz")
    moved = surface_depth_change(orig, d.astype(float), ph.keep == 0, (1, 1),
                                 np.array([VOX] * 3), denoise=True)
    assert moved["median_mm"] >= 4.0


def test_nose_cut_by_the_field_of_view_is_replaced(template, subject, tmp_path):
    """The stage spares the face normal's axis from the layer's fade at the volume's faces:
    a nose cut by the field of view is replaced up to the cut."""
    _, ph = subject
    data = np.rint(ph.data).astype(np.int16)
    thr = float(np.percentile(data[data > 100], 5))
    front = np.flatnonzero((data > thr).any(axis=(0, 2))).max()
    data = data[:, : front + 1 - 2, :]  # the FOV ends 6 mm behind the nose tip
    path = tmp_path / "sub-04_T1w.nii.gz"
    nb.save(nb.Nifti1Image(data, ph.affine), path)
    res = run_deface(path, "sub-04", [template], DefaceConfig(audit=False), tmp_path / "out")
    assert res["templates"]["phantom"]["error"] is None
    d = _load(tmp_path / "out" / "sub-04" / "anat" / "sub-04_desc-defacedphantom_T1w.nii.gz")
    stump = data[:, -1, :] > thr
    assert stump.sum() >= 20
    changed = np.abs(d[:, -1, :].astype(float) - data[:, -1, :])[stump] / data[:, -1, :][stump]
    assert np.mean(changed > 0.2) >= 0.9


def test_nmi_matches_independent_computation(maskface_run, subject):
    res, out = maskface_run
    orig = _load(subject[0]).astype(float)
    d = _load(out / "sub-01" / "anat" / "sub-01_desc-defacedphantom_T1w.nii.gz").astype(float)
    mask = orig != d
    a, r = orig[mask], orig[mask] - d[mask]
    ref = normalized_mutual_info_score(bin_labels(a, 64), bin_labels(r, 64))
    assert res["templates"]["phantom"]["nmi"] == pytest.approx(ref, abs=1e-12)
    assert res["nmi_mask_voxels"] == {"phantom": int(mask.sum())}  # per-template mask (default)


def test_zero_method_and_removed_face_mode(template, subject, tmp_path):
    cfg = DefaceConfig(method="zero", keep_removed_face=True)
    res = run_deface(subject[0], "sub-01", [template, Template("copy", template.head,
                     template.face_mask, template.brain_mask)], cfg, tmp_path)
    orig = _load(subject[0])
    ph = subject[1]
    d = _load(tmp_path / "sub-01" / "anat" / "sub-01_desc-defacedphantom_T1w.nii.gz")
    np.testing.assert_array_equal(d[ph.brain], orig[ph.brain])
    nose_tip = np.zeros_like(ph.brain)
    nose_tip[:, -8:, :] = True
    nose_tip &= orig > 400
    assert nose_tip.any() and np.all(d[nose_tip] < 0.1 * orig[nose_tip])
    removed = tmp_path / "sub-01" / "anat" / "sub-01_desc-removedfacephantom_T1w.nii.gz"
    assert stat.S_IMODE(removed.stat().st_mode) == 0o600
    # identical templates give identical NMI inside the shared mask
    rows = res["templates"]
    assert rows["phantom"]["nmi"] == pytest.approx(rows["copy"]["nmi"])
    assert 0.2 < rows["phantom"]["nmi"] <= 1.0


@pytest.mark.parametrize("codes", [("L", "A", "S"), ("L", "I", "A")])
def test_same_result_in_any_orientation(template, subject, maskface_run, tmp_path, codes):
    img = nb.load(subject[0])
    other = img.as_reoriented(ornt_transform(axcodes2ornt("RAS"), axcodes2ornt(codes)))
    assert nb.aff2axcodes(other.affine) == codes
    src = tmp_path / "sub-02_T1w.nii.gz"
    nb.save(other, src)
    res = run_deface(src, "sub-02", [template], DefaceConfig(), tmp_path / "out")
    got = nb.load(tmp_path / "out" / "sub-02" / "anat" / "sub-02_desc-defacedphantom_T1w.nii.gz")
    assert nb.aff2axcodes(got.affine) == codes  # written back on the original grid
    ref = maskface_run[1] / "sub-01" / "anat" / "sub-01_desc-defacedphantom_T1w.nii.gz"
    np.testing.assert_array_equal(
        np.asarray(reg.to_canonical(got).dataobj), np.asarray(reg.to_canonical(nb.load(ref)).dataobj)
    )
    assert res["templates"]["phantom"]["nmi"] == pytest.approx(
        maskface_run[0]["templates"]["phantom"]["nmi"]
    )


def test_implausible_transform_is_a_failure(template, subject, tmp_path, monkeypatch):
    # no scale of a real head fit lies in [2, 3]: the start is already implausible, so the
    # affine guard (keep the last plausible transform) cannot rescue it
    strict = functools.partial(
        reg.register_affine, limits=reg.PlausibilityLimits(scale_range=(2.0, 3.0))
    )
    monkeypatch.setattr(reg, "register_affine", strict)
    res = run_deface(subject[0], "sub-01", [template], DefaceConfig(), tmp_path)
    row = res["templates"]["phantom"]
    assert not row["transform_plausible"] and "implausible" in row["error"]
    assert np.isnan(row["nmi"])
    assert not list(tmp_path.rglob("*defaced*"))


def test_ridler_calvard_geometric_two_classes():
    rng = np.random.default_rng(0)
    v = np.r_[rng.normal(20, 5, 5000), rng.normal(500, 30, 5000)]
    t = ridler_calvard_geometric(v)
    assert 60 < t < 400  # between the classes (geometric mean of ~20 and ~500 is ~100)


def test_head_mask_and_protect_mask():
    ph = make_head(VOX, seed=5)
    m = head_mask(ph.data, np.array([VOX] * 3))
    truth = ph.data > 100
    assert (m == truth).mean() > 0.97
    p = protect_mask(ph.brain, np.array([VOX] * 3), 4.0)
    assert p[ph.brain].all() and p.sum() > ph.brain.sum()
    dist = ndi.distance_transform_edt(~ph.brain, sampling=[VOX] * 3)
    assert dist[p].max() <= 6.0 + 1e-9  # radius max(4 mm, 2 voxels = 6 mm)


@pytest.mark.parametrize("header", ["oblique", "tilted"])
def test_oblique_grid_and_tilted_head(template, tmp_path, header):
    """Oblique storage (correct oblique affine) and a head tilted 20 deg (pitch) both deface."""
    a = np.radians(20.0)
    rot = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    shape = (64, 88, 72)
    aff = np.eye(4)
    aff[:3, :3] = rot * VOX
    aff[:3, 3] = -aff[:3, :3] @ ((np.asarray(shape) - 1) / 2.0) + [0.0, 0.0, -10.0]
    ph = make_head(VOX, shape=shape, affine=aff, seed=6, radii=(71.0, 94.0, 79.0), noise=8.0)
    if header == "tilted":
        aff = np.diag([VOX, VOX, VOX, 1.0])
        aff[:3, 3] = -(np.asarray(shape) - 1) / 2.0 * VOX
    src = tmp_path / "sub-03_T1w.nii.gz"
    nb.save(nb.Nifti1Image(np.rint(ph.data).astype(np.int16), aff), src)
    res = run_deface(src, "sub-03", [template], DefaceConfig(), tmp_path / "out")
    row = res["templates"]["phantom"]
    assert row["error"] is None, row
    if header == "tilted":
        assert row["checks"]["rotation_deg"] == pytest.approx(20.0, abs=3.0)
    d = _load(tmp_path / "out" / "sub-03" / "anat" / "sub-03_desc-defacedphantom_T1w.nii.gz")
    orig = _load(src)
    np.testing.assert_array_equal(d[ph.brain], orig[ph.brain])
    changed = d != orig
    # maskface also covers a margin and eyes/brow above the template's face (face_up_mm)
    assert changed[ph.keep == 0].sum() > 0.5 * changed.sum() > 300


def test_normfilter_jitter_is_seeded():
    from isyb_dask.deface.maskface import normfilter

    ph = make_head(VOX, seed=8)
    vox = np.array([VOX] * 3)
    face = ph.keep == 0
    plain, changed = normfilter(ph.data, face, vox, 1, 1)
    a, _ = normfilter(ph.data, face, vox, 1, 1, jitter_vox=2.0, rng=np.random.default_rng(4))
    b, _ = normfilter(ph.data, face, vox, 1, 1, jitter_vox=2.0, rng=np.random.default_rng(4))
    c, _ = normfilter(ph.data, face, vox, 1, 1, jitter_vox=2.0, rng=np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, plain)
    # replaced voxels stay inside the (margin-dilated) face region; the brain far behind is intact
    assert changed.any() and not changed[ph.brain & ~ndi.binary_dilation(face, iterations=3)].any()
    # a face-normal flip (face towards lower index) gives the mirrored result
    flipped, _ = normfilter(ph.data[:, ::-1], face[:, ::-1], vox, 1, -1)
    np.testing.assert_allclose(flipped[:, ::-1], plain, atol=1e-9)
    with pytest.raises(ValueError, match="too small"):
        normfilter(ph.data, np.zeros_like(face), vox, 1, 1)


def test_template_registration_seeded_from_the_atlas_one(template, subject, tmp_path):
    # the template plays the built-in head here: its run-level registration to "the built-in
    # head" is the identity, so the seeded start is the subject's atlas registration itself
    import SimpleITK as sitk

    from isyb_dask import registration as reg
    from isyb_dask.deface.template_fit import template_registration

    img = reg.to_canonical(nb.load(subject[0]))
    fixed = reg.to_sitk(img)
    cfg = DefaceConfig()
    full = template_registration(fixed, template, cfg)
    ident = tmp_path / "identity.tfm"
    sitk.WriteTransform(sitk.AffineTransform(3), str(ident))
    seeded_tpl = Template(template.name, template.head, template.face_mask, template.brain_mask,
                          to_builtin=ident)
    seeded = template_registration(fixed, seeded_tpl, cfg, atlas_registration=full)
    assert seeded.checks.get("seeded_from") and seeded.plausible
    pts = np.argwhere(_load(subject[0]) > 50)[::500].astype(float)
    for p in pts[:40]:
        world = fixed.TransformContinuousIndexToPhysicalPoint(p.tolist())
        d = np.subtract(seeded.transform.TransformPoint(world), full.transform.TransformPoint(world))
        assert np.linalg.norm(d) < VOX  # the same solution within a voxel
    # a wrong run-level transform (a left-right flip) gives an implausible start: the full
    # registration runs instead
    flip = sitk.AffineTransform(3)
    flip.SetMatrix((-1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))
    bad = tmp_path / "flip.tfm"
    sitk.WriteTransform(flip, str(bad))
    bad_tpl = Template(template.name, template.head, template.face_mask, template.brain_mask,
                       to_builtin=bad)
    res = template_registration(fixed, bad_tpl, cfg, atlas_registration=full)
    assert res.plausible and "seeded_from" not in res.checks
    assert np.allclose(reg.matrix_ras(res.transform), reg.matrix_ras(full.transform), atol=1e-6)


def test_compose_affine_is_the_sequential_map():
    import SimpleITK as sitk

    from isyb_dask import registration as reg

    a, b = sitk.AffineTransform(3), sitk.AffineTransform(3)
    a.SetMatrix((1.1, 0.1, 0.0, -0.05, 0.95, 0.02, 0.0, 0.03, 1.02))
    a.SetTranslation((3.0, -2.0, 1.0))
    a.SetCenter((10.0, 5.0, -4.0))
    b.SetMatrix((0.98, -0.02, 0.04, 0.0, 1.01, 0.0, 0.01, 0.0, 0.97))
    b.SetTranslation((-1.0, 4.0, 2.5))
    both = reg.compose_affine(a, b)
    for p in ((0.0, 0.0, 0.0), (50.0, -20.0, 30.0), (-70.0, 80.0, -10.0)):
        assert np.allclose(both.TransformPoint(p), b.TransformPoint(a.TransformPoint(p)), atol=1e-9)


def test_scaled_integer_input_keeps_its_values(template, subject, tmp_path):
    # uint8 with scl_slope (SPM's avg152 heads, dcm2niix Philips data): nibabel applies the
    # scaling on load and leaves the header's slope empty; the defaced image must keep the
    # real values (float32), restore the brain exactly and count no brain voxel as changed
    _, ph = subject
    slope = float(ph.data.max()) / 250.0
    stored = np.clip(np.rint(ph.data / slope), 0, 255).astype(np.uint8)
    img = nb.Nifti1Image(stored, ph.affine)
    img.header.set_slope_inter(slope, 0.0)
    path = tmp_path / "sub-02_T1w.nii.gz"
    nb.save(img, path)
    real = np.asarray(nb.load(path).dataobj)  # the values a reader sees
    res = run_deface(path, "sub-02", [template], DefaceConfig(), tmp_path / "out")
    row = res["templates"][template.name]
    assert row["error"] is None and row["brain_voxels_changed"] == 0
    out = nb.load(tmp_path / "out" / "sub-02" / "anat" / f"sub-02_desc-defaced{template.name}_T1w.nii.gz")
    assert out.get_data_dtype() == np.float32
    d = np.asarray(out.dataobj)
    brain = ph.brain
    assert np.array_equal(d[brain], real[brain].astype(np.float32))
    assert d.max() <= real.max() * 1.01 and d.max() > 0.5 * real.max()  # real units, not 0/1
    changed = d != real.astype(np.float32)
    assert 0 < changed.sum() < 0.2 * changed.size  # the face, not the whole image
    assert row["face_voxels_changed"] == int(changed.sum())
    assert 0.0 < row["nmi"] < 0.6
