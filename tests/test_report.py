"""Tests of the HTML report (group page, subject pages), including headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
import xarray as xr

from isyb_dask.io.store import init_store
from isyb_dask.report.html import SECTION_IDS, write_report
from isyb_dask.report.subject_page import SUBJECT_SECTIONS
from isyb_dask.stats.config import StatsConfig
from isyb_dask.stats.stage import run_stats
from isyb_dask.testing import make_fake_store

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=5000"]
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")


class _Refs(HTMLParser):
    """Collects href/src values and element ids of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        d = dict(attrs)
        if d.get("id"):
            self.ids.add(d["id"])
        for key in ("href", "src"):
            if d.get(key):
                self.refs.append(d[key])


def unresolved_refs(page: Path, text: str | None = None) -> list[str]:
    """Links and image sources of a page that do not resolve (files or #anchors)."""
    parser = _Refs()
    parser.feed(text if text is not None else page.read_text())
    bad = []
    for ref in parser.refs:
        if ref.startswith("data:"):
            continue
        if re.match(r"^[a-z]+:", ref) or ref.startswith("//"):
            bad.append(ref)  # no external resources at all
            continue
        path, _, frag = ref.partition("#")
        if not path:
            if frag not in parser.ids:
                bad.append(ref)
            continue
        target = (page.parent / unquote(path)).resolve()
        if not target.is_file():
            bad.append(ref)
        elif frag and target.suffix == ".html" and f'id="{frag}"' not in target.read_text():
            bad.append(ref)
    return bad


def _render(html_path: Path, tmp_path: Path, shot: Path | None = None) -> tuple[str, str]:
    common = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    url = html_path.resolve().as_uri()
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True,
                         timeout=120, check=False)
    if shot is not None:
        subprocess.run([*common, f"--screenshot={shot}", "--window-size=1200,2400", url],
                       capture_output=True, text=True, timeout=120, check=False)
    return dom.stdout, dom.stderr


def _console_errors(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines()
            if "CONSOLE" in ln and re.search(r"error|uncaught", ln, re.IGNORECASE)]


def _assert_loaded(dom: str, stderr: str, n_sections: int) -> None:
    assert 'data-rendered="1"' in dom, stderr[-2000:]
    assert 'data-js-errors="0"' in dom
    n_img = int(re.search(r'data-images="(\d+)"', dom).group(1))
    assert f'data-images-ok="{n_img}"' in dom  # every <img> decoded
    assert f'data-sections="{n_sections}"' in dom
    assert _console_errors(stderr) == []


def _iqm_svgs(text: str) -> list[tuple[int, int]]:
    """(declared points, drawn subject points) of every IQM plot of a page."""
    out = []
    for svg in re.findall(r'<svg class="iqm".*?</svg>', text, flags=re.S):
        declared = int(re.search(r'data-points="(\d+)"', svg).group(1))
        out.append((declared, len(re.findall(r'<circle class="pt[ "]', svg))))
    return out


@pytest.fixture(scope="module")
def fake_report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fake_report")
    store = make_fake_store(tmp)
    run_stats(store, tmp, StatsConfig())
    (tmp / "group_T1w.tsv").write_text("bids_name\tcnr\nsub-0004_T1w\t3.2\n")
    import matplotlib.pyplot as plt

    from isyb_dask.report.paths import render_path

    render = render_path(tmp, "sub-0010", "CN200")
    render.parent.mkdir(parents=True)
    plt.imsave(render, np.random.default_rng(0).random((40, 60)), cmap="gray")
    return tmp, store, write_report(tmp, store)


def test_group_page_content_and_self_contained(fake_report):
    tmp, store, page = fake_report
    text = page.read_text()
    for sec in SECTION_IDS:
        assert f'<section id="{sec}">' in text
    assert unresolved_refs(page) == []  # TSVs, subject pages, anchors; nothing external
    assert "InputError: sub-0003_T1w.nii.gz is truncated" in text  # failures table
    assert "cnr beyond 3 SD" in text
    # every IQM plot: one point per subject of the QC sample (27 ok + 2 excluded)
    plots = _iqm_svgs(text)
    assert len(plots) >= 4 and all(p == (29, 29) for p in plots)
    # tables are TSVs linked from the page, not page content
    for name in ("failures.tsv", "exclusions.tsv", "subjects.tsv", "iqm_summary_T1w.tsv",
                 "nmi_summary.tsv"):
        assert (tmp / "report_tables" / name).is_file()
        assert f'href="report_tables/{name}"' in text
    assert 'href="group_T1w.tsv"' in text and "<td>sub-0004_T1w</td>" not in text
    fails = (tmp / "report_tables" / "failures.tsv").read_text().splitlines()
    assert len(fails) == 1 + 3  # 2 excluded + 1 failed
    assert "numpy" in text and "timings" in text  # provenance from store attrs
    assert text.count("data:image/png;base64,") == 1  # Figure 6 embedded


def test_subject_pages_written_for_every_subject(fake_report):
    tmp, store, page = fake_report
    for i in range(1, 31):
        sub = f"sub-{i:04d}"
        sp = tmp / sub / f"{sub}_report.html"
        assert sp.is_file()
        assert f'href="{sub}/{sub}_report.html"' in page.read_text()
    failed = (tmp / "sub-0003" / "sub-0003_report.html").read_text()
    assert "What failed" in failed and "sub-0003_T1w.nii.gz is truncated" in failed
    ok = tmp / "sub-0010" / "sub-0010_report.html"
    text = ok.read_text()
    for sec in SUBJECT_SECTIONS:
        assert f'<section id="{sec}">' in text
    assert text.count('<svg class="pos"') >= 4  # IQMs against the group
    assert 'src="figures/sub-0010_desc-defacedCN200_render.png"' in text
    assert text.count("render not available") == 2  # the two other templates
    assert unresolved_refs(ok) == []


def test_report_missing_parts(tmp_path):
    store = tmp_path / "results.zarr"
    init_store(store, ["sub-01", "sub-02"], templates=["MNI152"], anat_iqms=["cnr"],
               func_iqms=["fd_mean"], surface_metrics=["ct"], hemi=["L", "R"])
    text = write_report(tmp_path, store).read_text()
    assert text.count("not available") >= 5
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "not available" in write_report(empty, empty / "results.zarr").read_text()


def test_omitted_metrics_name_the_reason():
    from isyb_dask.metrics.figures import omitted_metrics

    mean = np.array([[1.0, 2.0], [np.nan, np.nan], [np.nan, 3.0]])
    group = xr.Dataset({"mean": (("metric", "vertex"), mean)},
                       coords={"metric": ["CT", "SA", "CBF"]})
    missing = xr.DataArray([["", "no surface folder", ""], ["", "no surface folder", ""],
                            ["", "other", ""]], dims=("subject", "metric"),
                           coords={"metric": ["CT", "SA", "CBF"]})
    assert omitted_metrics(group, missing) == {"SA": "no surface folder (2 of 3 subjects)"}
    assert omitted_metrics(group) == {"SA": "no subject has a value"}


@needs_chromium
def test_fake_report_renders_in_headless_chromium(fake_report, tmp_path):
    tmp, store, page = fake_report
    shot = tmp_path / "shot.png"
    dom, stderr = _render(page, tmp_path, shot)
    _assert_loaded(dom, stderr, len(SECTION_IDS))
    assert unresolved_refs(page, dom) == []
    import matplotlib.image as mpimg

    pix = mpimg.imread(shot)
    assert pix.shape[0] >= 1000 and pix[..., :3].std() > 0.05  # not a blank page


@needs_chromium
def test_demo_pages_in_headless_chromium(demo_run, tmp_path):
    """Group page and two subject pages of a real run: load cleanly, everything resolves."""
    out = demo_run["out"]
    page = out / "report.html"
    dom, stderr = _render(page, tmp_path)
    _assert_loaded(dom, stderr, len(SECTION_IDS))
    assert unresolved_refs(page, dom) == []
    # one point per subject of the QC sample: 4 good subjects (2 of 6 failed)
    plots = _iqm_svgs(dom)
    assert len(plots) >= 8 and all(p == (4, 4) for p in plots), plots
    for sub in ("sub-0001", "sub-0005"):
        sp = out / sub / f"{sub}_report.html"
        dom, stderr = _render(sp, tmp_path)
        _assert_loaded(dom, stderr, len(SUBJECT_SECTIONS))
        assert unresolved_refs(sp, dom) == []
    ok = (out / "sub-0001" / "sub-0001_report.html").read_text()
    for picture in ("segmentation", "carpet", "maps", "normalisation", "regpydeface"):
        assert f"sub-0001_desc-{picture}_report.png" in ok
    failed = (out / "sub-0005" / "sub-0005_report.html").read_text()
    assert "What failed" in failed and "not a readable NIfTI" in failed
