"""Report data: the normalisation panel's reference and the re-identification table."""

from __future__ import annotations

import numpy as np
import pytest

from isyb_dask.report import subject_page


@pytest.fixture(scope="module")
def bridge_root():
    """The cache root holding the bridge (built once if this session has not yet)."""
    from isyb_dask.anat.bridge import bridge_dir, get_bridge

    get_bridge()
    return bridge_dir().parent


def test_nlin6_reference_needs_the_cached_bridge(tmp_path, monkeypatch):
    monkeypatch.setenv("ISYB_CACHE_DIR", str(tmp_path))  # empty cache: no bridge
    subject_page._nlin6_template.cache_clear()
    try:
        assert subject_page._nlin6_template() is None
    finally:
        subject_page._nlin6_template.cache_clear()


def test_nlin6_reference_is_the_2009a_t1_through_the_bridge(bridge_root):
    from isyb_dask.anat.bridge import NLIN6_GRID, template_maps

    subject_page._nlin6_template.cache_clear()
    img = subject_page._nlin6_template()
    shape, affine = NLIN6_GRID
    assert img.shape == shape and np.allclose(img.affine, affine)
    # the brain sits where the 2009a brain sits: the two spaces differ by a few mm only
    t1, t1_aff = template_maps(1.0)["t1"]

    def centroid(data, aff):
        ijk = np.argwhere(data > 0.3 * data.max())
        return (ijk @ aff[:3, :3].T + aff[:3, 3]).mean(axis=0)

    data = np.asarray(img.dataobj)
    assert np.linalg.norm(centroid(data, affine) - centroid(t1, t1_aff)) < 6.0
    assert (data > 0.3 * data.max()).sum() * 8.0 > 0.8e6  # a whole brain (mm3), not a sliver


def test_report_reads_the_reidentification_table(tmp_path):
    # the stats group holds the table as audit_<column> over audit_template
    # (deface/reid.audit_dataset); the report shows it with its CIs against chance
    import pandas as pd

    from isyb_dask.deface.reid import AUDIT_COLUMNS, audit_dataset
    from isyb_dask.report.data import _stats

    rows = [["pydeface", 8, 0, 0.0, 2, 0.25, 0.032, 0.651, 0.125, 0.26, 0.61, 8],
            ["CN200", 8, 0, 0.0, 1, 0.125, 0.003, 0.527, 0.125, 0.66, 0.58, 8]]
    summary = pd.DataFrame([dict(zip(AUDIT_COLUMNS, r)) for r in rows])
    store = tmp_path / "results.zarr"
    audit_dataset(summary).to_zarr(store, group="stats", mode="w")
    _, table = _stats(store)
    assert list(table["template"]) == ["pydeface", "CN200"]
    assert set(AUDIT_COLUMNS) <= set(table.columns)
    assert table.loc[0, "rank1_rate"] == 0.25 and table.loc[1, "ci_high"] == 0.527


def test_nlin6_reference_is_read_from_the_runs_cache_dir(bridge_root, tmp_path, monkeypatch):
    # a run with --cache-dir keeps its bridge there, not in the default cache
    from isyb_dask.anat.bridge import NLIN6_GRID
    from isyb_dask.report.data import load_report_data

    run_cache = bridge_root
    monkeypatch.setenv("ISYB_CACHE_DIR", str(tmp_path / "empty"))  # the default has none
    subject_page._nlin6_template.cache_clear()
    try:
        assert subject_page._nlin6_template() is None
        img = subject_page._nlin6_template(run_cache)
        assert img is not None and img.shape == NLIN6_GRID[0]
    finally:
        subject_page._nlin6_template.cache_clear()
    data = load_report_data(tmp_path, tmp_path / "absent.zarr", cache_dir=run_cache)
    assert data.cache_dir == run_cache
