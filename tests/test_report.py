"""Tests of the HTML report, including rendering in headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from test_stats_stage import TEMPLATES, make_fake_store

from isyb_dask.io.store import init_store
from isyb_dask.report.html import SECTION_IDS, write_report
from isyb_dask.stats.config import StatsConfig
from isyb_dask.stats.stage import run_stats

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=5000"]


def _head(shape=(24, 28, 24)) -> np.ndarray:
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    vol = (z**2 + y**2 + x**2 < 0.7).astype(np.float32) * 100
    vol[(np.abs(z) < 0.2) & (y > 0.75) & (x < 0.1)] = 150  # a "nose" (anterior = +y)
    return vol


def _fake_images(out_dir: Path, subjects) -> None:
    bids = out_dir / "bids"
    for sub in subjects:
        vol = _head()
        anat = bids / sub / "anat"
        anat.mkdir(parents=True)
        nib.save(nib.Nifti1Image(vol, np.eye(4)), anat / f"{sub}_T1w.nii.gz")
        der = out_dir / sub / "anat"
        der.mkdir(parents=True)
        for t in TEMPLATES:
            d = vol.copy()
            d[:, 20:, :] = 0
            nib.save(nib.Nifti1Image(d, np.eye(4)), der / f"{sub}_desc-defaced{t}_T1w.nii.gz")


def _render(html_path: Path, tmp_path: Path) -> tuple[str, str, Path]:
    shot = tmp_path / "shot.png"
    common = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    url = html_path.resolve().as_uri()
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True,
                         timeout=120, check=False)
    subprocess.run([*common, f"--screenshot={shot}", "--window-size=1200,2400", url],
                   capture_output=True, text=True, timeout=120, check=False)
    return dom.stdout, dom.stderr, shot


def _console_errors(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines()
            if "CONSOLE" in ln and re.search(r"error|uncaught", ln, re.IGNORECASE)]


def test_report_content_and_self_contained(tmp_path):
    store = make_fake_store(tmp_path)
    run_stats(store, tmp_path, StatsConfig())
    _fake_images(tmp_path, ["sub-0004", "sub-0005"])
    (tmp_path / "group_T1w.tsv").write_text("bids_name\tcnr\nsub-0004_T1w\t3.2\n")
    page = write_report(tmp_path, store)
    text = page.read_text()
    for sec in SECTION_IDS:
        assert f'<section id="{sec}">' in text
    assert not re.search(r'(src|href)="(https?:)?//', text)  # no external resources
    assert text.count("data:image/png;base64,") == 3  # Figure 6 + 2 before/after
    assert "InputError: sub-0003_T1w.nii.gz is truncated" in text
    assert "cnr beyond 3 SD" in text and "group_T1w.tsv" in text
    assert "CN200" in text and "Chinese2020" in text  # Table 1 rows
    assert "numpy" in text and "timings" in text  # provenance from store attrs
    assert "sub-0001" not in str(list((store / "stats").rglob("*before*")))


def test_report_missing_parts(tmp_path):
    store = tmp_path / "results.zarr"
    init_store(store, ["sub-01", "sub-02"], templates=["MNI152"], anat_iqms=["cnr"],
               func_iqms=["fd_mean"], surface_metrics=["ct"], hemi=["L", "R"])
    text = write_report(tmp_path, store).read_text()
    assert text.count("not available") >= 5
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "not available" in write_report(empty, empty / "results.zarr").read_text()


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_report_renders_in_headless_chromium(tmp_path):
    store = make_fake_store(tmp_path)
    run_stats(store, tmp_path, StatsConfig())
    _fake_images(tmp_path, ["sub-0004"])
    page = write_report(tmp_path, store)
    dom, stderr, shot = _render(page, tmp_path)
    assert 'data-rendered="1"' in dom, stderr[-2000:]
    assert 'data-js-errors="0"' in dom
    n_img = int(re.search(r'data-images="(\d+)"', dom).group(1))
    assert n_img == 2 and f'data-images-ok="{n_img}"' in dom
    assert f'data-sections="{len(SECTION_IDS)}"' in dom
    for sec in SECTION_IDS:
        assert f'id="{sec}"' in dom
    assert _console_errors(stderr) == []
    assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image as mpimg

    pix = mpimg.imread(shot)
    assert pix.shape[0] >= 1000 and pix[..., :3].std() > 0.05  # not a blank page


def test_before_after_on_real_head(shared_data, tmp_path):
    """Mid-sagittal rendering of a real head: anterior to the right, superior up."""
    import io

    import matplotlib.image as mpimg

    from isyb_dask.report.images import _mid_sagittal, render_before_after

    src = shared_data / "heads" / "xa30_sub1_T1w_tfl_2mm.nii.gz"
    img = nib.as_closest_canonical(nib.load(src))
    data = np.asarray(img.dataobj, dtype=np.float32)
    # crude "defacing": remove the anterior-inferior quarter of the head (RAS grid)
    defaced = data.copy()
    ny, nz = data.shape[1], data.shape[2]
    defaced[:, 3 * ny // 4:, : nz // 2] = 0
    dpath = tmp_path / "defaced.nii.gz"
    nib.save(nib.Nifti1Image(defaced, img.affine), dpath)
    before, after = _mid_sagittal(src), _mid_sagittal(dpath)
    assert before.shape == (nz, ny)  # rows = superior..inferior, columns = posterior..anterior
    face = (slice(nz - nz // 2, nz), slice(3 * ny // 4, ny))  # lower right after rot90
    assert before[face].mean() > 10 * max(after[face].mean(), 1e-6)
    np.testing.assert_array_equal(before[: nz // 2], after[: nz // 2])  # upper half untouched
    png = render_before_after(src, [("test", dpath)])
    pix = mpimg.imread(io.BytesIO(png))
    assert pix.shape[1] > pix.shape[0]  # two panels side by side
