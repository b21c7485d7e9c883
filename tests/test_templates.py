"""Tests of isyb_dask.deface.templates, .template_carryover and .builder."""

from __future__ import annotations

import json

import nibabel as nb
import numpy as np
import pytest

from isyb_dask.deface.builder import build_template, build_template_from_bids, find_t1w
from isyb_dask.deface.phantom import make_head
from isyb_dask.deface.template_carryover import complete_template
from isyb_dask.deface.templates import (
    Template,
    grid_head_for,
    parse_spec,
    read_template_config,
    resolve_templates,
    validate_template,
)
from isyb_dask.errors import BIDSError, ConfigError, InputError

VOX = 3.0


def _save(arr, aff, path):
    nb.save(nb.Nifti1Image(arr, aff), path)
    return path


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    d = tmp_path_factory.mktemp("ref")
    ph = make_head(VOX, seed=1, radii=(72.0, 88.0, 80.0))
    return Template(
        "ref",
        _save(ph.data, ph.affine, d / "h.nii.gz"),
        _save(ph.keep, ph.affine, d / "f.nii.gz"),
        _save(ph.brain.astype(np.uint8), ph.affine, d / "b.nii.gz"),
    )


def test_parse_spec_and_names(tmp_path):
    t = parse_spec("CN200=/data/CN200.nii.gz:/data/CN200_face.nii.gz")
    assert t.name == "CN200" and str(t.head) == "/data/CN200.nii.gz"
    assert str(t.face_mask) == "/data/CN200_face.nii.gz" and t.brain_mask is None
    t = parse_spec("X=head.nii.gz", base=tmp_path)
    assert t.head == tmp_path / "head.nii.gz" and t.face_mask is None
    with pytest.raises(ConfigError):
        parse_spec("no_equals_sign.nii.gz")
    with pytest.raises(ConfigError):
        parse_spec("bad-name=/x.nii.gz")  # not a valid BIDS desc label
    with pytest.raises(ConfigError):
        parse_spec("A=")


def test_yaml_config(tmp_path):
    cfg = tmp_path / "templates.yaml"
    cfg.write_text(
        "templates:\n"
        "  - name: CN200\n    head: heads/CN200.nii.gz\n    face_mask: heads/CN200_face.nii.gz\n"
        "  - name: Chinese2020\n    head: /abs/CN2020.nii.gz\n"
    )
    ts = read_template_config(cfg)
    assert [t.name for t in ts] == ["CN200", "Chinese2020"]
    assert ts[0].head == tmp_path / "heads" / "CN200.nii.gz" and ts[1].face_mask is None
    cfg.write_text("templates:\n  - name: A\n    head: a.nii.gz\n    colour: red\n")
    with pytest.raises(ConfigError):
        read_template_config(cfg)


def test_repo_templates_yaml_is_valid():
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "configs" / "templates.yaml"
    assert read_template_config(path) == []  # only commented examples


def test_refuses_bad_face_masks(ref, tmp_path):
    img = nb.load(ref.head)
    ones = _save(np.ones(img.shape, np.uint8), img.affine, tmp_path / "ones.nii.gz")
    zeros = _save(np.zeros(img.shape, np.uint8), img.affine, tmp_path / "zeros.nii.gz")
    off = _save(np.asarray(nb.load(ref.face_mask).dataobj)[:-1], img.affine, tmp_path / "off.nii.gz")
    shifted = img.affine.copy()
    shifted[0, 3] += 5
    moved = _save(np.asarray(nb.load(ref.face_mask).dataobj), shifted, tmp_path / "moved.nii.gz")
    inverted = _save(1 - np.asarray(nb.load(ref.face_mask).dataobj), img.affine, tmp_path / "inv.nii.gz")
    for mask, words in ((ones, "all ones"), (zeros, "empty"), (off, "off the head grid"),
                        (moved, "off the head grid"), (inverted, "convention")):
        with pytest.raises(InputError, match=words):
            validate_template(Template("T", ref.head, mask))
    validate_template(ref)


def test_missing_masks_are_carried_over(ref, tmp_path):
    ph = make_head(VOX, seed=7, radii=(75.0, 96.0, 84.0))
    aff = ph.affine.copy()
    aff[:3, 3] += [4.0, -6.0, 5.0]
    head = _save(ph.data, aff, tmp_path / "other.nii.gz")
    t = complete_template(Template("other", head, None), ref, tmp_path / "work")
    assert "carried over from template ref" in t.provenance["face_mask"]
    assert "carried over" in t.provenance["brain_mask"]
    validate_template(t)
    face = np.asarray(nb.load(t.face_mask).dataobj) == 0
    truth = ph.keep == 0
    dice = 2 * (face & truth).sum() / (face.sum() + truth.sum())
    assert dice > 0.85
    brain = np.asarray(nb.load(t.brain_mask).dataobj) > 0
    assert 2 * (brain & ph.brain).sum() / (brain.sum() + ph.brain.sum()) > 0.9
    # cached: a second call reuses the files
    again = complete_template(Template("other", head, None), ref, tmp_path / "work")
    assert again.face_mask == t.face_mask


@pytest.mark.slow
def test_resolve_templates_builtin_first(ref, tmp_path):
    from isyb_dask.atlas import get_reference_atlas

    atlas = get_reference_atlas()
    cfg = tmp_path / "t.yaml"
    cfg.write_text(f"templates:\n  - name: Ref2\n    head: {ref.head}\n    face_mask: {ref.face_mask}\n"
                   f"    brain_mask: {ref.brain_mask}\n")
    ts = resolve_templates([f"Ref={ref.head}:{ref.face_mask}:{ref.brain_mask}"], cfg, tmp_path,
                           atlas=atlas)
    assert [t.name for t in ts] == ["pydeface", "Ref", "Ref2"]
    assert ts[0].brain_mask == atlas.brain_mask
    # each head on the registration grid is written once per run (Ref and Ref2 share a head)
    assert all(t.grid_head is not None and t.grid_head.parent == tmp_path / "templates"
               for t in ts)
    assert ts[1].grid_head == ts[2].grid_head != ts[0].grid_head
    # the atlas registration finds the built-in head's copy; an unknown head has none
    assert grid_head_for(ts, atlas.head) == ts[0].grid_head
    assert grid_head_for(ts, tmp_path / "other_head.nii.gz") is None
    with pytest.raises(ConfigError, match="twice"):
        resolve_templates([f"Ref={ref.head}:{ref.face_mask}"] * 2, None, tmp_path, atlas=atlas)
    with pytest.raises(InputError, match="does not exist"):
        resolve_templates([f"Nope={tmp_path / 'nope.nii.gz'}"], None, tmp_path, atlas=atlas)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Three long heads in a BIDS layout (AP semi-axis ~100 mm vs 88 mm for the reference)."""
    root = tmp_path_factory.mktemp("bids")
    paths = []
    for i, ry in enumerate((98.0, 101.0, 104.0)):
        ph = make_head(4.0, seed=20 + i, radii=(74.0, ry, 82.0))
        aff = ph.affine.copy()
        aff[:3, 3] += [i * 3.0, -i * 2.0, i * 4.0]
        anat = root / f"sub-{i + 1:02d}" / "anat"
        anat.mkdir(parents=True)
        paths.append(_save(ph.data, aff, anat / f"sub-{i + 1:02d}_T1w.nii.gz"))
    return root, paths


def _ap_extent(path) -> float:
    img = nb.load(path)
    a = np.asarray(img.dataobj, dtype=float)
    m = a > 0.3 * np.median(a[a > 0.1 * np.percentile(a, 99)])
    ys = np.where(m.any(axis=(0, 2)))[0]
    return float((ys.max() - ys.min()) * abs(img.affine[1, 1]))


def test_builder_matches_cohort_shape(cohort, ref, tmp_path):
    root, paths = cohort
    assert find_t1w(root) == paths
    assert find_t1w(root, ["02"]) == [paths[1]]
    with pytest.raises(BIDSError):
        find_t1w(root, ["99"])
    t = build_template_from_bids(root, tmp_path / "tpl-cohort", iterations=2, reference=ref, seed=3)
    assert t.name == "tplcohort"
    for suffix in ("_T1w.nii.gz", "_desc-face_mask.nii.gz", "_desc-brain_mask.nii.gz", "_T1w.json"):
        assert (tmp_path / f"tpl-cohort{suffix}").exists()
    prov = json.loads((tmp_path / "tpl-cohort_T1w.json").read_text())
    assert len(prov["inputs"]) == 3 and "carried over from template ref" in prov["masks"]
    cohort_ap = np.mean([_ap_extent(p) for p in paths])
    built, reference = _ap_extent(t.head), _ap_extent(ref.head)
    assert abs(built - cohort_ap) < 0.35 * abs(reference - cohort_ap)
    # the unbiased average converges: the last mean transform is close to identity
    last = np.asarray(prov["history"][-1]["mean_transform_lps"])
    assert np.abs(last[:3, :3] - np.eye(3)).max() < 0.02 and np.abs(last[:3, 3]).max() < 1.0
    # the carried face mask removes the built template's face (front, lower half)
    face = np.asarray(nb.load(t.face_mask).dataobj) == 0
    ijk = np.argwhere(face).mean(axis=0)
    centre = (np.asarray(face.shape) - 1) / 2
    assert ijk[1] > centre[1] and ijk[2] < centre[2] + 5


def test_builder_needs_two_heads(cohort, ref, tmp_path):
    with pytest.raises(InputError):
        build_template(cohort[1][:1], tmp_path / "x", reference=ref)


@pytest.mark.slow
def test_builder_nonlinear_refinement_runs(cohort, ref, tmp_path):
    paths = cohort[1][:2]
    lin = build_template(paths, tmp_path / "lin", iterations=1, reference=ref, seed=3)
    nl = build_template(paths, tmp_path / "nl", iterations=1, reference=ref, seed=3, nonlinear=True)
    assert json.loads((tmp_path / "nl_T1w.json").read_text())["nonlinear"] is True
    validate_template(nl)
    a = np.asarray(nb.load(lin.head).dataobj, dtype=float).ravel()
    b = np.asarray(nb.load(nl.head).dataobj, dtype=float).ravel()
    # the B-spline refinement of affinely similar heads changes the average only a little,
    # and keeps the cohort's shape
    assert np.corrcoef(a, b)[0, 1] > 0.95
    cohort_ap = np.mean([_ap_extent(p) for p in paths])
    assert abs(_ap_extent(nl.head) - cohort_ap) < 0.35 * abs(_ap_extent(ref.head) - cohort_ap)


def test_carryover_is_registered_once_per_cache(ref, tmp_path, monkeypatch):
    from isyb_dask import registration

    ph = make_head(VOX, seed=7, radii=(75.0, 96.0, 84.0))
    aff = ph.affine.copy()
    aff[:3, 3] += [4.0, -6.0, 5.0]
    head = _save(ph.data, aff, tmp_path / "other.nii.gz")
    cache = tmp_path / "cache"
    first = complete_template(Template("other", head, None), ref, tmp_path / "run1",
                              cache_dir=cache)
    assert len(list((cache / "templates-v2").iterdir())) == 1

    def no_registration(*args, **kwargs):
        raise AssertionError("registered again although the cache holds the carry-over")

    monkeypatch.setattr(registration, "register_affine", no_registration)
    # a second run (new output folder, other template name) copies the cached masks
    second = complete_template(Template("renamed", head, None), ref, tmp_path / "run2",
                               cache_dir=cache)
    assert second.face_mask.parent == tmp_path / "run2" / "templates"
    for a, b in ((first.face_mask, second.face_mask), (first.brain_mask, second.brain_mask)):
        assert np.array_equal(np.asarray(nb.load(a).dataobj), np.asarray(nb.load(b).dataobj))
    assert second.provenance["carryover"] == first.provenance["carryover"]
    # another seed is another carry-over: not taken from the cache
    with pytest.raises(AssertionError, match="registered again"):
        complete_template(Template("other", head, None), ref, tmp_path / "run3",
                          cache_dir=cache, seed=1)


def test_template_with_masks_survives_an_implausible_builtin_registration(ref, tmp_path,
                                                                         monkeypatch):
    # a template that brings its own masks stays usable when its registration to the
    # built-in head fails the checks: no seed for its subjects, no error
    from isyb_dask import registration

    real = registration.register_affine

    def implausible(*args, **kwargs):
        res = real(*args, **kwargs)
        res.plausible = False
        res.checks["violations"] = ["forced by the test"]
        return res

    monkeypatch.setattr(registration, "register_affine", implausible)
    ph = make_head(VOX, seed=7, radii=(75.0, 96.0, 84.0))
    head = _save(ph.data, ph.affine, tmp_path / "own.nii.gz")
    face = _save(ph.keep, ph.affine, tmp_path / "own_face.nii.gz")
    brain = _save(ph.brain.astype(np.uint8), ph.affine, tmp_path / "own_brain.nii.gz")
    t = complete_template(Template("own", head, face, brain), ref, tmp_path / "work")
    assert (t.face_mask, t.brain_mask, t.to_builtin) == (face, brain, None)
    assert "forced by the test" in t.provenance["builtin_registration"]
    with pytest.raises(InputError, match="implausible"):  # masks needed: still an error
        complete_template(Template("bare", head, None), ref, tmp_path / "work2")


def test_face_mask_padded_only_where_it_matters_resamples_like_full_padding():
    """Padding only the sides whose edge holds face (not keep) gives the same keep-map on a
    subject grid as edge-padding all six sides, including beyond the template's box."""
    import SimpleITK as sitk

    from isyb_dask.deface.template_fit import pad_face_mask
    from isyb_dask.registration.grid import resample_to

    keep = np.ones((40, 48, 36), np.float32)  # (z, y, x)
    keep[5:20, 30:, 10:26] = 0.0  # the face reaches the anterior (y-high) edge
    keep[:4, 35:, 12:20] = 0.25  # and, partly, the inferior (z-low) edge
    face = sitk.GetImageFromArray(keep)
    face.SetSpacing((2.0, 2.0, 2.0))
    face.SetOrigin((-36.0, -48.0, -40.0))
    padded = pad_face_mask(face, 30.0)
    assert padded.GetSize() == (36, 48 + 15, 40 + 15)  # y-high and z-low only
    full = sitk.ZeroFluxNeumannPad(face, [15, 15, 15], [15, 15, 15])
    subject = sitk.Image([70, 80, 70], sitk.sitkFloat32)
    subject.SetSpacing((1.7, 1.7, 1.7))
    subject.SetOrigin((-60.0, -70.0, -75.0))  # reaches 30+ mm beyond the box on every side
    tx = sitk.AffineTransform(3)
    tx.SetMatrix((1.02, 0.05, 0.0, -0.04, 0.98, 0.03, 0.0, -0.02, 1.01))
    tx.SetTranslation((1.3, -2.1, 0.7))
    a = sitk.GetArrayFromImage(resample_to(padded, subject, tx, "linear", default=1.0))
    b = sitk.GetArrayFromImage(resample_to(full, subject, tx, "linear", default=1.0))
    c = sitk.GetArrayFromImage(resample_to(face, subject, tx, "linear", default=1.0))
    np.testing.assert_array_equal(a, b)
    assert (a < 1).sum() > (c < 1).sum() + 1000  # the continuation is there
    assert pad_face_mask(sitk.GetImageFromArray(np.ones((5, 5, 5), np.float32)), 30.0).GetSize() \
        == (5, 5, 5)


def test_stored_grid_head_is_read_bit_for_bit_instead_of_computed(ref, tmp_path, monkeypatch):
    """A worker reads the run's written grid head: the same voxels and geometry as computing
    it, and no down-sampling; a missing or unreadable file falls back to computing."""
    import SimpleITK as sitk

    from isyb_dask.registration import heads

    computed = heads.head_on_grid(ref.head, 2.0)
    stored = heads.write_head_on_grid(ref.head, 2.0, tmp_path / "grid")
    assert stored == heads.write_head_on_grid(ref.head, 2.0, tmp_path / "grid")  # kept
    monkeypatch.setattr(heads, "_CACHE", {})  # a new worker process
    calls = []
    real = heads._compute
    monkeypatch.setattr(heads, "_compute", lambda *a: calls.append(a) or real(*a))
    read = heads.head_on_grid(ref.head, 2.0, stored=stored)
    assert calls == []
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(read),
                                  sitk.GetArrayViewFromImage(computed))
    for get in ("GetSpacing", "GetOrigin", "GetDirection", "GetPixelID"):
        assert getattr(read, get)() == getattr(computed, get)()
    assert heads.head_on_grid(ref.head, 2.0, stored=stored) is read  # cached per process
    bad = tmp_path / "bad.mha"
    bad.write_bytes(b"not an image")
    monkeypatch.setattr(heads, "_CACHE", {})
    again = heads.head_on_grid(ref.head, 2.0, stored=bad)
    assert len(calls) == 1
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(again),
                                  sitk.GetArrayViewFromImage(computed))
