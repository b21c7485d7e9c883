"""Per-vertex areas on an icosphere (exact total 4 pi r^2 in the limit)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import ConvexHull

from isyb_dask.metrics.areal import triangle_areas, vertex_areas


def icosphere(radius: float, n_sub: int) -> tuple[np.ndarray, np.ndarray]:
    """Subdivided icosahedron projected on a sphere (hull of the projected points)."""
    t = (1 + 5**0.5) / 2
    v = np.array(
        [[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t],
         [0, -1, -t], [0, 1, -t], [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]],
        dtype=np.float64,
    )
    faces = ConvexHull(v).simplices
    for _ in range(n_sub):
        mids = {}
        pts = list(v)
        new = []
        for a, b, c in faces:
            m = []
            for i, j in ((a, b), (b, c), (c, a)):
                key = (min(i, j), max(i, j))
                if key not in mids:
                    mids[key] = len(pts)
                    pts.append((v[i] + v[j]) / 2)
                m.append(mids[key])
            new += [[a, m[0], m[2]], [b, m[1], m[0]], [c, m[2], m[1]], m]
        v, faces = np.array(pts), np.array(new)
    v = radius * v / np.linalg.norm(v, axis=1, keepdims=True)
    return v, faces


def test_icosphere_total_area():
    r = 37.0
    v, f = icosphere(r, 4)  # 2562 vertices
    areas = vertex_areas(v, f)
    assert areas.shape == (v.shape[0],)
    assert np.all(areas > 0)
    assert abs(areas.sum() / (4 * np.pi * r**2) - 1) < 0.01
    assert np.isclose(areas.sum(), triangle_areas(v, f).sum())
    # scaling by s multiplies areas by s^2
    assert np.allclose(vertex_areas(2 * v, f), 4 * areas)


def test_unit_square_and_errors():
    v = np.array([[0, 0, 0], [2, 0, 0], [2, 3, 0], [0, 3, 0], [9, 9, 9]], dtype=float)
    f = np.array([[0, 1, 2], [0, 2, 3]])
    a = vertex_areas(v, f)
    assert np.isclose(a.sum(), 6.0)
    assert np.allclose(a, [2 * 3 / 3, 1.0, 2.0, 1.0, 0.0])
    with pytest.raises(ValueError, match="out of range"):
        vertex_areas(v, np.array([[0, 1, 7]]))
    with pytest.raises(ValueError, match="faces"):
        triangle_areas(v[:, :2], f)
