"""The rigid-body convention shared by motion correction and the generated data.

Six parameters ``(tx, ty, tz, rx, ry, rz)`` (mm, radians) act about a centre ``c``:
``M @ [p, 1] = R (p - c) + c + t`` with ``R = Rz @ Ry @ Rx`` (rotation about x applied
first). The synthetic head motion (``synth/``) is generated with it and the realignment
(``bold/hmc.py``) estimates it, so estimated parameters can be compared with the truth.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["rigid_matrix", "rotation_matrix"]


def rotation_matrix(rx: float, ry: float, rz: float) -> np.ndarray:
    """``Rz @ Ry @ Rx`` for angles in radians (rotation about x applied first)."""
    c = np.cos([rx, ry, rz])
    s = np.sin([rx, ry, rz])
    rot_x = np.array([[1.0, 0.0, 0.0], [0.0, c[0], -s[0]], [0.0, s[0], c[0]]])
    rot_y = np.array([[c[1], 0.0, s[1]], [0.0, 1.0, 0.0], [-s[1], 0.0, c[1]]])
    rot_z = np.array([[c[2], -s[2], 0.0], [s[2], c[2], 0.0], [0.0, 0.0, 1.0]])
    return rot_z @ rot_y @ rot_x


def rigid_matrix(params: Sequence[float], centre: Sequence[float]) -> np.ndarray:
    """4x4 world matrix of ``params`` acting about ``centre`` (module convention).

    Parameters
    ----------
    params
        ``(tx, ty, tz, rx, ry, rz)`` in mm and radians.
    centre
        Rotation centre in world mm.

    Returns
    -------
    numpy.ndarray
        ``M`` with ``M @ [p, 1] = R (p - c) + c + t``.
    """
    p = np.asarray(params, dtype=float)
    rot = rotation_matrix(p[3], p[4], p[5])
    c = np.asarray(centre, dtype=float)
    out = np.eye(4)
    out[:3, :3] = rot
    out[:3, 3] = c + p[:3] - rot @ c
    return out
