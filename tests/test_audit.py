"""Face audit: detection, descriptors and re-identification on the real volunteer and
generated heads; group ranks and store variables; ``isyb audit``."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi

pytest.importorskip("dlib")
pytest.importorskip("face_recognition_models")

from isyb_dask import registration as reg  # noqa: E402
from isyb_dask.deface.audit import (  # noqa: E402
    analyse_views,
    audit_defaced,
    embeddings_path,
    head_distance,
)
from isyb_dask.deface.reid import rank1_summary, reidentification_table  # noqa: E402
from isyb_dask.deface.render import render_geometry, render_views  # noqa: E402

HEAD = "heads/xa30_sub1_T1w_tfl_2mm.nii.gz"
NORM = "heads/xa30_sub1_T1w_tfl_2mm_norm.nii.gz"


def _load(path):
    img = reg.to_canonical(nb.load(str(path)))
    return np.asarray(img.dataobj, dtype=np.float32), img.affine


def _zero_face(data, affine, y_mm=50.0):
    """Crude defacing: zero every voxel anterior to the coronal plane y = y_mm (RAS)."""
    ijk = np.indices(data.shape).reshape(3, -1).T
    y = (ijk @ affine[:3, :3].T + affine[:3, 3])[:, 1].reshape(data.shape)
    out = data.copy()
    out[y > y_mm] = 0
    return out


def _descriptors(data, affine, geom=None, reference=None):
    geom = geom or render_geometry(data, affine)
    faces = analyse_views(render_views(data, affine, geom), reference=reference)
    return faces, np.stack([f.embedding for f in faces]), geom


@pytest.fixture(scope="module")
def heads(shared_data, tmp_path_factory):
    """The volunteer (tfl), its prescan-normalised twin and three generated heads."""
    from isyb_dask.synth.cohort import generate_study

    root = generate_study(tmp_path_factory.mktemp("audit") / "bids", 3, "chinese", seed=1,
                          modalities=("anat",))
    out = {"tfl": _load(shared_data / HEAD), "norm": _load(shared_data / NORM)}
    for p in sorted(root.glob("sub-*/anat/*_T1w.nii.gz")):
        out[p.name.split("_")[0]] = _load(p)
    return out


@pytest.fixture(scope="module")
def audited(heads):
    """Faces and descriptors of every head's own renders (and the zeroed/blurred volunteer)."""
    res = {k: _descriptors(*v) for k, v in heads.items()}
    d, a = heads["tfl"]
    ref, _, geom = res["tfl"]
    res["zeroed"] = _descriptors(_zero_face(d, a), a, geom, ref)
    res["blurred"] = _descriptors(ndi.gaussian_filter(d, 2.0), a, geom, ref)
    return res


@pytest.mark.slow
def test_volunteer_detected_zeroed_not(audited):
    faces = audited["tfl"][0]
    assert all(f.detected for f in faces)
    assert faces[0].score > 1.0  # measured 2.58 (frontal), 1.71 / 1.80 (±30°)
    assert all(f.detected for f in audited["norm"][0])
    zeroed = audited["zeroed"][0]
    assert not any(f.detected for f in zeroed)  # measured best -0.0
    assert all(f.source == "reference" for f in zeroed)


@pytest.mark.slow
def test_volunteer_reidentified_zeroed_not(audited):
    names = ["tfl", "sub-0001", "sub-0002", "sub-0003"]
    gallery = {n: audited[n][1] for n in names}
    probes = {("tfl", "norm"): audited["norm"][1], ("tfl", "zero"): audited["zeroed"][1]}
    table = reidentification_table(gallery, probes).set_index("template")
    # another reconstruction of the same face is the nearest of four (measured 0.32 vs 0.51+)
    assert table.loc["norm", "reid_rank"] == 1
    assert table.loc["norm", "reid_distance"] < 0.6  # dlib's same-person threshold
    # the zeroed face is matched to nobody in particular: not rank 1 (measured 0.62, rank 4)
    assert table.loc["zero", "reid_rank"] > 1
    assert table.loc["zero", "reid_distance"] > table.loc["norm", "reid_distance"] + 0.2


@pytest.mark.slow
def test_blur_moves_embedding_beyond_reconstruction_spread(audited):
    e = audited["tfl"][1]
    spread = head_distance(e, audited["norm"][1])
    blurred = head_distance(e, audited["blurred"][1])
    assert blurred > spread + 0.1  # measured 0.51 vs 0.32
    # views of one face agree more than views of different heads... of the same view
    cross = head_distance(e, audited["sub-0001"][1])
    assert spread < cross


@pytest.mark.slow
def test_audit_defaced_files_and_modes(heads, tmp_path):
    d, a = heads["tfl"]
    res = audit_defaced(d, a, {"Zero": _zero_face(d, a)}, tmp_path, "sub-01")
    row = res["Zero"]
    assert row["face_detected"] is False and row["face_score"] <= 0.0
    assert row["reid_distance"] > 0.5 and row["original_face_score"] > 1.0
    png = tmp_path / "sub-01" / "figures" / "sub-01_desc-defacedZero_render.png"
    assert png.is_file() and row["render"] == str(png)
    from PIL import Image

    assert Image.open(png).size == (3 * 256, 256)
    assert not list(tmp_path.rglob("*original*"))  # no original render without the flag
    emb = embeddings_path(tmp_path, "sub-01")
    assert stat.S_IMODE(os.stat(emb).st_mode) == 0o600
    with np.load(emb) as z:
        assert set(z.files) == {"original", "defacedZero"} and z["original"].shape == (3, 128)
    from isyb_dask.deface.audit import attach_audit

    rows = {"Zero": {"nmi": 0.2}}
    assert attach_audit(rows, d, a, {"Zero": _zero_face(d, a)}, tmp_path / "att", "01") is None
    assert rows["Zero"]["nmi"] == 0.2 and rows["Zero"]["face_detected"] is False
    assert rows["Zero"]["reid_distance"] == pytest.approx(row["reid_distance"])
    audit_defaced(d, a, {}, tmp_path / "keep", "01", keep_original=True)
    orig = tmp_path / "keep" / "sub-01" / "figures" / "sub-01_desc-original_render.png"
    assert stat.S_IMODE(os.stat(orig).st_mode) == 0o600


@pytest.mark.slow
def test_noisy_head_is_audited_on_its_median(heads, tmp_path):
    """Rician noise of sigma 134 on the volunteer (WM mean 950): on the plain render the
    noise specks hid the original face (best 0.02); on the 3x3x3 median it is found (2.08),
    so the audit can judge, and the zeroed copy is still faceless."""
    from isyb_dask.deface.audit import attach_audit

    d, a = heads["tfl"]
    rng = np.random.default_rng(0)
    noisy = np.sqrt((d + rng.normal(0, 134.0, d.shape)) ** 2
                    + rng.normal(0, 134.0, d.shape) ** 2).astype(np.float32)
    rows = {"Zero": {}}
    assert attach_audit(rows, noisy, a, {"Zero": _zero_face(noisy, a)}, tmp_path, "01") is None
    row = rows["Zero"]
    assert row["rendered_on"] == "median"
    assert row["original_face_score"] > 1.0
    assert row["face_detected"] is False
    # a clean head renders as before, and an original without a face is said to be one
    rows = {"Zero": {}}
    zeroed = _zero_face(d, a)
    note = attach_audit(rows, zeroed, a, {"Zero": zeroed}, tmp_path / "z", "01")
    assert rows["Zero"]["rendered_on"] == "image"
    assert note is not None and note.startswith("face audit cannot judge")


def test_rank1_summary_known_values():
    rng = np.random.default_rng(0)
    gallery = {f"s{i}": rng.normal(size=(3, 128)) for i in range(8)}
    probes = {(s, "near"): e + rng.normal(scale=0.01, size=e.shape) for s, e in gallery.items()}
    probes |= {(s, "far"): rng.normal(size=(3, 128)) for s in gallery}
    table = reidentification_table(gallery, probes)
    near = table[table.template == "near"]
    assert (near.reid_rank == 1).all() and (near.n_candidates == 8).all()
    summary = rank1_summary(table, {(s, "near"): True for s in gallery}).set_index("template")
    # 8/8: exact Clopper-Pearson lower bound (alpha/2)^(1/n), p = (1/8)^8
    assert summary.loc["near", "ci_low"] == pytest.approx(0.025 ** (1 / 8), rel=1e-6)
    assert summary.loc["near", "ci_high"] == pytest.approx(1.0)
    assert summary.loc["near", "p_value"] == pytest.approx(0.125**8, rel=1e-6)
    assert summary.loc["near", "detection_rate"] == 1.0 and summary.loc["near", "chance"] == 0.125
    far = table[table.template == "far"]
    assert far.reid_rank.between(1, 8).all()
    assert summary.loc["far", "ci_low"] <= 0.125 <= summary.loc["far", "ci_high"] + 1e-12
    # subjects whose original shows no face are left out of the detection rate
    detected = {(s, "near"): i < 2 for i, s in enumerate(gallery)}  # s0, s1 detected
    judged = {(s, "near"): i != 0 for i, s in enumerate(gallery)}  # s0: no face originally
    part = rank1_summary(table, detected, judged=judged).set_index("template")
    assert part.loc["near", "n_judged"] == 7 and part.loc["near", "n_detected"] == 1
    assert part.loc["near", "detection_rate"] == pytest.approx(1 / 7)
    assert part.loc["near", "rank1"] == 8  # re-identification still counts every subject
    assert summary.loc["near", "n_judged"] == 8  # without ``judged``: all of them


def test_run_reid_audit_store(tmp_path):
    from isyb_dask.deface.audit import _save_embeddings
    from isyb_dask.deface.reid import run_reid_audit
    from isyb_dask.io.store import init_store, open_group, write_group

    subjects = ["sub-01", "sub-02", "sub-03"]
    store = init_store(tmp_path / "results.zarr", subjects, templates=["A", "B"], anat_iqms=[],
                       func_iqms=[], surface_metrics=["x"], hemi=["L"])
    import xarray as xr

    write_group(store, "stats", xr.Dataset({"anova_F": ("effect", [1.5])},
                                           coords={"effect": np.array(["t"], dtype=object)}))
    rng = np.random.default_rng(1)
    for s in subjects:
        e = rng.normal(size=(3, 128))
        _save_embeddings(embeddings_path(tmp_path, s), {
            "original": e, "defacedA": e + 0.01, "defacedB": rng.normal(size=(3, 128))})
    out = run_reid_audit(store, tmp_path)
    assert out["n_subjects"] == 3
    ranks = open_group(store, "deface")["reid_rank"].sel(template="A").values
    assert np.all(ranks == 1)
    st = open_group(store, "stats")
    assert float(st["anova_F"].values[0]) == 1.5  # existing statistics kept
    assert float(st["audit_rank1_rate"].sel(audit_template="A")) == 1.0
    assert float(st["audit_chance"].sel(audit_template="A")) == pytest.approx(1 / 3)
    tab = pd.read_csv(tmp_path / "deface_audit.tsv", sep="\t")
    assert list(tab.template) == ["A", "B"]


@pytest.mark.slow
def test_isyb_audit_cli(heads, tmp_path, capsys):
    from isyb_dask.cli.main import main
    from isyb_dask.deface.audit_cli import match_defaced

    bids, dfd = tmp_path / "bids", tmp_path / "defaced"
    for i, key in enumerate(["tfl", "sub-0001", "sub-0002"], start=1):
        d, a = heads[key]
        (bids / f"sub-0{i}" / "anat").mkdir(parents=True)
        nb.save(nb.Nifti1Image(d, a), bids / f"sub-0{i}" / "anat" / f"sub-0{i}_T1w.nii.gz")
        (dfd / f"sub-0{i}").mkdir(parents=True)
        nb.save(nb.Nifti1Image(_zero_face(d, a), a), dfd / f"sub-0{i}" / f"sub-0{i}_T1w_defaced.nii.gz")
    nb.save(nb.Nifti1Image(heads["norm"][0], heads["norm"][1]), dfd / "sub-01_desc-norm_T1w.nii.gz")
    nb.save(nb.Nifti1Image(np.zeros((2, 2, 2), np.uint8), np.eye(4)), dfd / "sub-01_desc-x_mask.nii.gz")
    nb.save(nb.Nifti1Image(np.zeros((2, 2, 2), np.uint8), np.eye(4)), dfd / "sub-010_T1w.nii.gz")
    pairs = match_defaced(bids, dfd)
    assert sorted(lbl for lbl, _ in pairs["sub-01"][1]) == ["T1w_defaced", "norm"]
    assert [lbl for lbl, _ in pairs["sub-02"][1]] == ["T1w_defaced"]
    out = tmp_path / "audit.tsv"
    assert main(["audit", str(bids), str(dfd), "--out", str(out)]) == 0
    table = pd.read_csv(out, sep="\t").set_index(["subject", "label"])
    assert table.loc[("sub-01", "norm"), "reid_rank"] == 1
    assert bool(table.loc[("sub-01", "norm"), "face_detected"])
    assert not bool(table.loc[("sub-01", "T1w_defaced"), "face_detected"])
    summary = pd.read_csv(tmp_path / "audit_summary.tsv", sep="\t").set_index("label")
    assert summary.loc["T1w_defaced", "n"] == 3 and summary.loc["norm", "rank1"] == 1
    assert "rank-1 re-identification" in capsys.readouterr().out
    assert main(["audit", str(bids), str(tmp_path / "missing")]) == 2


def test_missing_audit_extra_is_a_note(monkeypatch, tmp_path):
    import isyb_dask.deface.audit as audit_mod

    def unavailable(*args, **kwargs):
        raise audit_mod.AuditUnavailableError("no dlib")

    monkeypatch.setattr(audit_mod, "audit_defaced", unavailable)
    rows = {"A": {"nmi": 0.1}}
    note = audit_mod.attach_audit(rows, np.zeros((4, 4, 4)), np.eye(4), {"A": np.zeros((4, 4, 4))},
                                  tmp_path, "sub-01")
    assert "no dlib" in note and rows == {"A": {"nmi": 0.1}}


@pytest.mark.slow
def test_second_iso_level_finds_what_a_thin_layer_left(shared_data, tmp_path):
    """The volunteer masked with the former thin layer (10 mm, its own depth profile): the
    skin-level renders show no face, the Otsu-level ones do (orbits and nasal cavity under
    the layer), so face_detected is true; with the opaque layer neither level shows one."""
    import json

    from isyb_dask.atlas import get_reference_atlas
    from isyb_dask.deface.config import DefaceConfig
    from isyb_dask.deface.stage import run_deface
    from isyb_dask.deface.templates import builtin_template

    template = builtin_template(get_reference_atlas())
    head = shared_data / HEAD
    rows = {}
    for label, cfg in (("thin", DefaceConfig(skin_depth_mm=10.0, opaque_otsu=0.0)),
                       ("opaque", DefaceConfig())):
        res = run_deface(head, "sub-v", [template], cfg, tmp_path / label)
        rows[label] = res["templates"][template.name]
    thin, opaque = rows["thin"], rows["opaque"]
    assert thin["face_score"] < 0.0 < thin["face_score_deep"]  # measured -0.39, 1.23
    assert thin["face_detected"] is True
    assert opaque["face_detected"] is False and opaque["face_score_deep"] < 0.0  # -0.24
    side = json.loads(Path(opaque["render"]).with_suffix(".json").read_text())
    assert side["DeepIsoLevelOtsu"] == 1.0
    assert side["FaceScoreDeep"] == pytest.approx(opaque["face_score_deep"])
