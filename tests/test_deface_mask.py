"""Identity-removing face masking on a real head and a generated head, every template.

Acceptance of issue 10 (masking half): for ``maskface`` and ``zero`` the facial skin moves by
at least 4 mm (median over the face columns along the face normal) and no voxel of the
subject's brain changes; for ``reface`` the face region's skin is closer to the template's
than to the original's. With the audit extra, no face is detected on the renders of the
masked volunteer, and the refaced embedding is closer to the template's face.

The face columns are the same for every template: the built-in (pydeface) face region
carried to the subject by its registration, restricted to the subject's head and continued
in front of it; that makes the depth change a template-independent measure.
"""

from __future__ import annotations

import nibabel as nb
import numpy as np
import pytest
import SimpleITK as sitk
from nibabel.affines import voxel_sizes

from isyb_dask import registration as reg
from isyb_dask.deface import stage as st
from isyb_dask.deface import template_fit
from isyb_dask.deface.config import DefaceConfig
from isyb_dask.deface.skin import extend_face_region, head_mask_full, skin_threshold
from isyb_dask.deface.skin_depth import skin_depth_map, surface_depth_change
from isyb_dask.deface.stage import run_deface
from isyb_dask.deface.templates import resolve_templates

METHODS = ("maskface", "zero", "reface")


def _templates(shared: "object", work, cache) -> list:
    from isyb_dask.atlas import get_reference_atlas

    tpl = shared / "templates"
    specs = [
        f"MNI152={tpl / 'mni152_fsl_T1_2mm_head.nii.gz'}:{tpl / 'mni152_2mm_defacemask_mydeface.nii.gz'}",
        f"SPM={tpl / 'spm_avg152T1_2mm_head.nii.gz'}:{tpl / 'spm_avg152T1_2mm_defacemask.nii.gz'}",
        f"MNIthree={tpl / 'mni152_fsl_T1_3mm_head.nii.gz'}",  # no mask: carried over
    ]
    return resolve_templates(specs, None, work, atlas=get_reference_atlas(), cache_dir=cache)


def _face_columns(data: np.ndarray, affine: np.ndarray, builtin) -> tuple[np.ndarray, tuple]:
    """Template-independent face region: pydeface's face, subject tissue, continued in front."""
    fixed = reg.to_sitk(data.astype(np.float32), affine)
    res = st.template_registration(fixed, builtin, DefaceConfig())
    face_s = st._images(builtin)[1]
    keep = reg.sitk_to_array(reg.resample_to(face_s, fixed, res.transform, "linear", default=1.0))
    inside = reg.sitk_to_array(reg.resample_to(face_s * 0 + 1, fixed, res.transform, "nearest")) > 0
    normal = st.face_normal(res.transform, affine)
    vox = voxel_sizes(affine)
    head = head_mask_full(data, vox, normal)
    region = extend_face_region(keep < 0.5, inside, normal, head=head, voxel_mm=vox)
    return region, normal


def _run_all(head_path, templates, out):
    img = reg.to_canonical(nb.load(head_path))
    data = np.asarray(img.dataobj, dtype=np.float64)
    runs = {}
    for m in METHODS:
        # the stage's own audit is off: the tests below audit the outputs themselves
        res = run_deface(head_path, "sub-x", templates, DefaceConfig(method=m, audit=False),
                         out / m)
        assert res["audit_note"].startswith("face audit skipped: switched off")
        arrs = {}
        for t in templates:
            p = out / m / "sub-x" / "anat" / f"sub-x_desc-defaced{t.name}_T1w.nii.gz"
            arrs[t.name] = np.asarray(reg.to_canonical(nb.load(p)).dataobj, dtype=np.float64)
        brain = np.asarray(reg.to_canonical(nb.load(res["brain_mask"])).dataobj) > 0
        runs[m] = (res, arrs, brain)
    region, normal = _face_columns(data, img.affine, templates[0])
    return data, img.affine, region, normal, runs, out


@pytest.fixture(scope="module")
def volunteer(shared_data, tmp_path_factory, template_cache):
    work = tmp_path_factory.mktemp("vol")
    templates = _templates(shared_data, work, template_cache)
    head = shared_data / "heads" / "xa30_sub1_T1w_tfl_2mm.nii.gz"
    return (templates, *_run_all(head, templates, work))


@pytest.fixture(scope="module")
def generated(shared_data, tmp_path_factory, template_cache):
    from isyb_dask.synth.cohort import generate_study

    work = tmp_path_factory.mktemp("gen")
    root = generate_study(work / "bids", 1, seed=3, voxel_size=2.0, modalities=("anat",))
    head = next(root.glob("sub-*/anat/*_T1w.nii.gz"))
    templates = _templates(shared_data, work, template_cache)
    return (templates, *_run_all(head, templates, work))


def _check_masking(case, method):
    templates, data, affine, region, normal, runs, _ = case
    res, arrs, brain = runs[method]
    vox = voxel_sizes(affine)
    assert brain.sum() * vox.prod() > 0.8e6  # a brain-sized protected mask (mm^3)
    for t in templates:
        row = res["templates"][t.name]
        assert row["error"] is None and row["transform_plausible"], (t.name, row)
        assert row["brain_voxels_changed"] == 0
        d = arrs[t.name]
        np.testing.assert_array_equal(d[brain], data[brain])  # the subject's own brain
        if method == "reface":
            continue
        dc = surface_depth_change(data, d, region, normal, vox)
        assert dc["columns"] > 500, (t.name, dc)
        assert dc["median_mm"] >= 4.0, (t.name, method, dc)
        assert row["surface_depth_change_mm"] >= 4.0
        assert 0.0 < row["nmi"] <= 1.0


def _check_reface(case, out):
    import json

    templates, data, affine, region, normal, runs = case
    res, arrs, _ = runs["reface"]
    vox = voxel_sizes(affine)
    fixed = reg.to_sitk(data.astype(np.float32), affine)
    thr = skin_threshold(data)
    before = skin_depth_map(data, thr, normal, vox)
    ax = list(range(3))
    ax.remove(normal[0])
    cols = np.moveaxis(region, normal[0], -1).any(axis=-1)
    for t in templates:
        r = res["templates"][t.name]
        assert r["error"] is None
        tres = st.template_registration(fixed, t, DefaceConfig())
        src = sitk.Cast(template_fit._template_head_full(str(t.head), 0.0), sitk.sitkFloat32)
        tpl = reg.sitk_to_array(reg.resample_to(src, fixed, tres.transform, "linear",
                                                default=-1e30))
        fov = tpl > -1e29
        tpl = np.where(fov, tpl, 0.0)
        # columns whose original skin, and 10 mm in front of it, lie inside the template FOV
        fov_n = np.moveaxis(fov, normal[0], -1)
        k = np.clip(np.nan_to_num(before / vox[normal[0]]).round().astype(int), 0,
                    fov_n.shape[-1] - 1)
        k2 = np.clip(k + int(round(10 / vox[normal[0]])), 0, fov_n.shape[-1] - 1)
        covered = (np.take_along_axis(fov_n, k[..., None], -1)[..., 0]
                   & np.take_along_axis(fov_n, k2[..., None], -1)[..., 0])
        after = skin_depth_map(arrs[t.name], thr, normal, vox)
        side = out / "reface" / "sub-x" / "anat" / f"sub-x_desc-defaced{t.name}_T1w.json"
        fit = json.loads(side.read_text())["RefaceIntensityFit"]
        # the template's skin at the iso-level that the intensity fit maps onto thr
        ref = skin_depth_map(tpl, (thr - fit["offset"]) / fit["scale"], normal, vox)
        ok = cols & covered & np.isfinite(before) & np.isfinite(after) & np.isfinite(ref)
        assert ok.sum() > 200, (t.name, int(ok.sum()))
        to_tpl = np.median(np.abs(after[ok] - ref[ok]))
        to_orig = np.median(np.abs(after[ok] - before[ok]))
        assert to_tpl < to_orig, (t.name, to_tpl, to_orig)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["maskface", "zero", "reface"])
def test_volunteer_every_template(volunteer, method):
    _check_masking(volunteer, method)
    if method == "reface":
        _check_reface(volunteer[:-1], volunteer[-1])


@pytest.mark.slow
@pytest.mark.parametrize("method", ["maskface", "zero", "reface"])
def test_generated_head_every_template(generated, method):
    _check_masking(generated, method)
    if method == "reface":
        _check_reface(generated[:-1], generated[-1])


def _audit_or_skip():
    audit = pytest.importorskip("isyb_dask.deface.audit")
    pytest.importorskip("dlib")
    return audit


@pytest.mark.slow
def test_volunteer_no_face_detected_after_maskface(volunteer):
    audit = _audit_or_skip()
    templates, data, affine, region, normal, runs, _ = volunteer
    out = audit.audit_defaced(data, affine, runs["maskface"][1], None, "xa30")
    for t in templates:
        assert out[t.name]["original_face_score"] > 0  # the original face is found
        assert not out[t.name]["face_detected"], (t.name, out[t.name]["view_scores"])


@pytest.mark.slow
def test_volunteer_no_face_detected_after_zero(volunteer):
    # the built-in pydeface mask cuts up to the frontal lobe; before the smooth cover over the
    # protected brain its gyri at the top of the cut scored 0.18 (HOG, threshold 0)
    audit = _audit_or_skip()
    templates, data, affine, region, normal, runs, _ = volunteer
    out = audit.audit_defaced(data, affine, runs["zero"][1], None, "xa30")
    for t in templates:
        assert out[t.name]["original_face_score"] > 0
        assert not out[t.name]["face_detected"], (t.name, out[t.name]["view_scores"])


@pytest.mark.slow
def test_volunteer_reface_embedding_closer_to_template(volunteer):
    audit = _audit_or_skip()
    from isyb_dask.deface.render import render_geometry, render_views

    templates, data, affine, region, normal, runs, _ = volunteer
    geom = render_geometry(data, affine)
    orig = audit.analyse_views(render_views(data, affine, geom))
    fixed = reg.to_sitk(data.astype(np.float32), affine)
    for t in templates:
        tres = st.template_registration(fixed, t, DefaceConfig())
        src = sitk.Cast(template_fit._template_head_full(str(t.head), 0.0), sitk.sitkFloat32)
        tpl = reg.sitk_to_array(reg.resample_to(src, fixed, tres.transform, "linear", default=0.0))
        tv = audit.analyse_views(render_views(tpl, affine, render_geometry(tpl, affine)), orig)
        rv = audit.analyse_views(render_views(runs["reface"][1][t.name], affine, geom), orig)
        emb = [np.stack([f.embedding for f in v]) for v in (orig, tv, rv)]
        assert audit.head_distance(emb[2], emb[1]) < audit.head_distance(emb[2], emb[0]), t.name
