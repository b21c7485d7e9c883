"""Tukey post-hoc and the paper's Table 1 (METHODS §0a, §14.2)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from isyb_dask.stats.posthoc import pairwise_emm, paper_table1, table1_layout, tukey_p


def test_tukey_with_two_means_is_the_t_test():
    t = np.array([0.5, 2.0, 3.3])
    assert np.allclose(tukey_p(t, 2, 30.0), 2 * stats.t.sf(t, 30.0), rtol=1e-6)


def test_paper_rows_1_and_3_reproduce_within_rounding():
    tab = paper_table1()
    for i in (0, 2):
        r = tab.iloc[i]
        # bounds from the rounding of the printed difference (3 digits) and SE (3 digits)
        lo_t = (r.difference - 0.005e-3) / (r.se + 0.005e-4)
        hi_t = (r.difference + 0.005e-3) / (r.se - 0.005e-4)
        p_hi, p_lo = tukey_p(lo_t, 3, np.inf), tukey_p(hi_t, 3, np.inf)
        assert p_lo <= r.p_paper <= p_hi
        assert r.p_tukey == pytest.approx(r.p_paper, rel=0.06)
        # the unadjusted and Bonferroni p do not reproduce the paper
        assert abs(np.log(r.p_lsd / r.p_paper)) > 0.5
    # row 2 does not: t = 9.5 gives p ~ 1e-20, the paper prints 9.56e-10
    assert paper_table1().iloc[1].p_tukey < 1e-15


def test_pairwise_emm_tukey_and_paper_layout():
    rng = np.random.default_rng(3)
    y = rng.normal(size=(40, 3)) + np.array([0.3, 0.0, -0.2])
    groups = np.repeat(["ISYB-1", "ISYB-2"], 20)
    tab = pairwise_emm(y, ["MNI152", "CN200", "Chinese2020"], groups, padjust="tukey")
    assert np.allclose(tab["p_adj"], tukey_p(tab["t"], 3, 38.0))
    assert (tab["p_adj"] >= tab["p_unc"]).all()
    lay = table1_layout(tab)
    assert list(lay["database"]) == ["ISYB-1"] * 3 + ["ISYB-2"] * 3 + ["all"] * 3
    assert list(lay["template_1"][:3]) == ["CN200", "CN200", "Chinese2020"]
    assert list(lay["template_2"][:3]) == ["Chinese2020", "MNI152", "MNI152"]
    # CN200 - MNI152 is the negative of the stored MNI152 - CN200
    orig = tab[(tab.database == "all") & (tab.template_1 == "MNI152") & (tab.template_2 == "CN200")]
    new = lay[(lay.database == "all") & (lay.template_1 == "CN200") & (lay.template_2 == "MNI152")]
    assert new["difference"].iloc[0] == pytest.approx(-orig["difference"].iloc[0])
    assert new["p_adj"].iloc[0] == pytest.approx(orig["p_adj"].iloc[0])
    assert new["ci_low"].iloc[0] == pytest.approx(-orig["ci_high"].iloc[0])
