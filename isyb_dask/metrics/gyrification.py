"""Local gyrification index (LGI) after Schaer et al. (2008), from a tissue segmentation.

Schaer's LGI at a point is the area of the pial surface buried inside a region of the outer
hull (a disc of 25 mm radius), divided by the area of that hull region. Here both surfaces
are iso-surfaces of the subject's own segmentation (scikit-image marching cubes):

* pial surface: the 0.5 level of the GM + WM fraction, after filling interior holes (the
  ventricles are not cortex);
* outer hull: the same mask closed morphologically with a ball of ``closing_diameter_mm``
  (15 mm, as Schaer), computed exactly with two Euclidean distance transforms; the closed
  binary mask is smoothed (Gaussian, 1 voxel) before marching cubes to avoid staircase area.

Matching (the documented simplification of Schaer's region correspondence): every pial
triangle is assigned to its nearest hull vertex (KD-tree on triangle centroids), so each hull
vertex carries its own hull area and the pial area it covers. Hull vertices are pooled into
cells of ``cell_mm``; for each cell, ``LGI = sum(pial area) / sum(hull area)`` over the cells
whose centroid lies within ``radius_mm`` (25 mm, a ball around a point of the smooth hull,
which is the disc of Schaer on the hull). Surfaces are measured in world mm (any affine).
Points (e.g. fsLR vertices placed in T1w space) take the LGI of their nearest hull vertex.

Differences from Schaer: voxel iso-surfaces instead of FreeSurfer's pial surface (sulci that
are closed at the image resolution are missed, which lowers LGI at 2 mm), both hemispheres
in one surface (the closing bridges the interhemispheric fissure), nearest-point matching
instead of the hull-to-pial region mapping, and no smoothing of the result beyond the 25 mm
pooling.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from nibabel.affines import voxel_sizes
from scipy import ndimage
from scipy.spatial import cKDTree

from isyb_dask.metrics.areal import triangle_areas

__all__ = ["LGIResult", "iso_surface", "lgi_at_points", "local_gyrification", "outer_hull"]


@dataclass(frozen=True)
class LGIResult:
    """LGI of one segmentation.

    Attributes
    ----------
    hull_vertices
        ``(n, 3)`` world mm vertices of the outer hull.
    lgi
        ``(n,)`` LGI of each hull vertex (the value of its cell).
    pial_area, hull_area
        Total areas (mm^2) of the two surfaces.
    """

    hull_vertices: np.ndarray
    lgi: np.ndarray
    pial_area: float
    hull_area: float


def iso_surface(
    field: np.ndarray, affine: np.ndarray, level: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Marching-cubes iso-surface in world coordinates.

    Parameters
    ----------
    field
        3-D scalar field (padded internally by one voxel with 0 so the surface is closed).
    affine
        Voxel-to-world affine.
    level
        Iso-level.

    Returns
    -------
    vertices, faces
        ``(n, 3)`` world mm and ``(m, 3)`` int64.
    """
    from skimage.measure import marching_cubes

    padded = np.pad(np.asarray(field, dtype=np.float32), 1)
    verts, faces, _, _ = marching_cubes(padded, level=level)
    verts = verts - 1.0
    aff = np.asarray(affine, dtype=np.float64)
    return verts @ aff[:3, :3].T + aff[:3, 3], faces.astype(np.int64)


def outer_hull(
    mask: np.ndarray, zooms: tuple[float, ...], diameter_mm: float = 15.0
) -> np.ndarray:
    """Morphological closing with a Euclidean ball (exact, via distance transforms).

    The two distance transforms run on the mask's bounding box grown by ``2 r + 2`` voxels
    (every voxel whose closing depends on the mask lies within that box: the dilation reaches
    ``r`` beyond the mask and the erosion looks ``r`` further), which gives the same result as
    the whole grid at a fraction of the cost.

    Parameters
    ----------
    mask
        Boolean mask.
    zooms
        Voxel sizes (mm).
    diameter_mm
        Ball diameter.

    Returns
    -------
    np.ndarray
        Closed mask with interior holes filled (same shape).
    """
    r = diameter_mm / 2.0
    m_full = np.asarray(mask, dtype=bool)
    out = np.zeros(m_full.shape, dtype=bool)
    box = _bbox(m_full, 0)
    if box is None:
        return out
    pad = 2 * int(np.ceil(r / min(zooms))) + 2
    m = np.pad(m_full[box], pad)
    dil = ndimage.distance_transform_edt(~m, sampling=zooms) <= r
    closed = ndimage.distance_transform_edt(dil, sampling=zooms) > r
    closed = ndimage.binary_fill_holes(closed | m)
    # the closing of a set lies within its convex hull, hence within its bounding box
    out[box] = closed[pad:-pad, pad:-pad, pad:-pad]
    return out


def _bbox(mask: np.ndarray, margin: int) -> tuple[slice, slice, slice] | None:
    """Bounding box of a mask grown by ``margin`` voxels (clipped to the grid), or None."""
    if not mask.any():
        return None
    sl = []
    for ax in range(3):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax)))
        sl.append(slice(max(int(hit[0]) - margin, 0), min(int(hit[-1]) + 1 + margin,
                                                          mask.shape[ax])))
    return tuple(sl)  # type: ignore[return-value]


def _nearest(points: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Index of the nearest of ``points`` for each query (exact).

    A sliding-midpoint KD-tree without compacted nodes: for queries deep inside a closed
    surface (buried cortex far below the hull) it visits about 6x fewer cells than SciPy's
    default balanced, compacted tree; the answer is the same nearest point (ties aside).
    """
    tree = cKDTree(points, leafsize=32, balanced_tree=False, compact_nodes=False)
    return tree.query(queries)[1]


def _zooms(affine: np.ndarray) -> tuple[float, float, float]:
    return tuple(float(z) for z in voxel_sizes(np.asarray(affine)))


def _pool_geodesic(faces, cell, centre, c_pial, c_hull, radius_mm, chunk=256):
    """Sums of pial and hull area over the cells within ``radius_mm`` along the hull.

    Distances are shortest paths on the graph of cells that share a hull mesh edge
    (Dijkstra with a limit), so a region never jumps across a gap to another part of the
    surface (e.g. the underside of a thin structure).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import dijkstra

    n = centre.shape[0]
    a = cell[np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2]])]
    b = cell[np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0]])]
    keep = a != b
    a, b = a[keep], b[keep]
    w = np.linalg.norm(centre[a] - centre[b], axis=1) + 1e-9
    graph = coo_matrix((w, (a, b)), shape=(n, n)).tocsr()
    graph.sum_duplicates()
    graph.data = np.linalg.norm(
        centre[np.repeat(np.arange(n), np.diff(graph.indptr))] - centre[graph.indices], axis=1
    ) + 1e-9
    num = np.empty(n)
    den = np.empty(n)
    for start in range(0, n, chunk):
        idx = np.arange(start, min(n, start + chunk))
        dist = dijkstra(graph, directed=False, indices=idx, limit=radius_mm)
        inside = np.isfinite(dist)
        num[idx] = inside @ c_pial
        den[idx] = inside @ c_hull
    return num, den


def local_gyrification(
    tissue: np.ndarray,
    affine: np.ndarray,
    *,
    closing_diameter_mm: float = 15.0,
    radius_mm: float = 25.0,
    cell_mm: float = 3.0,
    sulci: np.ndarray | None = None,
) -> LGIResult:
    """LGI of a brain-tissue (GM + WM) fraction map.

    Parameters
    ----------
    tissue
        GM + WM fraction (or posterior sum), 3-D.
    affine
        Voxel-to-world affine (mm).
    closing_diameter_mm
        Diameter of the closing ball for the outer hull.
    radius_mm
        Radius of the region around each hull point.
    cell_mm
        Size of the cells hull vertices are pooled into.
    sulci
        Optional bool mask of reconstructed sulcal CSF inside the tissue (e.g. the
        thickness skeleton): carved out of the pial surface after the interior holes are
        filled (it is enclosed tissue, so hole filling would otherwise restore it).

    Returns
    -------
    LGIResult

    Raises
    ------
    ValueError
        If the map has no tissue.
    """
    tissue = np.clip(np.nan_to_num(np.asarray(tissue, dtype=np.float32)), 0, 1)
    mask = tissue > 0.5
    if not mask.any():
        raise ValueError("LGI: the tissue map is empty")
    zooms = _zooms(affine)
    # hole filling, closing and smoothing run on the tissue's bounding box (+6 voxels: the
    # closing stays inside the box and the smoothing kernel reaches 4 voxels), with the same
    # values as on the whole grid; the iso-surfaces are extracted on the whole grid so that
    # their vertex coordinates (which the 3 mm cells are cut from) are bit-identical
    box = _bbox(mask, 6)
    filled = np.zeros(mask.shape, dtype=bool)
    filled[box] = ndimage.binary_fill_holes(mask[box])
    pial_field = np.where(filled & ~mask, 1.0, tissue)
    if sulci is not None:
        pial_field[np.asarray(sulci, dtype=bool)] = 0.0
    p_v, p_f = iso_surface(pial_field, affine)
    hull = outer_hull(filled[box], zooms, closing_diameter_mm)
    h_field = np.zeros(mask.shape, dtype=np.float32)
    h_field[box] = ndimage.gaussian_filter(hull.astype(np.float32), 1.0)
    h_v, h_f = iso_surface(h_field, affine)
    p_area = triangle_areas(p_v, p_f)
    h_area_tri = triangle_areas(h_v, h_f)
    h_area = np.zeros(h_v.shape[0])
    for k in range(3):
        h_area += np.bincount(h_f[:, k], weights=h_area_tri / 3.0, minlength=h_v.shape[0])
    nearest = _nearest(h_v, p_v[p_f].mean(axis=1))
    p_on_hull = np.bincount(nearest, weights=p_area, minlength=h_v.shape[0])
    # pool hull vertices into cells
    keys = np.floor((h_v - h_v.min(axis=0)) / cell_mm).astype(np.int64)
    dims = keys.max(axis=0) + 1
    lin = (keys[:, 0] * dims[1] + keys[:, 1]) * dims[2] + keys[:, 2]
    _, cell = np.unique(lin, return_inverse=True)
    cell = cell.ravel()
    n_cells = int(cell.max()) + 1
    c_hull = np.bincount(cell, weights=h_area, minlength=n_cells)
    c_pial = np.bincount(cell, weights=p_on_hull, minlength=n_cells)
    wsum = np.maximum(c_hull, 1e-12)
    centre = np.stack(
        [
            np.bincount(cell, weights=h_v[:, k] * h_area, minlength=n_cells) / wsum
            for k in range(3)
        ],
        axis=1,
    )
    num, den = _pool_geodesic(h_f, cell, centre, c_pial, c_hull, radius_mm)
    lgi_cell = num / np.maximum(den, 1e-12)
    return LGIResult(
        hull_vertices=h_v,
        lgi=lgi_cell[cell],
        pial_area=float(p_area.sum()),
        hull_area=float(h_area_tri.sum()),
    )


def lgi_at_points(result: LGIResult, points: np.ndarray) -> np.ndarray:
    """LGI of the nearest hull vertex of each point.

    Parameters
    ----------
    result
        Output of :func:`local_gyrification`.
    points
        ``(k, 3)`` world mm (same space as the segmentation's affine).

    Returns
    -------
    np.ndarray
        ``(k,)`` float32.
    """
    idx = _nearest(result.hull_vertices, np.asarray(points, dtype=np.float64))
    return result.lgi[idx].astype(np.float32)
