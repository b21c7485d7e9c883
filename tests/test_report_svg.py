"""Unit tests of the report's SVG plot builders and tables (no browser needed)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest

from isyb_dask.report.data import ReportData, text_list
from isyb_dask.report.svg import bar_plot, nice_ticks, position_plot, strip_plot
from isyb_dask.report.tables import failure_table, subject_page_href


def _parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # well-formed XML (inline SVG without a namespace)


def _circles(root: ET.Element) -> list[ET.Element]:
    return [e for e in root.iter("circle")]


def test_strip_plot_one_point_per_finite_value():
    rng = np.random.default_rng(1)
    values = {f"sub-{i:03d}": float(v) for i, v in enumerate(rng.normal(5, 1, 40))}
    values["sub-nan"] = float("nan")
    svg = strip_plot(values, "cnr", excluded={"sub-003": "cnr beyond 3 SD",
                                              "sub-007": "mean FD above 0.2 mm"},
                     by_this=["sub-003"], links={"sub-003": "sub-003/sub-003_report.html"})
    root = _parse(svg)
    pts = [c for c in _circles(root) if "pt" in c.get("class", "").split()]
    assert len(pts) == 40 and root.get("data-points") == "40"
    titles = [c.find("title").text for c in pts]
    assert sorted(t.split()[0] for t in titles) == sorted(k for k in values if k != "sub-nan")
    ex = {c.find("title").text.split()[0]: c for c in pts if "ex" in c.get("class").split()}
    assert set(ex) == {"sub-003", "sub-007"}
    assert ex["sub-003"].get("fill") == "#c44e52" and ex["sub-007"].get("fill") == "none"
    assert "cnr beyond 3 SD" in ex["sub-003"].find("title").text
    links = [a for a in root.iter("a")]
    assert [a.get("href") for a in links] == ["sub-003/sub-003_report.html"]
    assert "1 n/a" in svg


def test_strip_plot_positions_follow_values():
    values = {"a": 1.0, "b": 2.0, "c": 3.0}
    root = _parse(strip_plot(values, "x", sd_limit=None))
    cy = {c.find("title").text.split()[0]: float(c.get("cy")) for c in _circles(root)}
    # larger values are higher up (smaller y), equally spaced values equally spaced
    assert cy["a"] > cy["b"] > cy["c"]
    assert cy["a"] - cy["b"] == pytest.approx(cy["b"] - cy["c"], abs=0.11)
    # jitter stays inside the plot band
    xs = [float(c.get("cx")) for c in _circles(root)]
    assert all(46 <= x <= 230 - 6 for x in xs)


def test_strip_plot_lines_mean_sd_and_threshold():
    vals = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    svg = strip_plot({f"s{i}": v for i, v in enumerate(vals)}, "fd_mean", sd_limit=2.0,
                     threshold=0.45)
    titles = re.findall(r"<title>([^<]*)</title>", svg)
    sd = vals.std(ddof=1)
    assert f"mean {vals.mean():.4g}" in titles
    assert f"mean + 2 SD = {vals.mean() + 2 * sd:.4g}" in titles
    assert "threshold 0.45" in titles


def test_nice_ticks():
    assert nice_ticks(0.0, 1.0, 4) == pytest.approx([0.0, 0.5, 1.0])
    assert nice_ticks(3.2, 9.7, 4) == pytest.approx([4.0, 6.0, 8.0])
    ticks = nice_ticks(-0.013, 0.021, 4)
    steps = np.diff(ticks)
    assert np.allclose(steps, steps[0]) and ticks[0] >= -0.013 and ticks[-1] <= 0.021
    assert nice_ticks(2.0, 2.0) == [2.0] and nice_ticks(np.nan, 1.0) == []


def test_position_plot_marks_the_subject_on_the_group_scale():
    group = np.arange(101, dtype=float)  # quartiles 25 / 50 / 75
    root = _parse(position_plot(group, 90.0, "snr"))
    rect = next(root.iter("rect"))
    x0, w = float(rect.get("x")), float(rect.get("width"))
    med = [ln for ln in root.iter("line") if ln.find("title") is not None
           and ln.find("title").text.startswith("median")][0]
    me = [ln for ln in root.iter("line") if ln.find("title") is not None
          and ln.find("title").text.startswith("this subject")][0]
    xm, xs = float(med.get("x1")), float(me.get("x1"))
    # linear scale: (median - q1) / (q3 - q1) = 0.5 and (90 - q1) / (q3 - q1) = 1.3
    assert (xm - x0) / w == pytest.approx(0.5, abs=0.01)
    assert (xs - x0) / w == pytest.approx(1.3, abs=0.01)
    assert "no group data" in position_plot(np.array([np.nan]), 1.0, "x")


def test_bar_plot_widths_proportional():
    root = _parse(bar_plot([("A", 0.25), ("B", 1.0), ("C", float("nan"))], "rate"))
    bars = [r for r in root.iter("rect") if r.find("title") is not None]
    w = [float(r.get("width")) for r in bars]
    assert w[0] == pytest.approx(w[1] / 4, abs=0.1) and w[2] == 0.0
    assert [r.find("title").text for r in bars] == ["A: 25.0%", "B: 100.0%", "C: n/a"]


def _data(part: pd.DataFrame, stats_attrs: dict | None = None) -> ReportData:
    from pathlib import Path

    return ReportData(out_dir=Path("."), store=Path("results.zarr"), participants=part,
                      stats_attrs=stats_attrs or {})


def test_failure_table_with_and_without_partial_columns():
    part = pd.DataFrame({"status": ["ok", "failed", "excluded", "partial"],
                         "error": ["", "qc_func: InputError: bold.nii.gz truncated", "",
                                   "metrics: no DWI"],
                         "exclusion_reason": ["", "", "cnr beyond 3 SD", ""],
                         "exclusion_rule": ["", "", "sd", ""]},
                        index=["sub-1", "sub-2", "sub-3", "sub-4"])
    tab = failure_table(_data(part, {"dropped_incomplete": ["sub-1"]}))
    rows = {(r.subject, r.kind): r for r in tab.itertuples()}
    assert rows[("sub-2", "failed")].stage == "qc_func"  # parsed from the message
    assert rows[("sub-4", "partial")].stage == "metrics"
    assert rows[("sub-3", "excluded")].message == "cnr beyond 3 SD"
    assert rows[("sub-1", "dropped from statistics")].stage == "stats"
    assert len(tab) == 4
    part["failed_stages"] = ["", "qc_anat;qc_func", "", '["metrics"]']
    tab = failure_table(_data(part))
    stages = dict(zip(tab["subject"], tab["stage"]))
    assert stages["sub-2"] == "qc_anat, qc_func" and stages["sub-4"] == "metrics"


def test_text_list_and_href():
    assert text_list('["a", "b"]') == ["a", "b"]
    assert text_list("a; b,c") == ["a", "b", "c"]
    assert text_list(None) == [] and text_list("nan") == []
    assert subject_page_href("sub-01") == "sub-01/sub-01_report.html"


def test_audit_rates_per_template(tmp_path):
    import xarray as xr

    from isyb_dask.report.group_page import _audit

    detected = np.array([[1, 0], [0, 0], [1, 0], [np.nan, 1]], dtype=float)
    rank = np.array([[1, 3], [1, 1], [2, 5], [4, np.nan]], dtype=float)
    ds = xr.Dataset({"face_detected": (("subject", "template"), detected),
                     "reid_rank": (("subject", "template"), rank)},
                    coords={"subject": ["a", "b", "c", "d"], "template": ["MNI152", "CN200"]})
    data = ReportData(out_dir=tmp_path, store=tmp_path / "results.zarr", deface=ds,
                      deface_audit=pd.DataFrame({"template": ["MNI152", "CN200"],
                                                 "rank1_rate": [0.5, 1 / 3]}))
    html = _audit(data)
    titles = re.findall(r"<title>([^<]*)</title>", html)
    # detection: MNI152 2 of 3 finite, CN200 1 of 4; rank-1: MNI152 2 of 4, CN200 1 of 3
    assert titles == ["MNI152: 66.7%", "CN200: 25.0%", "MNI152: 50.0%", "CN200: 33.3%"]
    assert (tmp_path / "report_tables" / "deface_audit.tsv").is_file()
    assert 'href="report_tables/deface_audit.tsv"' in html
    # chance of rank 1 among the 4 and 3 subjects ranked
    assert "(chance 1/4 to 1/3)" in html


def test_rank1_bar_of_one_subject_is_not_a_rate(tmp_path):
    # one subject is always rank 1 of 1: chance, not re-identification
    import xarray as xr

    from isyb_dask.report.group_page import _audit

    ds = xr.Dataset({"reid_rank": (("subject", "template"), np.array([[1.0, 1.0]]))},
                    coords={"subject": ["a"], "template": ["MNI152", "CN200"]})
    html = _audit(ReportData(out_dir=tmp_path, store=tmp_path / "results.zarr", deface=ds))
    assert re.findall(r"<title>([^<]*)</title>", html) == ["MNI152: n/a", "CN200: n/a"]
    assert "(needs &gt;= 2 subjects)" in html
