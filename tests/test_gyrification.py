"""LGI on a flat patch (exactly 1) and a corrugated patch (analytic area ratio)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from isyb_dask.metrics.gyrification import (
    local_gyrification,
    lgi_at_points,
    outer_hull,
)

_R_CLOSE = 7.5  # closing ball radius (15 mm diameter)


def _patch(profile, size_mm=90.0, depth_mm=24.0, vox=0.5):
    """Solid below z = 16 + profile(x) (extruded along y), partial-volume field."""
    n = int(size_mm / vox)
    nz = int(depth_mm / vox) + 16
    x = (np.arange(n) - n / 2) * vox
    z = np.arange(nz) * vox
    # signed distance (mm) to the profile curve in the x-z plane, positive below it
    xf = np.linspace(x[0] - 5, x[-1] + 5, 40 * n)
    curve = np.stack([xf, 12.0 + profile(xf)], axis=1)
    xx, zz = np.meshgrid(x, z, indexing="ij")
    dist, _ = cKDTree(curve).query(np.stack([xx.ravel(), zz.ravel()], axis=1))
    below = zz.ravel() < 12.0 + profile(xx.ravel())
    sd = np.where(below, dist, -dist).reshape(n, nz)
    field = np.clip(0.5 + sd / vox, 0, 1)[:, None, :]
    field = np.broadcast_to(field, (n, n, nz)).copy()
    aff = np.diag([vox, vox, vox, 1.0])
    aff[:2, 3] = -n / 2 * vox
    return field, aff


def _arc_length(x, y):
    return np.sum(np.hypot(np.diff(x), np.diff(y)))


def _closing_profile(x, f, r):
    """Exact 1-D closing of the subgraph of f by a disc of radius r (fine grid)."""
    dx = x[1] - x[0]
    k = int(r / dx)
    off = np.arange(-k, k + 1) * dx
    cap = np.sqrt(np.maximum(r**2 - off**2, 0))
    pad = np.pad(f, k, mode="wrap")
    win = np.lib.stride_tricks.sliding_window_view(pad, 2 * k + 1)
    dil = (win + cap[None]).max(axis=1)  # height of the disc centre resting on f
    padd = np.pad(dil, k, mode="wrap")
    wind = np.lib.stride_tricks.sliding_window_view(padd, 2 * k + 1)
    return (wind - cap[None]).min(axis=1)


def _central(res, half=8.0):
    top = res.hull_vertices[:, 2] > res.hull_vertices[:, 2].max() - 3.0
    near = np.all(np.abs(res.hull_vertices[:, :2]) < half, axis=1)
    return res.lgi[top & near]


def test_flat_patch_gives_one():
    field, aff = _patch(lambda x: 0 * x, vox=1.0)
    res = local_gyrification(field, aff)
    vals = _central(res)
    assert vals.size > 10
    assert np.allclose(vals, 1.0, atol=0.02)
    # points above the patch take the value of the nearest hull vertex
    pts = np.array([[0.0, 0.0, 30.0], [5.0, -5.0, 28.0]])
    assert np.allclose(lgi_at_points(res, pts), 1.0, atol=0.02)


@pytest.mark.parametrize(
    ("wavelength", "amp"), [(8.0, 4.0), (6.0, 3.0)]
)
def test_corrugated_patch_analytic_ratio(wavelength, amp):
    def prof(x):
        return amp * np.cos(2 * np.pi * x / wavelength)

    field, aff = _patch(prof)
    res = local_gyrification(field, aff)
    xf = np.linspace(0, wavelength, 2001)[:-1]
    f = prof(xf)
    hull = _closing_profile(xf, f, _R_CLOSE)
    xs = np.append(xf, wavelength)
    expected = _arc_length(xs, np.append(f, f[0])) / _arc_length(xs, np.append(hull, hull[0]))
    got = float(np.median(_central(res)))
    assert expected > 1.8  # a strongly folded phantom
    assert abs(got / expected - 1) < 0.05, (got, expected)


def test_outer_hull_fills_a_narrow_groove():
    m = np.ones((40, 40, 30), dtype=bool)
    m[:, :, 20:] = False
    m[18:22, :, 10:20] = False  # 4 mm groove, 10 mm deep
    closed = outer_hull(m, (1.0, 1.0, 1.0), 15.0)
    assert closed[18:22, 5:35, 10:20].all()
    assert not closed[:, :, 21:].any()


def test_empty_map_raises():
    with pytest.raises(ValueError, match="empty"):
        local_gyrification(np.zeros((5, 5, 5)), np.eye(4))
