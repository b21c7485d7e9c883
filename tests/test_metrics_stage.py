"""Tests of isyb_dask.metrics.stage (per-subject surface metrics) and its helpers."""

from __future__ import annotations

import dataclasses
import json

import nibabel as nb
import numpy as np
import pytest

from isyb_dask.errors import InputError
from isyb_dask.metrics.config import MetricsConfig
from isyb_dask.metrics.fslr import N_VERTICES_HEMI, load_fslr32k
from isyb_dask.metrics.names import SURFACE_METRICS
from isyb_dask.metrics.sampling import build_sampler
from isyb_dask.metrics.stage import bandpass, run_metrics, surface_vmhc
from isyb_dask.metrics.structural import read_structural_metrics


def _mni_series(symmetric: bool, n_t: int = 60, seed: int = 0):
    """4-D MNI-grid series whose voxel series depend smoothly on (|x| or x, y, z)."""
    rng = np.random.default_rng(seed)
    shape = (48, 56, 46)
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    affine[:3, 3] = [-94.0, -126.0, -74.0]
    ijk = np.indices(shape).reshape(3, -1).T
    xyz = ijk @ affine[:3, :3].T + affine[:3, 3]
    x = np.abs(xyz[:, 0]) if symmetric else xyz[:, 0]
    courses = rng.normal(size=(4, n_t))
    weights = np.stack(
        [
            np.cos(x / 25 + k) * np.sin(xyz[:, 1] / 30 + 2 * k) + np.cos(xyz[:, 2] / 35 - k)
            for k in range(4)
        ],
        axis=1,
    )
    data = weights @ courses
    if not symmetric:  # independent signals on each side of the midline
        other = weights @ rng.normal(size=(4, n_t))
        data = np.where((xyz[:, 0] < 0)[:, None], data, other)
    data += 0.05 * rng.normal(size=data.shape)
    return data.reshape(shape + (n_t,)), affine


def test_vmhc_of_mirrored_signals_is_high_and_independent_near_zero():
    surf = load_fslr32k()
    for symmetric in (True, False):
        data, affine = _mni_series(symmetric)
        series = build_sampler(data.shape, affine, surf=surf).apply(data)
        vmhc = surface_vmhc(series)
        np.testing.assert_array_equal(vmhc[:N_VERTICES_HEMI], vmhc[N_VERTICES_HEMI:])
        ok = np.isfinite(vmhc[:N_VERTICES_HEMI])
        assert ok.mean() > 0.85
        med = np.median(vmhc[:N_VERTICES_HEMI][ok])
        if symmetric:
            assert med > 1.5  # r > 0.9
        else:
            assert abs(med) < 0.35


def test_bandpass_keeps_band_and_removes_outside():
    tr, n = 2.0, 200
    t = np.arange(n) * tr
    inside = np.sin(2 * np.pi * 0.05 * t)  # 0.05 Hz = bin 20 exactly
    outside = np.sin(2 * np.pi * 0.2 * t)
    out = bandpass(np.stack([inside + outside + 3.0, outside]), tr, (0.01, 0.1))
    np.testing.assert_allclose(out[0], inside, atol=1e-5)
    np.testing.assert_allclose(out[1], 0.0, atol=1e-5)


def _gifti(path, values):
    img = nb.gifti.GiftiImage(darrays=[nb.gifti.GiftiDataArray(values.astype(np.float32))])
    nb.save(img, str(path))


def test_structural_metrics_from_gifti_and_cifti(tmp_path):
    surf = load_fslr32k()
    rng = np.random.default_rng(1)
    ct = rng.uniform(1.5, 4.0, 64984).astype(np.float32)
    sa = rng.uniform(0.5, 1.5, 64984).astype(np.float32)
    anat = tmp_path / "deriv" / "sub-01" / "anat"
    anat.mkdir(parents=True)
    _gifti(anat / "sub-01_hemi-L_space-fsLR_den-32k_thickness.shape.gii", ct[:N_VERTICES_HEMI])
    _gifti(anat / "sub-01_hemi-R_space-fsLR_den-32k_thickness.shape.gii", ct[N_VERTICES_HEMI:])
    # SA as a CIFTI dscalar over the cortex vertices (HCP grayordinates)
    verts = [
        np.flatnonzero(surf.cortex[:N_VERTICES_HEMI]),
        np.flatnonzero(surf.cortex[N_VERTICES_HEMI:]),
    ]
    bm = nb.cifti2.BrainModelAxis.from_surface(
        verts[0], N_VERTICES_HEMI, "CortexLeft"
    ) + nb.cifti2.BrainModelAxis.from_surface(verts[1], N_VERTICES_HEMI, "CortexRight")
    data = np.concatenate([sa[:N_VERTICES_HEMI][verts[0]], sa[N_VERTICES_HEMI:][verts[1]]])
    sc = nb.cifti2.ScalarAxis(["area"])
    nb.save(
        nb.Cifti2Image(data[None], header=(sc, bm)),
        str(anat / "sub-01.midthickness_area.32k_fs_LR.dscalar.nii"),
    )
    values, missing, sources = read_structural_metrics(tmp_path / "deriv", "sub-01", surf=surf)
    assert set(values) == {"CT", "SA"} and set(missing) == {"LGI"}
    for name, truth in (("CT", ct), ("SA", sa)):
        np.testing.assert_allclose(values[name][surf.cortex], truth[surf.cortex])
        assert np.isnan(values[name][~surf.cortex]).all()
    assert len(sources["CT"]) == 2
    # a GIFTI with the wrong number of vertices is an input error naming the file
    _gifti(anat / "sub-01_hemi-L_desc-lgi.shape.gii", np.ones(10242))
    _gifti(anat / "sub-01_hemi-R_desc-lgi.shape.gii", np.ones(10242))
    with pytest.raises(InputError, match="lgi.shape.gii"):
        read_structural_metrics(tmp_path / "deriv", "sub-01", surf=surf)
    _, missing, _ = read_structural_metrics(None, "sub-01", surf=surf)
    assert set(missing) == {"CT", "SA", "LGI"}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from isyb_dask.io.bids import index_bids, subject_inputs
    from isyb_dask.synth.cohort import generate_study

    root = tmp_path_factory.mktemp("msurf_study")
    generate_study(root / "bids", 1, seed=3, bold_volumes=60)
    inp = subject_inputs(index_bids(root / "bids"), ["sub-0001"])[0]
    truth = json.loads(
        (
            root / "bids" / "derivatives" / "synth-truth" / "sub-0001" / "sub-0001_truth.json"
        ).read_text()
    )
    return root, inp, truth


@pytest.fixture(scope="module")
def atlas(tmp_path_factory):
    from isyb_dask.atlas import get_reference_atlas

    return get_reference_atlas()


def test_missing_t1w_and_corrupt_input(atlas, tmp_path):
    from isyb_dask.io.bids import SubjectInputs

    good = tmp_path / "good_bold.nii.gz"
    rng = np.random.default_rng(0)
    nb.save(
        nb.Nifti1Image(rng.normal(100, 5, (8, 8, 6, 30)).astype(np.float32), np.eye(4)), str(good)
    )
    inp = SubjectInputs(subject="sub-0001", bold=good)
    res = run_metrics(inp, MetricsConfig(), tmp_path, atlas)
    assert res["values"].shape == (len(SURFACE_METRICS), 64984)
    assert np.isnan(res["values"]).all()
    assert set(res["missing"]) == set(SURFACE_METRICS)
    assert "T1w" in res["missing"]["ALFF"]
    bad = tmp_path / "sub-0001_task-rest_bold.nii.gz"
    bad.write_bytes(inp.bold.read_bytes()[:5000])  # truncated
    with pytest.raises(InputError, match="sub-0001_task-rest_bold.nii.gz"):
        run_metrics(dataclasses.replace(inp, bold=bad), MetricsConfig(), tmp_path, atlas)


@pytest.mark.slow
def test_run_metrics_on_generated_subject(study, atlas, tmp_path):
    _, inp, truth = study
    surf = load_fslr32k()
    out = tmp_path / "out"
    res = run_metrics(inp, MetricsConfig(), out, atlas, surf=surf)
    vals = res["values"]
    assert vals.shape == (13, 64984) and vals.dtype == np.float32
    assert res["missing"] == {}
    assert all(v.startswith("computed") for v in res["info"]["surface_provenance"].values())
    idx = {m: i for i, m in enumerate(SURFACE_METRICS)}
    for m in SURFACE_METRICS:
        v = vals[idx[m]]
        if m in res["missing"]:
            assert np.isnan(v).all()
            continue
        assert np.isnan(v[~surf.cortex]).all()
        assert np.isfinite(v[surf.cortex]).mean() > (0.8 if m == "CT" else 0.95), m
    med = {
        m: float(np.nanmedian(vals[idx[m]])) for m in SURFACE_METRICS if m not in res["missing"]
    }
    assert 0 < med["FA_GM"] < med["FA_WM"] < 0.9  # WM more anisotropic than the ribbon
    assert 3e-4 < med["MD_WM"] < 2e-3 and 3e-4 < med["MD_GM"] < 3e-3
    assert 0 < med["fALFF"] < 1 and 0 < med["ReHo"] < 1 and med["ALFF"] > 0
    assert 5 < med["CBF"] < 150
    assert med["VMHC"] > 0.2  # the generator puts symmetric components in the BOLD
    assert 0 < med["GMV"] < 1
    assert 1.0 < med["CT"] < 6.0 and 0.5 < med["SA"] < 5.0 and 1.0 < med["LGI"] < 5.0
    # registration chain: Jacobian of T1w -> MNI = det(head -> MNI) / det(subject scaling)
    expected = np.linalg.det(atlas.head_to_mni_affine()[:3, :3]) / np.prod(
        truth["head_scales_LR_AP_SI"]
    )
    assert res["info"]["t1w_to_mni_jacobian"] == pytest.approx(expected, rel=0.08)
    # files: GIFTI per metric and hemisphere equal the returned values; native and MNI maps
    anat = out / "sub-0001" / "anat"
    g = nb.load(str(anat / "sub-0001_hemi-R_space-fsLR_den-32k_desc-ReHo.shape.gii"))
    np.testing.assert_array_equal(g.darrays[0].data, vals[idx["ReHo"], N_VERTICES_HEMI:])
    g = nb.load(str(anat / "sub-0001_hemi-L_space-fsLR_den-32k_desc-CT.shape.gii"))
    np.testing.assert_array_equal(g.darrays[0].data, vals[idx["CT"], :N_VERTICES_HEMI])
    side = json.loads((anat / "sub-0001_hemi-L_space-fsLR_den-32k_desc-LGI.json").read_text())
    assert "computed" in json.dumps(side)
    thick = nb.load(str(anat / "sub-0001_desc-thickness_T1w.nii.gz"))
    assert 1.0 < np.median(thick.get_fdata()[thick.get_fdata() > 0]) < 8.0
    for rel in (
        "dwi/sub-0001_desc-FA_dwimap.nii.gz",
        "dwi/sub-0001_space-MNI152NLin2009aSym_desc-MD_dwimap.nii.gz",
        "func/sub-0001_task-rest_desc-fALFF_boldmap.nii.gz",
        "func/sub-0001_task-rest_space-MNI152NLin2009aSym_desc-ALFF_boldmap.nii.gz",
        "perf/sub-0001_desc-CBF_cbf.nii.gz",
        "perf/sub-0001_desc-brain_mask.nii.gz",
        "anat/sub-0001_space-MNI152NLin2009aSym_label-GM_desc-modulated_probseg.nii.gz",
    ):
        assert (out / "sub-0001" / rel).exists(), rel
        assert (out / "sub-0001" / rel.replace(".nii.gz", ".json")).exists()
    mni = nb.load(str(out / "sub-0001" / "perf"
                      / "sub-0001_space-MNI152NLin2009aSym_desc-CBF_cbf.nii.gz"))
    assert np.allclose(np.abs(np.diag(mni.affine)[:3]), 2.0)


def test_unusable_modality_is_missing_not_fatal(atlas, tmp_path, monkeypatch):
    """Orchestration with a stubbed anatomy: GMV from its GM posterior, short BOLD -> missing."""
    import SimpleITK as sitk

    import isyb_dask.metrics.stage as stage_mod
    from isyb_dask.anat.reference import SubjectAnatomy
    from isyb_dask.io.bids import SubjectInputs
    from isyb_dask.metrics.spaces import SpaceChain
    from isyb_dask.registration import AffineRegistration

    rng = np.random.default_rng(0)
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    affine[:3, 3] = [-94.0, -126.0, -74.0]
    shape = (48, 56, 46)
    t1w = tmp_path / "sub-0001_T1w.nii.gz"
    img = nb.Nifti1Image(rng.normal(100, 5, shape).astype(np.float32), affine)
    nb.save(img, str(t1w))
    bold = tmp_path / "sub-0001_task-rest_bold.nii.gz"
    nb.save(
        nb.Nifti1Image(rng.normal(100, 5, (8, 8, 6, 12)).astype(np.float32), np.eye(4)), str(bold)
    )
    ones = np.ones(shape, bool)
    anatomy = SubjectAnatomy(
        subject="sub-0001", t1w=t1w, t1w_sha256="0", image=img, canonical=img,
        n4=np.asarray(img.dataobj), bias=np.ones(shape, np.float32), head_mask=ones,
        brain_mask=ones,
        posteriors={k: np.full(shape, v, np.float32) for k, v in (("csf", .3), ("gm", .5),
                                                                  ("wm", .2))},
        atlas_registration=AffineRegistration(sitk.AffineTransform(3), -1.0, True, {}),
    )
    chain = SpaceChain(
        t1w_to_mni=np.eye(4),
        t1w_to_head=np.eye(4),
        brain=ones,
        priors=np.full((3,) + shape, 0.3, np.float32),
    )
    monkeypatch.setattr(stage_mod, "chain_from_anatomy", lambda *a, **k: chain)
    inp = SubjectInputs(subject="sub-0001", t1w=t1w, bold=bold)
    cfg = MetricsConfig(write_mni=False)
    res = run_metrics(inp, cfg, tmp_path / "out", atlas, anatomy=anatomy)
    surf = load_fslr32k()
    gmv = res["values"][SURFACE_METRICS.index("GMV")]
    np.testing.assert_allclose(gmv[surf.cortex], 0.5, rtol=1e-6)  # det = 1: density = p
    for m in ("ALFF", "fALFF", "ReHo", "VMHC"):
        assert "BOLD run unusable" in res["missing"][m]
        assert "bold.nii.gz" in res["missing"][m]
    assert res["missing"]["FA_WM"] == "no DWI" and res["missing"]["CBF"] == "no ASL"
    assert "GMV" not in res["missing"]
