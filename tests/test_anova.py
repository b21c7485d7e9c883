"""Tests of isyb_dask.stats.anova against statsmodels, pingouin and textbook formulas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import stats
from statsmodels.stats.anova import AnovaRM, anova_lm

from isyb_dask.errors import InputError
from isyb_dask.stats.anova import (
    ANOVA_COLUMNS,
    orthonormal_contrasts,
    overlapping_anova,
    split_plot_anova,
    split_plot_arrays,
    stack_overlapping,
)

pg = pytest.importorskip("pingouin")  # GPL: test-only oracle


def _mixed_data(n_per, k=3, seed=0):
    """Subjects x templates NMI-like data with a group x template interaction."""
    rng = np.random.default_rng(seed)
    groups = np.concatenate([[f"G{g}"] * n for g, n in enumerate(n_per)])
    n = groups.size
    subj = rng.normal(0.0, 0.02, size=(n, 1))
    cov = np.array([[1.0, 0.6, 0.2], [0.6, 1.0, 0.5], [0.2, 0.5, 1.0]])[:k, :k] * 1e-4
    noise = rng.multivariate_normal(np.zeros(k), cov, size=n)
    tmpl = np.linspace(0.0, 0.004, k)
    inter = np.array([0.001 * (g == "G1") for g in groups])[:, None] * np.arange(k)
    return 0.3 + subj + tmpl + inter + noise, groups


def _long(y, groups=None):
    n, k = y.shape
    df = pd.DataFrame({"subject": np.repeat(np.arange(n), k),
                       "template": np.tile([f"T{j}" for j in range(k)], n),
                       "nmi": y.ravel()})
    if groups is not None:
        df["database"] = np.repeat(groups, k)
    return df


def test_contrasts_orthonormal():
    for k in (2, 3, 5):
        c = orthonormal_contrasts(k)
        np.testing.assert_allclose(c @ c.T, np.eye(k - 1), atol=1e-12)
        np.testing.assert_allclose(c @ np.ones(k), 0.0, atol=1e-12)


def test_oneway_within_equals_anovarm_and_pingouin():
    y, _ = _mixed_data([30], seed=1)
    tab = split_plot_anova(y).set_index("effect")
    assert list(tab.reset_index().columns) == list(ANOVA_COLUMNS)
    ref = AnovaRM(_long(y), "nmi", "subject", within=["template"]).fit().anova_table
    np.testing.assert_allclose(tab.loc["template", "F"], ref.loc["template", "F Value"],
                               rtol=1e-10)
    assert tab.loc["template", "df1"] == ref.loc["template", "Num DF"]
    assert tab.loc["template", "df2"] == ref.loc["template", "Den DF"]
    np.testing.assert_allclose(tab.loc["template", "p"], ref.loc["template", "Pr > F"], rtol=1e-8)
    aov = pg.rm_anova(data=_long(y), dv="nmi", within="template", subject="subject",
                      correction=True, effsize="np2")
    np.testing.assert_allclose(tab.loc["template", "eps_gg"], aov["eps"].iloc[0], rtol=1e-10)
    pcol = "p_GG_corr" if "p_GG_corr" in aov else "p-GG-corr"
    np.testing.assert_allclose(tab.loc["template", "p_gg"], aov[pcol].iloc[0], rtol=1e-8)
    np.testing.assert_allclose(tab.loc["template", "np2"], aov["np2"].iloc[0], rtol=1e-10)
    hf = min(pg.epsilon(_long(y), dv="nmi", within="template", subject="subject",
                        correction="hf"), 1.0)
    np.testing.assert_allclose(tab.loc["template", "eps_hf"], hf, rtol=1e-10)
    wide = pd.DataFrame(y)
    sph = pg.sphericity(wide)
    np.testing.assert_allclose(tab.loc["template", "mauchly_W"], sph[1], rtol=1e-10)
    np.testing.assert_allclose(tab.loc["template", "mauchly_chi2"], sph[2], rtol=1e-10)
    assert tab.loc["template", "mauchly_df"] == sph[3]
    np.testing.assert_allclose(tab.loc["template", "mauchly_p"], sph[4], rtol=1e-8)


def test_twoway_within_equals_anovarm_and_pingouin_eps():
    rng = np.random.default_rng(3)
    n, a, b = 20, 3, 4
    y = rng.normal(size=(n, a, b)) + rng.normal(size=(n, 1, 1)) + np.arange(b) * 0.3
    y[:, 1, :] += np.linspace(0, 0.5, b)
    tab = split_plot_anova(y, within=("A", "B")).set_index("effect")
    long = pd.DataFrame({"s": np.repeat(np.arange(n), a * b),
                         "A": np.tile(np.repeat(np.arange(a), b), n),
                         "B": np.tile(np.arange(b), n * a), "y": y.ravel()})
    ref = AnovaRM(long, "y", "s", within=["A", "B"]).fit().anova_table
    for eff in ("A", "B", "A:B"):
        np.testing.assert_allclose(tab.loc[eff, "F"], ref.loc[eff, "F Value"], rtol=1e-9)
        assert tab.loc[eff, "df1"] == ref.loc[eff, "Num DF"]
        assert tab.loc[eff, "df2"] == ref.loc[eff, "Den DF"]
        np.testing.assert_allclose(tab.loc[eff, "p"], ref.loc[eff, "Pr > F"], rtol=1e-7)
    aov = pg.rm_anova(data=long, dv="y", within=["A", "B"], subject="s").set_index("Source")
    for eff, src in (("A", "A"), ("B", "B"), ("A:B", "A * B")):
        np.testing.assert_allclose(tab.loc[eff, "eps_gg"], aov.loc[src, "eps"], rtol=1e-9)


def _textbook_mixed_balanced(y, groups):
    """Classical split-plot sums of squares (Winer / Kirk), balanced groups."""
    levels = np.unique(groups)
    n, k = y.shape
    grand = y.mean()
    subj = y.mean(1)
    gm = {g: y[groups == g].mean() for g in levels}
    tm = y.mean(0)
    gtm = {g: y[groups == g].mean(0) for g in levels}
    ng = n // len(levels)
    ss_g = k * sum(ng * (gm[g] - grand) ** 2 for g in levels)
    ss_sg = k * sum(((subj[groups == g] - gm[g]) ** 2).sum() for g in levels)
    ss_t = n * ((tm - grand) ** 2).sum()
    ss_gt = ng * sum(((gtm[g] - gm[g] - tm + grand) ** 2).sum() for g in levels)
    ss_ts = sum(((y[groups == g] - subj[groups == g, None] - gtm[g] + gm[g]) ** 2).sum()
                for g in levels)
    G = len(levels)
    return {"database": (ss_g, G - 1, ss_sg, n - G),
            "template": (ss_t, k - 1, ss_ts, (k - 1) * (n - G)),
            "database:template": (ss_gt, (G - 1) * (k - 1), ss_ts, (k - 1) * (n - G))}


def test_mixed_balanced_equals_textbook_and_pingouin():
    y, g = _mixed_data([15, 15, 15], seed=4)
    tab = split_plot_anova(y, g).set_index("effect")
    for eff, (ss, df1, sse, df2) in _textbook_mixed_balanced(y, g).items():
        np.testing.assert_allclose(tab.loc[eff, "ss"], ss, rtol=1e-9)
        np.testing.assert_allclose(tab.loc[eff, "ss_error"], sse, rtol=1e-9)
        assert (tab.loc[eff, "df1"], tab.loc[eff, "df2"]) == (df1, df2)
        f = (ss / df1) / (sse / df2)
        np.testing.assert_allclose(tab.loc[eff, "F"], f, rtol=1e-9)
        np.testing.assert_allclose(tab.loc[eff, "p"], stats.f.sf(f, df1, df2), rtol=1e-8)
    aov = pg.mixed_anova(data=_long(y, g), dv="nmi", within="template", between="database",
                         subject="subject").set_index("Source")
    for eff, src in (("database", "database"), ("template", "template"),
                     ("database:template", "Interaction")):
        np.testing.assert_allclose(tab.loc[eff, "F"], aov.loc[src, "F"], rtol=1e-8)


def test_mixed_unbalanced_equals_type3_ols():
    """Type III via OLS on orthonormal contrast scores (any orthonormal basis)."""
    y, g = _mixed_data([9, 23, 14], seed=5)
    tab = split_plot_anova(y, g).set_index("effect")
    # an orthonormal basis different from the Helmert one used by the package
    q, _ = np.linalg.qr(np.column_stack([np.ones(3), [-1, 0, 1], [1, -2, 1.0]]))
    basis = q[:, 1:].T
    z = y @ basis.T
    ss_t = ss_gt = sse = 0.0
    for c in range(z.shape[1]):
        fit = smf.ols("z ~ C(g, Sum)", pd.DataFrame({"z": z[:, c], "g": g})).fit()
        a3 = anova_lm(fit, typ=3)
        ss_t += a3.loc["Intercept", "sum_sq"]
        ss_gt += a3.loc["C(g, Sum)", "sum_sq"]
        sse += a3.loc["Residual", "sum_sq"]
    s = y.sum(1) / np.sqrt(3)
    a3b = anova_lm(smf.ols("s ~ C(g, Sum)", pd.DataFrame({"s": s, "g": g})).fit(), typ=3)
    np.testing.assert_allclose(tab.loc["template", "ss"], ss_t, rtol=1e-9)
    np.testing.assert_allclose(tab.loc["database:template", "ss"], ss_gt, rtol=1e-9)
    np.testing.assert_allclose(tab.loc["template", "ss_error"], sse, rtol=1e-9)
    np.testing.assert_allclose(tab.loc["database", "ss"], a3b.loc["C(g, Sum)", "sum_sq"],
                               rtol=1e-9)
    np.testing.assert_allclose(tab.loc["database", "ss_error"], a3b.loc["Residual", "sum_sq"],
                               rtol=1e-9)
    assert tab.loc["template", "df2"] == 2 * (46 - 3)
    # GG epsilon from the pooled within-group covariance == pingouin on group-centred data
    centred = y.copy()
    for lev in np.unique(g):
        centred[g == lev] -= centred[g == lev].mean(0)
    eps_c = pg.epsilon(pd.DataFrame(centred))
    np.testing.assert_allclose(tab.loc["template", "eps_gg"], eps_c, rtol=1e-10)
    assert tab.loc["database:template", "eps_gg"] == tab.loc["template", "eps_gg"]
    # Huynh-Feldt with N and G (SPSS): (N p e - 2) / (p (N - G - p e)), p = k - 1 = 2
    np.testing.assert_allclose(tab.loc["template", "eps_hf"],
                               min(1.0, (46 * 2 * eps_c - 2) / (2 * (46 - 3 - 2 * eps_c))),
                               rtol=1e-10)
    eps = tab.loc["template", "eps_gg"]
    np.testing.assert_allclose(
        tab.loc["database:template", "p_gg"],
        stats.f.sf(tab.loc["database:template", "F"], 4 * eps, 86 * eps), rtol=1e-8)


def test_two_levels_sphericity_trivial():
    y, g = _mixed_data([10, 12], k=2, seed=6)
    tab = split_plot_anova(y, g).set_index("effect")
    assert tab.loc["template", "eps_gg"] == 1.0
    assert tab.loc["template", "mauchly_W"] == 1.0
    assert np.isnan(tab.loc["template", "mauchly_p"])
    np.testing.assert_allclose(tab.loc["template", "p_gg"], tab.loc["template", "p"])
    # k = 2, one group: F equals the squared paired t statistic
    t = stats.ttest_rel(y[:, 0], y[:, 1]).statistic
    np.testing.assert_allclose(split_plot_anova(y).loc[0, "F"], t**2, rtol=1e-10)


def test_overlapping_layout_df_and_stacking():
    y, g = _mixed_data([8, 12], seed=7)
    tab = overlapping_anova(y, g).set_index("effect")
    assert tab.loc["database:template", "df1"] == 4  # the paper's DoF for 3 x 3
    assert tab.loc["template", "df2"] == 2 * (40 - 3)
    y_st, g_st = stack_overlapping(y, g)
    assert y_st.shape == (40, 3) and (g_st == "ISYB").sum() == 20
    ref = split_plot_anova(y_st, g_st).set_index("effect")
    pd.testing.assert_frame_equal(tab, ref)


def test_vectorised_core_matches_scalar():
    y, g = _mixed_data([7, 9], seed=8)
    rng = np.random.default_rng(0)
    many = y[:, :, None] + rng.normal(0, 1e-3, size=(16, 3, 5))
    codes = (g == "G1").astype(int)
    rows = split_plot_arrays(many, codes, 2, (3,), ("template",))
    for v in range(5):
        ref = split_plot_anova(many[:, :, v], g).set_index("effect")
        for r in rows:
            for col in ("F", "p", "eps_gg", "p_gg", "mauchly_W"):
                got = np.asarray(r[col])
                if got.ndim:
                    got = got[v]
                np.testing.assert_allclose(got, ref.loc[r["effect"], col], rtol=1e-9)


def test_bad_input():
    y, g = _mixed_data([5, 5], seed=9)
    y[0, 0] = np.nan
    with pytest.raises(InputError):
        split_plot_anova(y, g)
    with pytest.raises(InputError):
        split_plot_anova(np.ones((2, 3)), ["a", "b"])


def test_unbalanced_vs_pingouin_documented_difference():
    """89/126 split: between and interaction F agree with pingouin ``mixed_anova``; the
    template F differs because pingouin tests weighted (Type I) template means while we
    test the unweighted (Type III, SPSS) ones."""
    y, g = _mixed_data([89, 126], seed=11)
    y[g == "G1"] += 0.01
    tab = split_plot_anova(y, g).set_index("effect")
    aov = pg.mixed_anova(data=_long(y, g), dv="nmi", within="template", between="database",
                         subject="subject").set_index("Source")
    np.testing.assert_allclose(tab.loc["database", "F"], aov.loc["database", "F"], rtol=1e-8)
    np.testing.assert_allclose(tab.loc["database:template", "F"],
                               aov.loc["Interaction", "F"], rtol=1e-8)
    assert abs(tab.loc["template", "F"] / aov.loc["template", "F"] - 1) > 0.05
    # weighted template SS (Type I, what pingouin reports) from the textbook formula
    ss_w = len(y) * ((y.mean(0) - y.mean()) ** 2).sum()
    f_w = (ss_w / 2) / (tab.loc["template", "ss_error"] / tab.loc["template", "df2"])
    np.testing.assert_allclose(aov.loc["template", "F"], f_w, rtol=1e-8)


def test_mixed_balanced_matches_mixedlm_wald():
    """Balanced split-plot with a positive subject variance: the REML random-intercept
    model's Wald chi2 / df equals the ANOVA F (METHODS §14.3 cross-check)."""
    import warnings

    rng = np.random.default_rng(0)
    n = 24
    g = np.array(["a"] * 12 + ["b"] * 12)
    y = rng.normal(0, 1, (n, 1)) + rng.normal(0, 0.5, (n, 3)) + np.array([0, 0.3, 0.5])
    y[g == "b", 2] += 0.4
    tab = split_plot_anova(y, g).set_index("effect")
    long = pd.DataFrame({"s": np.repeat(np.arange(n), 3), "t": np.tile(["T0", "T1", "T2"], n),
                         "db": np.repeat(g, 3), "y": y.ravel()})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = smf.mixedlm("y ~ C(db, Sum)*C(t, Sum)", long, groups="s").fit(reml=True)
    names = list(fit.params.index)

    def wald_f(select):
        idx = [i for i, nm in enumerate(names) if select(nm)]
        lmat = np.zeros((len(idx), len(names)))
        lmat[np.arange(len(idx)), idx] = 1.0
        return float(fit.wald_test(lmat, scalar=True).statistic) / len(idx)

    np.testing.assert_allclose(wald_f(lambda s: s.startswith("C(t")),
                               tab.loc["template", "F"], rtol=1e-3)
    np.testing.assert_allclose(wald_f(lambda s: s.startswith("C(db") and ":" not in s),
                               tab.loc["database", "F"], rtol=1e-3)
    np.testing.assert_allclose(wald_f(lambda s: ":" in s),
                               tab.loc["database:template", "F"], rtol=1e-3)
