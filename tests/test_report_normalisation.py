"""The report's normalisation panel draws the edges of the space the subject's map is in."""

from __future__ import annotations

import numpy as np
import pytest

from isyb_dask.report import subject_page


def test_nlin6_reference_needs_the_cached_bridge(tmp_path, monkeypatch):
    monkeypatch.setenv("ISYB_CACHE_DIR", str(tmp_path))  # empty cache: no bridge
    subject_page._nlin6_template.cache_clear()
    try:
        assert subject_page._nlin6_template() is None
    finally:
        subject_page._nlin6_template.cache_clear()


def test_nlin6_reference_is_the_2009a_t1_through_the_bridge():
    from isyb_dask.anat.bridge import BRIDGE_VERSION, NLIN6_GRID, template_maps
    from isyb_dask.atlas import default_cache_dir

    if not (default_cache_dir() / f"bridge-v{BRIDGE_VERSION}" / "bridge.json").exists():
        pytest.skip("bridge not built in this cache")
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
