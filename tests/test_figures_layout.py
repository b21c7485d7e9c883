"""Layout of Figures 3-4: colour bars in their own row, one scale per metric, units."""

from __future__ import annotations

import numpy as np
import pytest

from isyb_dask.metrics.figures import surface_maps_figure
from isyb_dask.metrics.fslr import N_VERTICES


@pytest.fixture(scope="module")
def surf():
    from isyb_dask.metrics.fslr import load_fslr32k

    return load_fslr32k()


def test_colour_bars_line_up_with_their_rows(surf):
    rng = np.random.default_rng(0)
    maps = np.stack([rng.normal(2.5, 0.2, N_VERTICES), rng.normal(1e-3, 1e-4, N_VERTICES),
                     rng.uniform(0, 60, N_VERTICES)])
    fig = surface_maps_figure(maps, ["CT", "MD_WM", "CBF"], surf=surf,
                              units=["mm", "mm2/s", "ml/100g/min"], footnote="No row for SA")
    axes = fig.axes
    assert len(axes) == 3 * 5  # four views + one colour bar per row
    for row in range(3):
        views, bar = axes[5 * row: 5 * row + 4], axes[5 * row + 4]
        vb, bb = views[0].get_position(), bar.get_position()
        # the bar spans exactly its row's band and sits right of the maps
        assert bb.y0 == pytest.approx(vb.y0, abs=1e-6)
        assert bb.y1 == pytest.approx(vb.y1, abs=1e-6)
        assert bb.x0 > views[-1].get_position().x1
        # one colour scale per metric: 2nd-98th percentile of that metric's map
        lo, hi = np.percentile(maps[row], [2, 98])
        assert bar.get_ylim() == pytest.approx((lo, hi), rel=1e-6)
        for v in views:  # every view of the row uses that scale
            assert v.images[0] is not None
    assert [axes[5 * r + 4].get_ylabel() for r in range(3)] == ["mm", "mm2/s", "ml/100g/min"]
    assert any("No row for SA" in t.get_text() for t in fig.texts)
