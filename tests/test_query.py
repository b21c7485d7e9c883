"""Tests of isyb_dask.query.run_query on a complete fake store."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest

from isyb_dask.errors import ConfigError, InputError
from isyb_dask.io.store import open_group
from isyb_dask.query import run_query
from isyb_dask.stats.config import StatsConfig
from isyb_dask.stats.stage import run_stats
from isyb_dask.testing import make_fake_store


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("q")
    store = make_fake_store(out, n=12, seed=1)
    run_stats(store, out, StatsConfig())
    return out


def test_overview_lists_groups(out_dir):
    text = run_query(out_dir)
    for g in ("participants", "deface", "qc_anat", "qc_func", "surface", "group", "stats"):
        assert g in text
    rows = json.loads(run_query(out_dir, fmt="json"))["groups"]
    deface = next(r for r in rows if r["group"] == "deface")
    assert "template=3" in deface["dims"] and "nmi" in deface["variables"]


def test_deface_selection_csv_matches_store(out_dir):
    text = run_query(out_dir, "deface", subjects=["sub-0004", "sub-0007"],
                     templates=["MNI152"], fmt="csv")
    frame = pd.read_csv(io.StringIO(text))
    assert len(frame) == 2 and set(frame.template) == {"MNI152"}
    ref = open_group(out_dir / "results.zarr", "deface").nmi.sel(
        subject="sub-0007", template="MNI152").values
    got = frame.loc[frame.subject == "sub-0007", "nmi"].item()
    np.testing.assert_allclose(got, ref, rtol=1e-12)


def test_iqm_variables_and_participants(out_dir):
    rec = json.loads(run_query(out_dir, "qc_anat", subjects=["sub-0002"], metrics=["cnr"],
                               fmt="json"))
    (rows,) = rec.values()
    assert rows[0]["subject"] == "sub-0002" and set(rows[0]) == {"subject", "cnr"}
    text = run_query(out_dir, "participants", subjects=["sub-0003"])
    assert "failed" in text and "truncated" in text


def test_surface_is_summarised_over_vertices(out_dir):
    rec = json.loads(run_query(out_dir, "surface", subjects=["sub-0005"], metrics=["ct"],
                               fmt="json"))
    rows = next(v for k, v in rec.items() if "vertex" in k)
    assert len(rows) == 1
    vals = open_group(out_dir / "results.zarr", "surface").value.sel(
        subject="sub-0005", metric="ct").values
    np.testing.assert_allclose(rows[0]["value_mean"], np.nanmean(vals), rtol=1e-5)
    assert rows[0]["value_n_finite"] == np.isfinite(vals).sum()


def test_stats_tables(out_dir):
    text = run_query(out_dir, "stats", fmt="table")
    assert "anova_F" in text and "posthoc_p_adj" in text and "design x effect" in text


def test_errors(out_dir, tmp_path):
    with pytest.raises(ConfigError, match="available"):
        run_query(out_dir, "nope")
    with pytest.raises(ConfigError, match="sub-9999"):
        run_query(out_dir, "deface", subjects=["sub-9999"])
    with pytest.raises(ConfigError):
        run_query(out_dir, "qc_anat", metrics=["not_an_iqm"])
    with pytest.raises(ConfigError):
        run_query(out_dir, fmt="xml")
    with pytest.raises(InputError):
        run_query(tmp_path / "missing")
