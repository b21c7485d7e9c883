"""Per-vertex surface area (SA) of a triangle mesh.

``SA_v = (1/3) * sum of the areas of the triangles incident to v`` (mm^2), the usual
barycentric share (FreeSurfer's ``?h.area`` uses the same one-third rule on the subject's
own white surface; here it is applied to the fsLR midthickness surface placed in the
subject's T1w space, see ``docs/metrics_surface.md``). The shares sum to the mesh area.
"""

from __future__ import annotations

import numpy as np

__all__ = ["triangle_areas", "vertex_areas"]


def triangle_areas(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area of each triangle.

    Parameters
    ----------
    vertices
        ``(n, 3)`` coordinates (mm).
    faces
        ``(m, 3)`` vertex indices.

    Returns
    -------
    np.ndarray
        ``(m,)`` float64 areas (mm^2).
    """
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"need (n, 3) vertices and (m, 3) faces, got {v.shape}, {f.shape}")
    if f.size and (f.min() < 0 or f.max() >= v.shape[0]):
        raise ValueError("face indices out of range")
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    return 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)


def vertex_areas(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """One third of the area of the triangles around each vertex.

    Parameters
    ----------
    vertices
        ``(n, 3)`` coordinates (mm).
    faces
        ``(m, 3)`` vertex indices.

    Returns
    -------
    np.ndarray
        ``(n,)`` float64 areas (mm^2); vertices in no triangle get 0.
    """
    tri = triangle_areas(vertices, faces) / 3.0
    out = np.zeros(np.asarray(vertices).shape[0])
    f = np.asarray(faces, dtype=np.int64)
    for k in range(3):
        out += np.bincount(f[:, k], weights=tri, minlength=out.size)
    return out
