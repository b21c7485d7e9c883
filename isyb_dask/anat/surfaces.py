"""fsLR 32k surfaces in a subject's T1w space: placement, refinement, GIFTI output.

* :func:`place_surfaces` maps the S1200 white, midthickness and pial vertices (in
  MNI152NLin6Asym) into the T1w's world through the subject's normalisation.
* :func:`boundary_fractions` turns the bias-corrected T1w into the two maps the refinement
  follows: the WM fraction and the tissue (GM + WM) fraction of a linear two-class
  partial-volume model between the segmentation's class means, so that each boundary is the
  intensity half-way between the means of the two classes it separates.
* :func:`refine_surfaces` then moves each vertex of the white and pial surfaces along its
  normal toward the subject's own boundaries: the 0.5 crossing of the WM fraction (white,
  GM/WM boundary) and of GM + WM (pial, GM/CSF boundary), searched within ``search_mm`` of
  the current position. The wanted displacements are smoothed over the mesh (weighted
  neighbour averaging, vertices without a crossing borrow from their neighbours), capped at
  ``step_mm`` per iteration, and the step is repeated a few times. Midthickness is the
  vertex-wise mid-point of white and pial. Average surfaces cannot follow a person's folds;
  this step is what puts the midthickness in the subject's grey matter.
* :func:`write_surfaces` writes ``sub-X_hemi-{L,R}_space-T1w_den-32k_<kind>.surf.gii``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import nibabel as nb
import numpy as np
from scipy import ndimage as ndi
from scipy import sparse

__all__ = [
    "KINDS",
    "boundary_fractions",
    "mean_at_vertices",
    "place_surfaces",
    "refine_surfaces",
    "vertex_normals",
    "write_surfaces",
]

KINDS = ("white", "midthickness", "pial")
_GIFTI_SECONDARY = {"white": "GrayWhite", "midthickness": "MidThickness", "pial": "Pial"}
_GIFTI_PRIMARY = {"L": "CortexLeft", "R": "CortexRight"}


def place_surfaces(norm: Any, fslr: Any) -> dict[str, dict[str, np.ndarray]]:
    """Map the fsLR 32k white/midthickness/pial vertices into the T1w's world (RAS mm).

    Parameters
    ----------
    norm
        :class:`isyb_dask.anat.normalize.StandardNormalization` (anything with
        ``points_to_t1w``) whose standard space is the surfaces' space.
    fslr
        :class:`isyb_dask.metrics.fslr.FsLR32k`.

    Returns
    -------
    dict
        ``{"L": {"white": (32492, 3), "midthickness": ..., "pial": ...}, "R": {...}}``.
    """
    out: dict[str, dict[str, np.ndarray]] = {}
    for hemi in ("L", "R"):
        sl = fslr.hemi_slice(hemi)
        out[hemi] = {k: np.asarray(norm.points_to_t1w(fslr.coords[k][sl]), dtype=np.float64)
                     for k in KINDS}
    return out


def boundary_fractions(
    image: np.ndarray, brain: np.ndarray, means: dict[str, float] | Any
) -> dict[str, np.ndarray]:
    """WM and GM fractions of a linear two-class partial-volume model, for the refinement.

    Between the GM and WM class means a voxel's WM fraction is ``(I - mu_GM) /
    (mu_WM - mu_GM)``, between the CSF and GM means its tissue (GM + WM) fraction is
    ``(I - mu_CSF) / (mu_GM - mu_CSF)`` (both clipped to [0, 1]); GM is the tissue fraction
    minus the WM fraction. Their 0.5 crossings are the intensities half-way between the two
    class means, the classical boundary of a T1w surface reconstruction. The posterior's 0.5
    crossing moves with the class variances instead: GM, which holds the partial-volume
    voxels, has a wider spread than WM on a clean image, which pushes the posterior's GM/WM
    cut toward WM (0.65 of the way on the XA30 volunteer), and noise evens the spreads out
    (0.60 with Rician sigma 90) -- the surfaces would move with the noise level.

    Parameters
    ----------
    image
        Bias-corrected T1w (the segmentation's input).
    brain
        Brain mask; both fractions are 0 outside.
    means
        Class means ``{"csf_mean", "gm_mean", "wm_mean"}`` (the segmentation's info dict).

    Returns
    -------
    dict
        ``{"gm", "wm"}`` float32 maps in [0, 1].

    Raises
    ------
    ValueError
        If the means are not in T1w order (CSF < GM < WM).
    """
    mu_csf, mu_gm, mu_wm = (float(means[f"{t}_mean"]) for t in ("csf", "gm", "wm"))
    if not (np.isfinite([mu_csf, mu_gm, mu_wm]).all() and mu_csf < mu_gm < mu_wm):
        raise ValueError(f"boundary_fractions: class means not CSF < GM < WM "
                         f"({mu_csf:.4g}, {mu_gm:.4g}, {mu_wm:.4g})")
    data = np.asarray(image, dtype=np.float32)
    inside = np.asarray(brain, dtype=bool)
    wm = np.clip((data - np.float32(mu_gm)) / np.float32(mu_wm - mu_gm), 0.0, 1.0) * inside
    tissue = np.clip((data - np.float32(mu_csf)) / np.float32(mu_gm - mu_csf), 0.0, 1.0) * inside
    return {"gm": (tissue - wm).astype(np.float32), "wm": wm.astype(np.float32)}


def vertex_normals(coords: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unit area-weighted vertex normals (outward for the fsLR triangle orientation)."""
    tri = coords[faces]
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    vn = np.zeros_like(coords)
    for c in range(3):
        np.add.at(vn, faces[:, c], fn)
    norm = np.linalg.norm(vn, axis=1, keepdims=True)
    return vn / np.maximum(norm, 1e-12)


def _adjacency(faces: np.ndarray, n: int) -> sparse.csr_matrix:
    i = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2]])
    j = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0]])
    a = sparse.coo_matrix((np.ones(i.size), (i, j)), shape=(n, n)).tocsr()
    a = ((a + a.T) > 0).astype(np.float64)
    return a.tocsr()


def _sample(vol: np.ndarray, inv_affine: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    ijk = xyz.reshape(-1, 3) @ inv_affine[:3, :3].T + inv_affine[:3, 3]
    out = ndi.map_coordinates(vol, ijk.T, order=1, mode="constant", cval=0.0)
    return out.reshape(xyz.shape[:-1])


def _crossing(values: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Offset of the inside (>= 0.5) -> outside (< 0.5) crossing nearest to 0, per row."""
    inside = values >= 0.5
    cross = inside[:, :-1] & ~inside[:, 1:]
    v0, v1 = values[:, :-1], values[:, 1:]
    frac = np.clip((v0 - 0.5) / np.maximum(v0 - v1, 1e-6), 0.0, 1.0)
    pos = offsets[:-1] + frac * (offsets[1] - offsets[0])
    dist = np.where(cross, np.abs(pos), np.inf)
    k = np.argmin(dist, axis=1)
    rows = np.arange(values.shape[0])
    found = np.isfinite(dist[rows, k])
    return np.where(found, pos[rows, k], 0.0), found


def _smooth(
    values: np.ndarray, weights: np.ndarray, adj: sparse.csr_matrix, passes: int
) -> np.ndarray:
    """Weighted neighbour averaging; vertices of weight 0 take their neighbours' value."""
    num, den = values * weights, weights.astype(np.float64)
    for _ in range(passes):
        num = num + adj @ num
        den = den + adj @ den
        deg = 1.0 + np.asarray(adj.sum(axis=1)).ravel()
        num, den = num / deg, den / deg
    return np.where(den > 1e-9, num / np.maximum(den, 1e-9), 0.0)


def _refine_one(coords, faces, adj, vol, inv_aff, *, search_mm, step_mm, iterations, passes):
    offsets = np.arange(-search_mm, search_mm + 1e-9, 0.5)
    v = coords.copy()
    found_frac = 0.0
    for _ in range(iterations):
        n = vertex_normals(v, faces)
        pts = v[:, None, :] + offsets[None, :, None] * n[:, None, :]
        d, found = _crossing(_sample(vol, inv_aff, pts), offsets)
        found_frac = float(found.mean())
        d = _smooth(d, found.astype(np.float64), adj, passes)
        v = v + np.clip(d, -step_mm, step_mm)[:, None] * n
    return v, found_frac


def _first_crossing(values: np.ndarray, offsets: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Offset of the first fall below 0.5 at or after index ``start`` per row (nan if none)."""
    below = values < 0.5
    below &= np.arange(values.shape[1])[None, :] >= start[:, None]
    k = np.argmax(below, axis=1)
    rows = np.arange(values.shape[0])
    ok = below[rows, k] & (k > 0)
    v0, v1 = values[rows, np.maximum(k - 1, 0)], values[rows, k]
    frac = np.clip((v0 - 0.5) / np.maximum(v0 - v1, 1e-6), 0.0, 1.0)
    pos = offsets[np.maximum(k - 1, 0)] + frac * (offsets[1] - offsets[0])
    return np.where(ok, pos, np.nan)


def _thickness(white, faces, adj, gm, brain, inv_aff, *, max_mm, passes):
    """Distance from the white surface, outward, to the GM/CSF boundary.

    The boundary is the first fall of GM + WM below 0.5 or, where the GM of two sulcal banks
    touches, the first fall of GM below 0.5 after its peak, whichever comes first; vertices
    with no boundary within ``max_mm`` take their neighbours' (smoothed) value.
    """
    n = vertex_normals(white, faces)
    offsets = np.arange(0.0, max_mm + 1e-9, 0.25)
    pts = white[:, None, :] + offsets[None, :, None] * n[:, None, :]
    g = _sample(gm, inv_aff, pts)
    b = _sample(brain, inv_aff, pts)
    peak = np.argmax(g, axis=1)
    t_csf = _first_crossing(b, offsets, np.ones(len(white), dtype=int))
    t_gm = _first_crossing(g, offsets, peak)
    t = np.fmin(t_csf, t_gm)
    found = np.isfinite(t)
    # no boundary in reach (fuzzy or merged GM): the ribbon is taken symmetric about its peak
    t = np.where(found, t, np.minimum(2.0 * offsets[peak], max_mm))
    t = _smooth(t, np.ones_like(t), adj, passes)
    return np.maximum(t, 0.5), float(found.mean()), n


def refine_surfaces(
    surfaces: dict[str, dict[str, np.ndarray]],
    fslr: Any,
    posteriors: dict[str, np.ndarray],
    affine: np.ndarray,
    *,
    search_mm: float = 4.0,
    step_mm: float = 1.0,
    iterations: int = 6,
    smooth_passes: int = 2,
    max_thickness_mm: float = 5.0,
    thickness_smooth_passes: int = 0,
    info: dict | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """Move the surfaces to the subject's tissue boundaries (see module doc).

    The white surface moves along its normals to the WM map's 0.5 crossing; the pial
    surface is then placed along the refined white surface's normals at the GM/CSF
    boundary (:func:`_thickness`), and the midthickness half-way between them.

    Parameters
    ----------
    surfaces
        Placed surfaces (:func:`place_surfaces`), T1w world RAS mm; not modified.
    fslr
        :class:`isyb_dask.metrics.fslr.FsLR32k` (triangles).
    posteriors
        ``{"gm", "wm"}`` (``"csf"`` unused) tissue maps on one grid: the pipeline gives
        :func:`boundary_fractions`; segmentation posteriors work too.
    affine
        Voxel-to-RAS affine of that grid.
    search_mm, step_mm, iterations, smooth_passes
        Search half-length along the normal, maximum move per iteration, number of
        iterations, neighbour-averaging passes of the displacement per iteration.
    max_thickness_mm
        Longest GM/CSF search from the white surface.
    thickness_smooth_passes
        Neighbour-averaging passes of the thickness (0: each vertex keeps its own; measured
        best for GM at midthickness, the white surface itself being smoothed).
    info
        Optional dict receiving the fraction of vertices where a boundary was found.

    Returns
    -------
    dict
        Same layout as ``surfaces``.
    """
    gm = np.asarray(posteriors["gm"], dtype=np.float32)
    wm = np.asarray(posteriors["wm"], dtype=np.float32)
    if gm.shape != wm.shape:
        raise ValueError("refine_surfaces: GM and WM posteriors differ in shape")
    inv_aff = np.linalg.inv(np.asarray(affine, dtype=np.float64))
    brain = gm + wm
    out: dict[str, dict[str, np.ndarray]] = {}
    for hemi in ("L", "R"):
        faces = fslr.hemi_faces(hemi)
        adj = _adjacency(faces, surfaces[hemi]["white"].shape[0])
        white, fw = _refine_one(surfaces[hemi]["white"], faces, adj, wm, inv_aff,
                                search_mm=search_mm, step_mm=step_mm, iterations=iterations,
                                passes=smooth_passes)
        thick, fp, n = _thickness(white, faces, adj, gm, brain, inv_aff,
                                  max_mm=max_thickness_mm, passes=thickness_smooth_passes)
        pial = white + thick[:, None] * n
        mid = white + 0.5 * thick[:, None] * n
        out[hemi] = {"white": white, "pial": pial, "midthickness": mid}
        if info is not None:
            info[f"{hemi}_white_found"] = fw
            info[f"{hemi}_pial_found"] = fp
            info[f"{hemi}_thickness_median"] = float(np.median(thick))
    return out


def mean_at_vertices(vol: np.ndarray, affine: np.ndarray, surfaces: dict, kind: str,
                     mask: np.ndarray | None = None) -> float:
    """Mean of a 3-D map (trilinear) at one surface's vertices of both hemispheres.

    ``mask`` optionally selects vertices (``(64984,)`` bool, left then right, e.g.
    ``fslr.cortex``).
    """
    inv = np.linalg.inv(np.asarray(affine, dtype=np.float64))
    pts = np.concatenate([surfaces["L"][kind], surfaces["R"][kind]])
    vals = _sample(np.asarray(vol, dtype=np.float32), inv, pts)
    return float(vals[mask].mean() if mask is not None else vals.mean())


def write_surfaces(
    surfaces: dict[str, dict[str, np.ndarray]],
    fslr: Any,
    image: nb.Nifti1Image,
    out_dir: str | os.PathLike[str],
    subject: str,
) -> list[Path]:
    """Write the six GIFTI surfaces (RAS mm, T1w world) with JSON sidecars.

    Returns the written paths (surfaces and sidecars).
    """
    from isyb_dask.io.derivatives import write_sidecar
    from isyb_dask.io.outputs import surface_path

    written: list[Path] = []
    for hemi in ("L", "R"):
        faces = np.asarray(fslr.hemi_faces(hemi), dtype=np.int32)
        for kind in KINDS:
            xyz = np.asarray(surfaces[hemi][kind], dtype=np.float32)
            if xyz.shape != (faces.max() + 1, 3) or not np.all(np.isfinite(xyz)):
                raise ValueError(f"{subject} hemi-{hemi} {kind}: bad vertex array {xyz.shape}")
            meta = nb.gifti.GiftiMetaData({
                "AnatomicalStructurePrimary": _GIFTI_PRIMARY[hemi],
                "AnatomicalStructureSecondary": _GIFTI_SECONDARY[kind],
                "GeometricType": "Anatomical",
            })
            coordsys = nb.gifti.GiftiCoordSystem(dataspace=1, xformspace=1, xform=np.eye(4))
            pts = nb.gifti.GiftiDataArray(xyz, intent="NIFTI_INTENT_POINTSET",
                                          datatype="NIFTI_TYPE_FLOAT32", meta=meta,
                                          coordsys=coordsys)
            tri = nb.gifti.GiftiDataArray(faces, intent="NIFTI_INTENT_TRIANGLE",
                                          datatype="NIFTI_TYPE_INT32")
            img = nb.gifti.GiftiImage(darrays=[pts, tri], meta=nb.gifti.GiftiMetaData(
                {"AnatomicalStructurePrimary": _GIFTI_PRIMARY[hemi]}))
            path = surface_path(out_dir, subject, hemi, kind)
            tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
            nb.save(img, str(tmp))
            os.replace(tmp, path)
            side = write_sidecar(path, {
                "Description": f"fsLR 32k {kind} surface (S1200 template placed by the "
                               "non-linear normalisation, refined to this subject's tissue "
                               "boundaries), T1w world coordinates (RAS mm)",
                "SpatialReference": "T1w",
                "T1wAffine": np.asarray(image.affine, dtype=float).tolist(),
            })
            written += [path, side]
    return written
