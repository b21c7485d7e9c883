"""Tests of the study-level exclusion rules (METHODS §7)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from isyb_dask.group.exclusion import (
    exclusion_table,
    motion_outliers,
    sd_outliers,
    subject_exclusions,
)


def _series(values, prefix="sub-"):
    return pd.Series(values, index=[f"{prefix}{i:02d}" for i in range(len(values))], dtype=float)


def test_single_outlier_z_by_hand():
    vals = _series([0.0] * 10 + [1.0])
    # mean 1/11; SD (ddof 1) = sqrt(10/110) -> z = (10/11) / sqrt(1/11) = 3.015
    z_expected = (10 / 11) / math.sqrt(10 / 110)
    hits = sd_outliers(vals, metric="cnr", modality="T1w")
    assert [h.subject for h in hits] == ["sub-10"]
    assert hits[0].z == pytest.approx(z_expected, rel=1e-12)
    assert hits[0].rule == "sd" and hits[0].metric == "cnr"


def test_ddof_changes_the_decision():
    vals = _series([0.0] * 10 + [1.0])
    # ddof 0: z = 3.162, ddof 1: z = 3.015 -> with limit 3.1 only ddof 0 excludes
    assert len(sd_outliers(vals, limit=3.1, ddof=0)) == 1
    assert sd_outliers(vals, limit=3.1, ddof=1) == []


def test_boundary_is_strict():
    vals = _series([0.0] * 9 + [1.0])  # ddof 0: z exactly 3 -> kept
    assert sd_outliers(vals, limit=3.0, ddof=0) == []


def test_iterate_unmasks_second_outlier():
    base = list(np.linspace(-1, 1, 30))
    vals = _series(base + [40.0, 8.0])
    single = sd_outliers(vals, limit=3.0)
    assert [h.value for h in single] == [40.0]
    iterated = sd_outliers(vals, limit=3.0, iterate=True)
    assert [h.value for h in iterated] == [40.0, 8.0]
    # the second pass statistics exclude the first outlier
    rest = np.array(base + [8.0])
    assert iterated[1].mean == pytest.approx(rest.mean())
    assert iterated[1].sd == pytest.approx(rest.std(ddof=1))


def test_bad_direction_only():
    base = list(np.linspace(9, 11, 30))
    vals = _series(base + [30.0, -10.0])
    both = {h.value for h in sd_outliers(vals, metric="snr_total", limit=2.0)}
    assert both == {30.0, -10.0}
    bad = {h.value for h in sd_outliers(vals, metric="snr_total", limit=2.0, direction="bad")}
    assert bad == {-10.0}  # low SNR is bad
    bad_efc = {h.value for h in sd_outliers(vals, metric="efc", limit=2.0, direction="bad")}
    assert bad_efc == {30.0}  # high EFC is bad
    with pytest.raises(ValueError):
        sd_outliers(vals, direction="up")


def test_missing_and_fber_sentinel_are_ignored():
    vals = _series([100.0] * 12 + [-1.0, np.nan, np.inf])
    vals.iloc[:12] += np.arange(12)
    assert sd_outliers(vals, metric="fber") == []
    # the same -1 for an ordinary metric is a real value and is excluded
    assert [h.value for h in sd_outliers(vals, metric="cnr")] == [-1.0]


def test_motion_rule_threshold():
    fd = _series([0.1, 0.2, 0.2001, 0.5, np.nan])
    hits = motion_outliers(fd, fd_mean_max=0.2)
    assert [h.subject for h in hits] == ["sub-02", "sub-03"]
    assert all(h.rule == "motion" and h.metric == "fd_mean" for h in hits)


def test_exclusion_table_and_subject_fields():
    subjects = [f"sub-{i:02d}" for i in range(20)]
    rng = np.random.default_rng(0)
    anat = pd.DataFrame(
        {"snr_total": rng.normal(10, 0.5, 20), "efc": rng.normal(0.5, 0.01, 20)}, index=subjects
    )
    bold = pd.DataFrame(
        {"fd_mean": np.full(20, 0.1), "snr": rng.normal(50, 1, 20)}, index=subjects
    )
    anat.loc["sub-03", "snr_total"] = 0.5
    bold.loc["sub-03", "fd_mean"] = 0.3
    bold.loc["sub-07", "fd_mean"] = 0.25
    trig = exclusion_table(
        {"T1w": anat, "bold": bold},
        {"T1w": ("snr_total", "efc", "not_there"), "bold": ("snr",)},
        fd_mean_max=0.2,
    )
    assert set(trig["subject"]) == {"sub-03", "sub-07"}
    fields = subject_exclusions(trig)
    assert fields["sub-03"]["status"] == "excluded"
    assert fields["sub-03"]["exclusion_rule"] == "sd;motion"
    assert fields["sub-03"]["exclusion_metric"] == "T1w:snr_total;bold:fd_mean"
    assert "snr_total" in fields["sub-03"]["exclusion_reason"]
    assert fields["sub-07"]["exclusion_rule"] == "motion"
    none = exclusion_table({"T1w": anat}, {"T1w": ("efc",)}, fd_mean_max=None)
    assert none.empty and subject_exclusions(none) == {}
