"""The one rigid convention (isyb_dask/rigid.py; bold/rigid.py delegates to it): its geometry."""

from __future__ import annotations

import numpy as np

from isyb_dask.rigid import rigid_matrix, rotation_matrix


def test_rotation_order_and_centre():
    # 90 degrees about z maps x to y; about x maps y to z; x is applied first
    np.testing.assert_allclose(rotation_matrix(0, 0, np.pi / 2) @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(rotation_matrix(np.pi / 2, 0, 0) @ [0, 1, 0], [0, 0, 1], atol=1e-12)
    both = rotation_matrix(np.pi / 2, 0, np.pi / 2)  # x first: y -> z, then z stays z
    np.testing.assert_allclose(both @ [0, 1, 0], [0, 0, 1], atol=1e-12)
    c = np.array([10.0, -5.0, 3.0])
    m = rigid_matrix([1.0, 2.0, 3.0, 0.1, -0.2, 0.3], c)
    np.testing.assert_allclose(m @ np.append(c, 1.0), np.append(c + [1.0, 2.0, 3.0], 1.0))
    np.testing.assert_allclose(m[:3, :3] @ m[:3, :3].T, np.eye(3), atol=1e-12)
