"""CT/SA/LGI on fsLR vertices (sphere phantom), fMRIPrep CIFTI input and stage wiring."""

from __future__ import annotations

import json

import nibabel as nb
import numpy as np
import pytest

from isyb_dask.metrics.fslr import N_VERTICES_HEMI, load_fslr32k
from isyb_dask.metrics.morphometry import place_fslr_affine, surface_morphometry
from isyb_dask.metrics.structural import read_structural_metrics
from isyb_dask.testing import shell_phantom


def _ball_phantom(n=100, r_wm=30.0, thick=3.0, sub=2):
    """WM ball and GM shell (fractions), 1 mm voxels, centred at the world origin."""
    gm, wm = shell_phantom(n, r_wm, thick, sub)
    gmwm = (gm + wm).astype(np.float32)
    wm = wm.astype(np.float32)
    aff = np.eye(4)
    aff[:3, 3] = -(n - 1) / 2
    post = np.stack([1 - gmwm, gmwm - wm, wm])
    return post, aff


def _sphere_surfaces(fs, r_wm, thick):
    out = {}
    for h in ("L", "R"):
        s = fs.coords["sphere"][fs.hemi_slice(h)]
        u = s / np.linalg.norm(s, axis=1, keepdims=True)
        out[h] = {
            "white": u * r_wm,
            "midthickness": u * (r_wm + thick / 2),
            "pial": u * (r_wm + thick),
        }
    return out


def test_sphere_phantom_ct_sa_lgi():
    fs = load_fslr32k()
    r_wm, thick = 30.0, 3.0
    post, aff = _ball_phantom(r_wm=r_wm, thick=thick)
    res = surface_morphometry(post, aff, _sphere_surfaces(fs, r_wm, thick), fs)
    for m in ("CT", "SA", "LGI"):
        assert res[m].shape == (64984,) and res[m].dtype == np.float32
        assert np.isnan(res[m][~fs.cortex]).all()
        assert np.isfinite(res[m][fs.cortex]).all(), m
    assert abs(np.median(res["CT"][fs.cortex]) - thick) < 0.2
    # SA: each hemisphere is a whole sphere of the midthickness radius here
    total = res["info"]["sa_total_with_medial_wall_mm2"]
    assert total == pytest.approx(2 * 4 * np.pi * (r_wm + thick / 2) ** 2, rel=0.01)
    assert res["SA"][fs.cortex].sum() == pytest.approx(res["info"]["sa_total_mm2"], rel=1e-5)
    # a sphere is its own hull: LGI 1
    assert np.median(res["LGI"][fs.cortex]) == pytest.approx(1.0, abs=0.05)
    assert res["thickness"].shape == post.shape[1:]


def test_place_fslr_affine_inverts_the_chain():
    fs = load_fslr32k()
    a = np.diag([1.1, 0.9, 1.05, 1.0])
    a[:3, 3] = [3, -4, 5]
    surfs = place_fslr_affine(a, fs)
    back = surfs["R"]["pial"] @ a[:3, :3].T + a[:3, 3]
    np.testing.assert_allclose(back, fs.coords["pial"][N_VERTICES_HEMI:], atol=1e-9)


def _cifti_91k(path, values, fs):
    """fMRIPrep-like 91k dscalar: both cortices (grayordinates) plus a subcortical model."""
    verts = [
        np.flatnonzero(fs.cortex[:N_VERTICES_HEMI]),
        np.flatnonzero(fs.cortex[N_VERTICES_HEMI:]),
    ]
    bm = (
        nb.cifti2.BrainModelAxis.from_surface(verts[0], N_VERTICES_HEMI, "CortexLeft")
        + nb.cifti2.BrainModelAxis.from_surface(verts[1], N_VERTICES_HEMI, "CortexRight")
        + nb.cifti2.BrainModelAxis.from_mask(
            np.pad(np.ones((2, 1, 1), bool), ((40, 49), (50, 58), (30, 60))),
            affine=np.diag([2, 2, 2, 1.0]),
            name="thalamus_left",
        )
    )
    data = np.concatenate(
        [values[:N_VERTICES_HEMI][verts[0]], values[N_VERTICES_HEMI:][verts[1]], [7.0, 7.0]]
    )
    header = (nb.cifti2.ScalarAxis(["x"]), bm)
    nb.save(nb.Cifti2Image(data[None].astype(np.float32), header=header), str(path))


def test_fmriprep_morphometric_cifti_with_sessions(tmp_path):
    fs = load_fslr32k()
    rng = np.random.default_rng(2)
    ses1, ses2 = rng.uniform(1.5, 4, 64984), rng.uniform(1.5, 4, 64984)
    anat = tmp_path / "sub-01" / "ses-1" / "anat"
    anat.mkdir(parents=True)
    anat2 = tmp_path / "sub-01" / "ses-2" / "anat"
    anat2.mkdir(parents=True)
    _cifti_91k(anat / "sub-01_ses-1_space-fsLR_den-91k_thickness.dscalar.nii", ses1, fs)
    _cifti_91k(anat2 / "sub-01_ses-2_space-fsLR_den-91k_thickness.dscalar.nii", ses2, fs)
    _cifti_91k(anat2 / "sub-01_ses-2_space-fsLR_den-91k_curv.dscalar.nii", ses2 * 0, fs)
    _cifti_91k(anat2 / "sub-01_ses-2_space-fsLR_den-91k_sulc.dscalar.nii", ses2 * 0, fs)
    for ses, truth in (("2", ses2), ("1", ses1)):
        vals, missing, src = read_structural_metrics(tmp_path, "sub-01", surf=fs, session=ses)
        assert set(vals) == {"CT"} and set(missing) == {"SA", "LGI"}  # curv/sulc not metrics
        np.testing.assert_allclose(vals["CT"][fs.cortex], truth[fs.cortex], rtol=1e-6)
        assert np.isnan(vals["CT"][~fs.cortex]).all()
        assert src["CT"][0].name == f"sub-01_ses-{ses}_space-fsLR_den-91k_thickness.dscalar.nii"


def test_stage_freesurfer_values_win_and_provenance(tmp_path, monkeypatch):
    """run_metrics with a stubbed anatomy and chain: CT read, SA and LGI computed."""
    import isyb_dask.metrics.stage as stage_mod
    from isyb_dask.io.bids import SubjectInputs
    from isyb_dask.metrics.config import MetricsConfig
    from isyb_dask.metrics.names import SURFACE_METRICS
    from isyb_dask.metrics.spaces import SpaceChain

    fs = load_fslr32k()
    post, aff = _ball_phantom(n=64, r_wm=20.0, thick=3.0, sub=1)
    t1w = tmp_path / "sub-0001_T1w.nii.gz"
    nb.save(nb.Nifti1Image((100 * post[2] + 60 * post[1]).astype(np.float32), aff), str(t1w))
    shape = post.shape[1:]
    chain = SpaceChain(
        t1w_to_mni=np.diag([3.0, 3.0, 3.0, 1.0]),  # S1200 surfaces shrink onto the phantom
        t1w_to_head=np.eye(4),
        brain=np.ones(shape, bool),
        priors=np.full((3, *shape), 1 / 3, np.float32),
    )
    monkeypatch.setattr(stage_mod, "chain_from_anatomy", lambda *a, **k: chain)
    import SimpleITK as sitk

    from isyb_dask.anat.reference import SubjectAnatomy
    from isyb_dask.registration import AffineRegistration

    img = nb.load(str(t1w))
    anatomy = SubjectAnatomy(
        subject="sub-0001", t1w=t1w, t1w_sha256="0", image=img, canonical=img,
        n4=np.asarray(img.dataobj), bias=np.ones(shape, np.float32),
        head_mask=np.ones(shape, bool), brain_mask=np.ones(shape, bool),
        posteriors={k: np.asarray(post[i], np.float32) for i, k in enumerate(("csf", "gm", "wm"))},
        atlas_registration=AffineRegistration(sitk.AffineTransform(3), -1.0, True, {}),
    )
    deriv = tmp_path / "fmriprep" / "sub-0001" / "anat"
    deriv.mkdir(parents=True)
    fs_ct = np.full(64984, 2.75)
    _cifti_91k(deriv / "sub-0001_space-fsLR_den-91k_thickness.dscalar.nii", fs_ct, fs)
    cfg = MetricsConfig(write_mni=False, surface_derivatives=tmp_path / "fmriprep")
    inp = SubjectInputs(subject="sub-0001", t1w=t1w)
    res = stage_mod.run_metrics(inp, cfg, tmp_path / "out", None, anatomy=anatomy)
    idx = {m: i for i, m in enumerate(SURFACE_METRICS)}
    prov = res["info"]["surface_provenance"]
    assert prov["CT"].startswith("FreeSurfer-derived") and "den-91k_thickness" in prov["CT"]
    assert prov["SA"].startswith("computed") and prov["LGI"].startswith("computed")
    np.testing.assert_allclose(res["values"][idx["CT"]][fs.cortex], 2.75)
    for m in ("CT", "SA", "LGI"):
        assert m not in res["missing"]
        assert np.isfinite(res["values"][idx[m]][fs.cortex]).all()
    anat = tmp_path / "out" / "sub-0001" / "anat"
    side = json.loads((anat / "sub-0001_hemi-R_space-fsLR_den-32k_desc-CT.json").read_text())
    assert side["provenance"]["settings"]["provenance"].startswith("FreeSurfer-derived")
    thick = nb.load(str(anat / "sub-0001_desc-thickness_T1w.nii.gz")).get_fdata()
    assert abs(np.median(thick[thick > 0]) - 3.0) < 0.3
    # switched off: the FreeSurfer CT is still read, SA and LGI are missing with the reason
    import dataclasses

    off = stage_mod.run_metrics(inp, dataclasses.replace(cfg, morphometry=False),
                                tmp_path / "out_off", None, anatomy=anatomy)
    np.testing.assert_allclose(off["values"][idx["CT"]][fs.cortex], 2.75)
    for m in ("SA", "LGI"):
        assert off["missing"][m] == "not computed: metrics.morphometry is off"
        assert np.isnan(off["values"][idx[m]]).all()
    assert not (tmp_path / "out_off" / "sub-0001" / "anat"
                / "sub-0001_desc-thickness_T1w.nii.gz").exists()
