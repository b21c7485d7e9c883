"""Tests of the Table 1 pairwise EMM comparisons (isyb_dask.stats.posthoc)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import stats

from isyb_dask.errors import ConfigError, InputError
from isyb_dask.stats.posthoc import TABLE1_COLUMNS, adjust_p, pairwise_emm

LEVELS = ("CN200", "Chinese2020", "MNI152")


def _data(n_per, seed=0):
    rng = np.random.default_rng(seed)
    groups = np.concatenate([[f"ISYB-{g + 1}"] * n for g, n in enumerate(n_per)])
    y = 0.3 + rng.normal(0, 0.02, (groups.size, 1)) + rng.normal(0, 0.003, (groups.size, 3))
    y += np.array([0.004, 0.002, 0.0])
    return y, groups


def test_fully_within_equals_paired_t():
    y, _ = _data([40], seed=1)
    tab = pairwise_emm(y, LEVELS, padjust="none")
    assert list(tab.columns) == list(TABLE1_COLUMNS)
    assert len(tab) == 3 and set(tab["database"]) == {"all"}
    for _, r in tab.iterrows():
        j, l = LEVELS.index(r.template_1), LEVELS.index(r.template_2)
        d = y[:, j] - y[:, l]
        np.testing.assert_allclose(r.difference, d.mean(), rtol=1e-12)
        np.testing.assert_allclose(r.se, d.std(ddof=1) / np.sqrt(40), rtol=1e-12)
        ref = stats.ttest_rel(y[:, j], y[:, l])
        np.testing.assert_allclose(r.t, ref.statistic, rtol=1e-10)
        np.testing.assert_allclose(r.p_unc, ref.pvalue, rtol=1e-8)
        assert r.df == 39
        np.testing.assert_allclose(r.p_adj, r.p_unc)


@pytest.mark.parametrize("n_per", [[20, 20], [11, 27]])
def test_mixed_emm_se_equals_ols_cell_means(n_per):
    """Model-based SEs (pooled within-group variance of d) == OLS on the differences."""
    y, g = _data(n_per, seed=2)
    tab = pairwise_emm(y, LEVELS, g, padjust="bonferroni")
    n = sum(n_per)
    for (t1, t2), sub in tab.groupby(["template_1", "template_2"], sort=False):
        d = y[:, LEVELS.index(t1)] - y[:, LEVELS.index(t2)]
        fit = smf.ols("d ~ C(g) - 1", pd.DataFrame({"d": d, "g": g})).fit()
        for i, lev in enumerate(sorted(set(g))):
            row = sub[sub.database == lev].iloc[0]
            np.testing.assert_allclose(row.difference, fit.params.iloc[i], rtol=1e-10)
            np.testing.assert_allclose(row.se, fit.bse.iloc[i], rtol=1e-10)
            np.testing.assert_allclose(row.p_unc, fit.pvalues.iloc[i], rtol=1e-8)
            assert row.df == n - 2
        # over all databases: unweighted mean of the two group means
        tt = fit.t_test(np.array([[0.5, 0.5]]))
        row = sub[sub.database == "all"].iloc[0]
        np.testing.assert_allclose(row.difference, tt.effect[0], rtol=1e-10)
        np.testing.assert_allclose(row.se, tt.sd[0, 0], rtol=1e-10)
        np.testing.assert_allclose(row.p_unc, tt.pvalue, rtol=1e-8)
        # textbook: SE = sqrt(MSE_d * sum 1/n_g) / G
        gm = [d[g == lev].mean() for lev in sorted(set(g))]
        mse = sum(((d[g == lev] - m) ** 2).sum() for lev, m in zip(sorted(set(g)), gm)) / (n - 2)
        np.testing.assert_allclose(row.se, np.sqrt(mse * sum(1 / k for k in n_per)) / 2,
                                   rtol=1e-12)
    np.testing.assert_allclose(tab.p_adj, np.minimum(tab.p_unc * 3, 1.0))


def test_bonferroni_ci_and_adjustments():
    y, g = _data([15, 18], seed=3)
    tab = pairwise_emm(y, LEVELS, g, padjust="bonferroni", alpha=0.05)
    crit = stats.t.ppf(1 - 0.05 / 6, 31)
    np.testing.assert_allclose(tab.ci_high - tab.difference, crit * tab.se, rtol=1e-10)
    p = np.array([0.01, 0.5, 0.0])
    np.testing.assert_allclose(adjust_p(p, 3, "bonferroni"), [0.03, 1.0, 0.0])
    np.testing.assert_allclose(adjust_p(p, 3, "sidak"), 1 - (1 - p) ** 3)
    with pytest.raises(ConfigError):
        adjust_p(p, 3, "holm-ish")


def test_known_effect_detected():
    """Ground truth: CN200 > MNI152 by 0.004 per subject, detected with the right sign."""
    y, g = _data([30, 30], seed=4)
    tab = pairwise_emm(y, LEVELS, g)
    row = tab[(tab.database == "all") & (tab.template_2 == "MNI152")
              & (tab.template_1 == "CN200")].iloc[0]
    assert row.p_adj < 1e-6
    assert abs(row.difference - 0.004) < 4 * row.se


def test_incomplete_rejected():
    y, g = _data([5, 5])
    y[2, 1] = np.inf
    with pytest.raises(InputError):
        pairwise_emm(y, LEVELS, g)


def test_second_within_factor_is_averaged():
    """(N, k, b) data: EMMs average over the second within factor first (§14.2)."""
    rng = np.random.default_rng(5)
    y3 = rng.normal(size=(25, 3, 4))
    a = pairwise_emm(y3, LEVELS, padjust="none")
    b = pairwise_emm(y3.mean(axis=2), LEVELS, padjust="none")
    pd.testing.assert_frame_equal(a, b)
    d = y3[:, 0].mean(1) - y3[:, 2].mean(1)
    row = a[(a.template_1 == "CN200") & (a.template_2 == "MNI152")].iloc[0]
    np.testing.assert_allclose(row.se, d.std(ddof=1) / 5.0, rtol=1e-12)
