"""Population x template tests of the crossed demo design."""

from __future__ import annotations

import numpy as np

from isyb_dask.stats.crossed import crossed_tests


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
    assert set(res["database"]["population"]) == {"chinese", "western"}


def test_no_effect_gives_no_interaction():
    rng = np.random.default_rng(1)
    pop = np.repeat(["chinese", "western"], 25)
    y = rng.normal(size=(50, 2))
    res = crossed_tests(y, ["CN", "EU"], pop, {"chinese": "CN", "western": "EU"})
    assert res["anova"].set_index("effect").loc["population:template", "p"] > 0.01
    assert res["database"].empty
