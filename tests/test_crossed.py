"""Population x template tests of the crossed demo design."""

from __future__ import annotations

import numpy as np

from isyb_dask.stats.crossed import crossed_tests, paired_matched


def test_matched_template_effect_is_found_and_signed():
    rng = np.random.default_rng(0)
    n = 30
    pop = np.repeat(["chinese", "western"], n)
    base = rng.normal(0.5, 0.05, size=(2 * n, 1))
    y = base + rng.normal(0, 0.01, size=(2 * n, 2))
    y[:n, 0] += 0.02   # Chinese subjects score higher with the CN template
    y[n:, 1] += 0.02   # Western subjects with the EU template
    res = crossed_tests(y, ["CN", "EU"], pop, {"chinese": "CN", "western": "EU"},
                        database=np.tile(["A", "B"], n))
    inter = res["anova"].set_index("effect").loc["population:template"]
    assert inter["p"] < 1e-6
    paired = res["paired"].set_index("population")
    for p in ("chinese", "western"):
        assert abs(paired.loc[p, "difference"] - 0.02) < 0.01
        assert paired.loc[p, "dz"] > 1.0 and paired.loc[p, "p"] < 1e-4
        assert 0 < paired.loc[p, "ci_low"] < 0.02 < paired.loc[p, "ci_high"]
        assert paired.loc[p, "dz_low"] < paired.loc[p, "dz"] < paired.loc[p, "dz_high"]
    # Tukey: CN - EU is +0.02 in Chinese, -0.02 in Western subjects and ~0 over both
    tk = res["tukey"].set_index("database")
    assert list(tk.index) == ["chinese", "western", "all"]
    assert abs(tk.loc["chinese", "difference"] - 0.02) < 0.01
    assert abs(tk.loc["western", "difference"] + 0.02) < 0.01
    assert abs(tk.loc["all", "difference"]) < 0.01 and tk.loc["all", "p_adj"] > 0.01
    assert tk.loc["chinese", "p_adj"] < 1e-4 and tk.loc["western", "p_adj"] < 1e-4
    assert set(res["database"]["population"]) == {"chinese", "western"}


def test_no_effect_gives_no_interaction():
    rng = np.random.default_rng(1)
    pop = np.repeat(["chinese", "western"], 25)
    y = rng.normal(size=(50, 2))
    res = crossed_tests(y, ["CN", "EU"], pop, {"chinese": "CN", "western": "EU"})
    assert res["anova"].set_index("effect").loc["population:template", "p"] > 0.01
    assert res["database"].empty


def test_paired_intervals_cover_at_their_level():
    # 95 % intervals of the mean difference (exact t) and of d_z (normal approximation)
    # cover the true values in 95 % of samples; 1000 samples: binomial SD 0.007
    rng = np.random.default_rng(2)
    n, dz_true, hits_mean, hits_dz = 20, 0.5, 0, 0
    for _ in range(1000):
        y = np.zeros((n, 2))
        y[:, 0] = rng.normal(dz_true, 1.0, n)
        r = paired_matched(y, ["A", "B"], "A").iloc[0]
        hits_mean += r["ci_low"] < dz_true < r["ci_high"]
        hits_dz += r["dz_low"] < dz_true < r["dz_high"]
    assert 0.93 < hits_mean / 1000 < 0.97
    assert 0.92 < hits_dz / 1000 < 0.975
