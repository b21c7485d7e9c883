"""Tests of the group statistics stage (isyb_dask.stats.stage.run_stats).

``isyb_dask.testing.make_fake_store`` builds a small but complete ``results.zarr`` (every
group, through the real store helpers) with known ground truth.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from isyb_dask.errors import ConfigError
from isyb_dask.io.store import open_group, update_participants
from isyb_dask.stats.anova import split_plot_anova
from isyb_dask.stats.config import StatsConfig
from isyb_dask.stats.figures import stars
from isyb_dask.stats.posthoc import pairwise_emm
from isyb_dask.stats.split import assign_split
from isyb_dask.stats.stage import run_stats
from isyb_dask.testing.stores import TEMPLATES, make_fake_store



def test_run_stats_end_to_end(tmp_path):
    store = make_fake_store(tmp_path)
    cfg = StatsConfig()
    res = run_stats(store, tmp_path, cfg)
    assert res["skipped"] is None and res["split_source"] == "random"
    assert res["n_analysed"] == 27  # 30 - 2 excluded - 1 failed
    for name in ("anova_mixed.tsv", "anova_overlapping.tsv", "anova_within.tsv", "table1.tsv",
                 "figures/nmi_templates.png", "figures/nmi_templates.svg"):
        assert (tmp_path / name).stat().st_size > 100, name
    part = open_group(store, "participants").load()
    db = dict(zip(part.subject.values, part.database.values))
    included = [f"sub-{i:04d}" for i in range(4, 31)]
    assert sum(db[s] == "ISYB-1" for s in included) == round(27 * 89 / 215)
    assert {db[s] for s in included} == {"ISYB-1", "ISYB-2"}
    assert db["sub-0001"] == ""
    # the stage's numbers equal the engine applied to the same data
    deface = open_group(store, "deface").load()
    y = deface.nmi.sel(subject=included).values
    g = np.array([db[s] for s in included])
    ref = split_plot_anova(y, g).set_index("effect")
    tab = pd.read_csv(tmp_path / "anova_mixed.tsv", sep="\t").set_index("effect")
    np.testing.assert_allclose(tab.loc[ref.index, "F"], ref["F"], rtol=1e-5)
    assert tab.loc["template", "p"] < 1e-6  # ground-truth template effect is found
    over = pd.read_csv(tmp_path / "anova_overlapping.tsv", sep="\t").set_index("effect")
    assert over.loc["database:template", "df1"] == 4
    t1 = pd.read_csv(tmp_path / "table1.tsv", sep="\t")
    assert list(t1.database.unique()) == ["ISYB-1", "ISYB-2", "all"]
    ref1 = pairwise_emm(y, TEMPLATES, g)
    np.testing.assert_allclose(t1.se, ref1.se, rtol=1e-5)
    cm = t1[(t1.database == "all") & (t1.template_1 == "CN200") & (t1.template_2 == "MNI152")]
    assert abs(cm.difference.iloc[0] - 0.004) < 4 * cm.se.iloc[0]
    stats = xr.open_zarr(store, group="stats", consolidated=False).load()
    assert stats.anova_F.dims == ("design", "effect")
    assert list(stats.design.values) == ["mixed", "overlapping", "within"]
    np.testing.assert_allclose(stats.anova_F.sel(design="mixed", effect="template"),
                               ref.loc["template", "F"], rtol=1e-10)
    assert stats.posthoc_p_adj.dims == ("design", "database", "comparison")
    assert "ISYB" in stats.database.values
    # vertex-wise maps: population effect on ct, first 40 vertices
    assert stats.vertex_F.dims == ("metric", "vertex") and "hemi" in stats.coords
    assert stats.attrs["vertex_factor"] == "population"
    p = stats.vertex_p.sel(metric="ct").values
    assert np.mean(p[:40] < 0.05) > 0.7 and np.all(np.isnan(p[58:62]))
    assert np.isfinite(stats.vertex_p.sel(metric="alff").values[:40]).all()  # sub 6 dropped
    assert stats.vertex_n.sel(metric="alff").values[0] == 26  # sub-0006 flagged missing
    assert stats.vertex_n.sel(metric="ct").values[0] == 27


def test_split_from_column_and_overlapping_table1(tmp_path):
    store = make_fake_store(tmp_path, n=24, seed=3)
    subs = [f"sub-{i:04d}" for i in range(4, 25)]
    given = {s: {"database": "A" if i % 2 else "B"} for i, s in enumerate(subs)}
    update_participants(store, given)
    res = run_stats(store, tmp_path, StatsConfig(design="overlapping", combined_label="AB"))
    assert res["split_source"] == "column"
    t1 = pd.read_csv(tmp_path / "table1.tsv", sep="\t")
    assert set(t1.database) == {"A", "B", "AB"} and (t1.design == "overlapping").all()
    assert (t1.df == 2 * 21 - 3).all()


def test_too_few_subjects_skips(tmp_path):
    store = make_fake_store(tmp_path, n=5)
    res = run_stats(store, tmp_path, StatsConfig())
    assert res["skipped"] and not (tmp_path / "table1.tsv").exists()
    stats = open_group(store, "stats")
    assert "no ANOVA" in stats.attrs["skipped"]
    assert "vertex_F" not in stats  # 2 subjects in 2 populations: no error df either


def test_assign_split_random_and_column():
    subs = [f"sub-{i:04d}" for i in range(1, 216)]
    split, source = assign_split(subs, None, seed=215)
    assert source == "random"
    assert sum(v == "ISYB-1" for v in split.values()) == 89  # the paper's 89 / 126
    again, _ = assign_split(list(reversed(subs)), None, seed=215)
    assert again == split  # independent of input order
    other, _ = assign_split(subs, None, seed=1)
    assert other != split
    given = ["A" if i % 3 else "" for i in range(215)]
    mixed, source = assign_split(subs, given, seed=215)
    assert source == "column+random"
    assert all(mixed[s] == "A" for s, g in zip(subs, given) if g == "A")
    assert assign_split(["a", "b"], None, seed=0, fraction=0.01)[0] != {"a": "ISYB-2",
                                                                       "b": "ISYB-2"}


def test_config_validation_and_stars():
    with pytest.raises(ConfigError):
        StatsConfig(design="nested")
    with pytest.raises(ConfigError):
        StatsConfig(padjust="fdr")
    with pytest.raises(ConfigError):
        StatsConfig(split_fraction=1.5)
    assert [stars(p) for p in (1e-4, 5e-3, 0.03, 0.2, np.nan)] == [
        "***", "**", "*", "n.s.", "n.a."]


def test_missing_groups_raise(tmp_path):
    from isyb_dask.errors import InputError

    with pytest.raises(InputError, match="missing"):
        run_stats(tmp_path / "results.zarr", tmp_path, StatsConfig())


def test_rerun_keeps_or_redraws_the_random_split(tmp_path):
    store = make_fake_store(tmp_path, n=20, seed=4)
    run_stats(store, tmp_path, StatsConfig(split_seed=1))
    first = open_group(store, "participants").database.values.tolist()
    res = run_stats(store, tmp_path, StatsConfig(split_seed=1))
    assert res["split_source"] == "random"  # recorded random values are not a "column"
    assert open_group(store, "participants").database.values.tolist() == first
    run_stats(store, tmp_path, StatsConfig(split_seed=99))
    assert open_group(store, "participants").database.values.tolist() != first
