"""Tests of the vertex-wise maps (isyb_dask.stats.vertexwise)."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from scipy import stats

from isyb_dask.errors import InputError
from isyb_dask.stats.anova import split_plot_anova
from isyb_dask.stats.vertexwise import vertexwise_between, vertexwise_split_plot


def _surface(n_sub=24, n_vert=300, seed=0):
    rng = np.random.default_rng(seed)
    groups = np.array(["Han"] * 10 + ["Other"] * (n_sub - 10))
    vals = rng.normal(1.0, 0.1, size=(n_sub, 2, n_vert)).astype(np.float32)
    # ground truth: a group effect of 0.2 on the first 50 vertices of metric 0
    vals[groups == "Other", 0, :50] += 0.2
    vals[:, 1, 250:] = np.nan  # medial wall
    vals[3, 0, 100] = np.nan  # one missing value
    da_ = xr.DataArray(vals, dims=("subject", "metric", "vertex"),
                       coords={"subject": [f"sub-{i:04d}" for i in range(n_sub)],
                               "metric": ["ct", "alff"]})
    return da_, groups


def test_between_equals_scipy_per_vertex():
    vals, groups = _surface()
    ds = vertexwise_between(vals, groups, vertex_chunk=64)
    assert isinstance(ds["F"].data, da.Array)
    assert ds["F"].data.chunks[-1][0] == 64
    out = ds.compute()
    for m, v in [(0, 0), (0, 60), (1, 7), (1, 249)]:
        x = vals.values[:, m, v]
        ref = stats.f_oneway(x[groups == "Han"], x[groups == "Other"])
        np.testing.assert_allclose(out.F.values[m, v], ref.statistic, rtol=1e-4)
        np.testing.assert_allclose(out.p.values[m, v], ref.pvalue, rtol=1e-3, atol=1e-12)
        np.testing.assert_allclose(out["diff"].values[m, v],
                                   x[groups == "Other"].mean() - x[groups == "Han"].mean(),
                                   rtol=1e-4)
    # vertex 100 of metric 0: subject 3 is NaN there, the others are used
    x = vals.values[:, 0, 100]
    ok = np.isfinite(x)
    ref = stats.f_oneway(x[ok & (groups == "Han")], x[ok & (groups == "Other")])
    np.testing.assert_allclose(out.F.values[0, 100], ref.statistic, rtol=1e-4)
    assert out.n.values[0, 100] == 23 and out.n.values[0, 99] == 24
    assert np.all(np.isnan(out.F.values[1, 250:]))
    assert out.attrs["levels"] == ["Han", "Other"] and out.attrs["df2"] == 22
    # ground truth: the effect region is detected, the null region mostly is not
    assert np.mean(out.p.values[0, :50] < 0.05) > 0.6
    assert np.mean(out.p.values[0, 50:250] < 0.05) < 0.15


def test_between_equals_engine_on_complete_data():
    from isyb_dask.stats.anova import split_plot_arrays
    from isyb_dask.stats.vertexwise import between_block

    rng = np.random.default_rng(2)
    y = rng.normal(size=(17, 50))
    codes = np.array([0] * 5 + [1] * 7 + [2] * 5)
    got = between_block(y.T, codes, 3)
    ref = split_plot_arrays(y[:, None, :], codes, 3, (1,), ("t",))[0]
    np.testing.assert_allclose(got[:, 0], ref["F"], rtol=1e-5)
    np.testing.assert_allclose(got[:, 1], ref["p"], rtol=1e-4, atol=1e-12)
    np.testing.assert_allclose(got[:, 2], ref["np2"], rtol=1e-5)
    y[:5, 3] = np.nan  # a whole group missing at one vertex -> NaN
    assert np.isnan(between_block(y.T, codes, 3)[3, :4]).all()


def test_split_plot_maps_equal_scalar_engine():
    rng = np.random.default_rng(1)
    n, k, v = 14, 3, 40
    y = rng.normal(size=(n, k, v)) + np.arange(k)[None, :, None] * 0.3
    groups = np.array(["a"] * 6 + ["b"] * 8)
    arr = xr.DataArray(y, dims=("subject", "template", "vertex"))
    for effect, label in (("within", "template"), ("interaction", "database:template"),
                          ("between", "database")):
        ds = vertexwise_split_plot(arr, "template", groups, effect=effect,
                                   vertex_chunk=16).compute()
        for j in (0, 17, 39):
            ref = split_plot_anova(y[:, :, j], groups).set_index("effect").loc[label]
            np.testing.assert_allclose(ds.F.values[j], ref.F, rtol=1e-4)
            np.testing.assert_allclose(ds.p.values[j], ref.p, rtol=1e-3, atol=1e-10)
            if effect != "between":
                np.testing.assert_allclose(ds.p_gg.values[j], ref.p_gg, rtol=1e-3, atol=1e-10)
    one = vertexwise_split_plot(arr, "template", None).compute()
    ref = split_plot_anova(y[:, :, 5]).iloc[0]
    np.testing.assert_allclose(one.F.values[5], ref.F, rtol=1e-4)


def test_bad_designs():
    vals, _ = _surface(n_sub=12)
    with pytest.raises(InputError):
        vertexwise_between(vals, ["x"] * 12)
    arr = xr.DataArray(np.ones((4, 3, 2)), dims=("subject", "t", "vertex"))
    with pytest.raises(InputError):
        vertexwise_split_plot(arr, "t", None, effect="between")
