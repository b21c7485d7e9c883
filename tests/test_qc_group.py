"""Tests of the group QC step on a small store (exclusion, tables, figures)."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from isyb_dask.io import store as st
from isyb_dask.qc.anat_iqms import ANAT_IQMS
from isyb_dask.qc.config import QCConfig
from isyb_dask.group.qc import run_qc_group

FUNC = ("snr", "fber", "efc", "fwhm_avg", "fd_mean", "dvars_std", "gcor", "tsnr")


@pytest.fixture(scope="module")
def _built(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("qcgroup")
    subjects = [f"sub-{i:02d}" for i in range(14)]
    path = tmp_path / "results.zarr"
    st.init_store(
        path,
        subjects,
        templates=["MNI152"],
        anat_iqms=ANAT_IQMS,
        func_iqms=FUNC,
        surface_metrics=["ALFF"],
        hemi=["L", "R"],
    )
    rng = np.random.default_rng(4)
    for i, subj in enumerate(subjects):
        anat = {name: float(rng.normal(10, 0.3)) for name in ANAT_IQMS}
        func = {name: float(rng.normal(5, 0.1)) for name in FUNC}
        func["fd_mean"] = 0.1 + 0.001 * i
        if subj == "sub-02":
            anat["snr_total"] = 1.0  # SD outlier
        if subj == "sub-05":
            func["fd_mean"] = 0.31  # motion
        if subj == "sub-09":
            anat["efc"] = 1e6  # would dominate the statistics, but this subject failed
        st.write_subject(path, "qc_anat", subj, anat)
        if subj != "sub-11":  # no BOLD for this one
            st.write_subject(path, "qc_func", subj, func)
        status = "failed" if subj == "sub-09" else "ok"
        st.write_subject(path, "participants", subj, {"status": status})
    return path, subjects


@pytest.fixture()
def store(_built, tmp_path):
    """A private copy of the module's store (the group step writes into it)."""
    path, subjects = _built
    copy = tmp_path / "results.zarr"
    shutil.copytree(path, copy)
    return copy, subjects


def test_group_step_excludes_and_writes(store, tmp_path):
    path, _subjects = store
    out = tmp_path / "out"
    res = run_qc_group(path, out, QCConfig())
    assert res["n_sample"] == 13
    assert set(res["excluded"]) == {"sub-02", "sub-05"}
    part = st.open_group(path, "participants").to_dataframe()
    assert part.loc["sub-02", "status"] == "excluded"
    assert part.loc["sub-02", "exclusion_rule"] == "sd"
    assert part.loc["sub-02", "exclusion_metric"] == "T1w:snr_total"
    assert part.loc["sub-05", "exclusion_rule"] == "sd;motion"  # fd_mean is also SD-screened
    assert part.loc["sub-05", "exclusion_metric"] == "bold:fd_mean"
    assert part.loc["sub-09", "status"] == "failed"
    assert part.loc["sub-01", "status"] == "ok"

    t1 = pd.read_csv(out / "group_T1w.tsv", sep="\t")
    assert list(t1.columns[:1]) == ["bids_name"]
    assert sorted(t1.columns[1:]) == list(t1.columns[1:])
    assert set(t1.columns[1:]) == set(ANAT_IQMS)
    assert "sub-09_T1w" not in set(t1["bids_name"]) and len(t1) == 13
    bold = pd.read_csv(out / "group_bold.tsv", sep="\t")
    assert len(bold) == 12 and "sub-11_bold" not in set(bold["bids_name"])
    trig = pd.read_csv(out / "group_qc_exclusions.tsv", sep="\t")
    assert set(trig["subject"]) == {"sub-02", "sub-05"}
    for name in ("qc_T1w", "qc_bold"):
        png = out / "figures" / f"{name}.png"
        svg = out / "figures" / f"{name}.svg"
        assert png.stat().st_size > 5000 and png.read_bytes()[:4] == b"\x89PNG"
        assert b"<svg" in svg.read_bytes()[:2000]


def test_group_step_is_idempotent_and_reversible(store, tmp_path):
    path, _ = store
    run_qc_group(path, tmp_path / "a", QCConfig(), figures=False)
    run_qc_group(path, tmp_path / "b", QCConfig(), figures=False)
    assert not (tmp_path / "b" / "figures").exists()
    part = st.open_group(path, "participants").to_dataframe()
    assert set(part.index[part["status"] == "excluded"]) == {"sub-02", "sub-05"}
    # looser rules: previously excluded subjects return to ok with cleared fields
    res = run_qc_group(
        path, tmp_path / "c", QCConfig(sd_limit=100.0, fd_mean_max=1.0), figures=False
    )
    assert res["excluded"] == {}
    part = st.open_group(path, "participants").to_dataframe()
    assert (part.drop(index="sub-09")["status"] == "ok").all()
    assert part.loc["sub-02", "exclusion_rule"] == ""


def test_group_step_with_no_usable_subject(store, tmp_path):
    path, subjects = store
    st.update_participants(path, {s: {"status": "failed"} for s in subjects})
    res = run_qc_group(path, tmp_path / "d", QCConfig())
    assert res["n_sample"] == 0 and res["excluded"] == {}
    t1 = pd.read_csv(tmp_path / "d" / "group_T1w.tsv", sep="\t")
    assert list(t1.columns) == ["bids_name"] and t1.empty
    assert (tmp_path / "d" / "figures" / "qc_T1w.png").stat().st_size > 1000
