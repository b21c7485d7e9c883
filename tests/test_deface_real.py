"""Deface the real 2 mm head of ../shared/data with the MNI152 2 mm template and KEEP mask."""

from __future__ import annotations

import nibabel as nb
import numpy as np
import pytest

from isyb_dask.deface.config import DefaceConfig
from isyb_dask.deface.skin_depth import surface_depth_change
from isyb_dask.deface.stage import run_deface
from isyb_dask.deface.templates import resolve_templates


@pytest.fixture(scope="module")
def real_run(shared_data, tmp_path_factory, template_cache):
    from isyb_dask.atlas import get_reference_atlas

    work = tmp_path_factory.mktemp("real")
    tpl = shared_data / "templates"
    spec = f"MNI152={tpl / 'mni152_fsl_T1_2mm_head.nii.gz'}:{tpl / 'mni152_2mm_defacemask_mydeface.nii.gz'}"
    templates = resolve_templates([spec], None, work, atlas=get_reference_atlas(),
                                  cache_dir=template_cache)
    head = shared_data / "heads" / "xa30_sub1_T1w_tfl_2mm.nii.gz"
    mni = [t for t in templates if t.name == "MNI152"]
    res = run_deface(head, "sub-xa30", mni, DefaceConfig(), work / "out")
    return head, res, work / "out" / "sub-xa30" / "anat"


@pytest.mark.slow
def test_real_head_brain_unchanged_face_obscured(real_run):
    head, res, anat = real_run
    row = res["templates"]["MNI152"]
    assert row["error"] is None and row["transform_plausible"], row
    assert row["brain_voxels_changed"] == 0
    orig = np.asarray(nb.load(head).dataobj)
    out = nb.load(anat / "sub-xa30_desc-defacedMNI152_T1w.nii.gz")
    d = np.asarray(out.dataobj)
    assert out.get_data_dtype() == nb.load(head).get_data_dtype() and d.shape == orig.shape
    brain = np.asarray(nb.load(res["brain_mask"]).dataobj) > 0
    assert 0.8e6 < brain.sum() * 8 < 2.0e6  # a plausible brain volume in mm^3
    np.testing.assert_array_equal(d[brain], orig[brain])
    changed = d != orig
    assert changed.sum() > 5000
    # the changed voxels lie in front of the brain and below its top (RAS: +j anterior, +k up)
    c_face = np.argwhere(changed).mean(axis=0)
    c_brain = np.argwhere(brain).mean(axis=0)
    top = np.argwhere(brain)[:, 2].max()
    # (maskface also covers the sides of the jaw and the neck in front of the ears that the
    # MNI152 mask removes, so the centre of the changes lies ~20 mm in front of the brain)
    assert c_face[1] > c_brain[1] + 5 and c_face[2] < c_brain[2] + 0.5 * (top - c_brain[2])
    # the facial surface moved (maskface replaces the skin by a smooth, shifted one; the
    # former criterion, loss of fine detail energy, no longer applies: the new skin edge is
    # sharp where the old one was)
    dc = surface_depth_change(orig.astype(float), d.astype(float), changed, (1, 1), np.full(3, 2.0))
    assert dc["median_mm"] >= 4.0, dc
    assert 0.0 < row["nmi"] < 1.0


@pytest.mark.slow
def test_real_head_face_hidden_at_every_iso_level(real_run):
    """A renderer's iso-level is its own choice. From a quarter of the Otsu threshold up to
    1.4 x it the defaced volunteer shows no face to dlib's detector (the opaque layer:
    with the former thin layer the face was found from 0.8 x on, best 1.07 at 1.0 x),
    while the original shows one up to 1.2 x (measured 2.59 at 0.5 x, 0.69 at 1.2 x)."""
    pytest.importorskip("dlib")
    pytest.importorskip("face_recognition_models")
    from isyb_dask.deface.audit import analyse_views
    from isyb_dask.deface.render import render_geometry, render_views

    head, res, anat = real_run
    img = nb.load(head)
    orig = np.asarray(img.dataobj, np.float32)
    d = np.asarray(nb.load(anat / "sub-xa30_desc-defacedMNI152_T1w.nii.gz").dataobj, np.float32)
    for fraction in (0.5, 0.8, 1.0, 1.2, 1.4):
        geom = render_geometry(orig, img.affine, threshold_fraction=fraction)
        best = max(f.score for f in analyse_views(render_views(d, img.affine, geom)))
        assert best < 0.0, (fraction, best)  # measured -0.42 .. -0.15
        if fraction <= 1.2:
            shown = max(f.score for f in analyse_views(render_views(orig, img.affine, geom)))
            assert shown > 0.3, (fraction, shown)
    # at a quarter of the threshold the defaced head is a blank, terraced egg; the detector
    # gives it at most a marginal score (measured 0.06), far below the original's (2.48)
    geom = render_geometry(orig, img.affine, threshold_fraction=0.25)
    best = max(f.score for f in analyse_views(render_views(d, img.affine, geom)))
    shown = max(f.score for f in analyse_views(render_views(orig, img.affine, geom)))
    assert best < 0.3 and shown > 2.0, (best, shown)
