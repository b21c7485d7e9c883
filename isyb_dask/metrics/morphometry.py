"""Cortical thickness (CT), surface area (SA) and LGI of one subject on fsLR 32k.

* CT: the Laplace/Eulerian thickness map (:mod:`isyb_dask.metrics.thickness`) of the
  subject's tissue posteriors, sampled at mid-ribbon depths (0.3, 0.5, 0.7 between the
  white and pial surfaces placed in T1w space) with masked trilinear interpolation over GM
  voxels only (:func:`isyb_dask.metrics.sampling.build_sampler`); a cortical vertex whose
  samples all miss the GM takes the thickness of the nearest GM voxel within
  ``fill_mm`` of its midthickness point (the placed surfaces follow the subject's folding
  only approximately), else NaN.
* SA: one third of the area of the incident triangles of the midthickness surface in T1w
  space (:mod:`isyb_dask.metrics.areal`), mm^2.
* LGI: Schaer's ratio from the subject's own pial iso-surface and hull
  (:mod:`isyb_dask.metrics.gyrification`), read at the nearest hull vertex of each fsLR pial
  vertex in T1w space.

The medial wall (``fslr.cortex == False``) is NaN for all three, as for the other metrics.
Surfaces are ``{"L"|"R": {"white"|"midthickness"|"pial": (32492, 3)}}`` in the T1w's world
RAS mm (``SubjectAnatomy.surfaces``); :func:`place_fslr_affine` builds them from the
T1w -> MNI affine until non-linear surfaces are available.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from nibabel.affines import voxel_sizes
from scipy.spatial import cKDTree

from isyb_dask.metrics.areal import vertex_areas
from isyb_dask.metrics.fslr import N_VERTICES, FsLR32k, load_fslr32k
from isyb_dask.metrics.gyrification import lgi_at_points, local_gyrification
from isyb_dask.metrics.sampling import build_sampler
from isyb_dask.metrics.thickness import laplace_thickness

__all__ = ["CT_DEPTHS", "place_fslr_affine", "surface_morphometry", "surfaces_as_fslr"]

#: Relative depths at which the thickness map is sampled (mid-ribbon).
CT_DEPTHS: tuple[float, ...] = (0.3, 0.5, 0.7)
_KINDS = ("white", "midthickness", "pial")


def place_fslr_affine(t1w_to_mni: np.ndarray, fslr: FsLR32k | None = None) -> dict:
    """The S1200 fsLR surfaces mapped into T1w world space by an affine.

    Parameters
    ----------
    t1w_to_mni
        4x4 world affine ``x_mni = A @ x_t1w``.
    fslr
        Surfaces (default :func:`load_fslr32k`).

    Returns
    -------
    dict
        ``{"L"|"R": {"white"|"midthickness"|"pial": (32492, 3)}}`` in T1w mm.
    """
    fslr = fslr if fslr is not None else load_fslr32k()
    inv = np.linalg.inv(np.asarray(t1w_to_mni, dtype=np.float64))
    out: dict[str, dict[str, np.ndarray]] = {}
    for h in ("L", "R"):
        sl = fslr.hemi_slice(h)
        out[h] = {k: fslr.coords[k][sl] @ inv[:3, :3].T + inv[:3, 3] for k in _KINDS}
    return out


def surfaces_as_fslr(surfaces: dict, fslr: FsLR32k) -> FsLR32k:
    """Wrap per-hemisphere T1w surfaces as an :class:`FsLR32k` (for the samplers).

    Raises
    ------
    ValueError
        If a surface is missing or not ``(32492, 3)``.
    """
    coords = {}
    for k in _KINDS:
        parts = []
        for h in ("L", "R"):
            try:
                xyz = np.asarray(surfaces[h][k], dtype=np.float64)
            except (KeyError, TypeError):
                raise ValueError(f"surfaces: no {h} {k} surface") from None
            if xyz.shape != (N_VERTICES // 2, 3):
                raise ValueError(f"surfaces: {h} {k} has shape {xyz.shape}, not (32492, 3)")
            parts.append(xyz)
        coords[k] = np.concatenate(parts)
    return FsLR32k(coords=coords, faces=fslr.faces, cortex=fslr.cortex, hemi=fslr.hemi)


def _posteriors(posteriors) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(posteriors, dict):
        return np.asarray(posteriors["gm"]), np.asarray(posteriors["wm"])
    arr = np.asarray(posteriors)
    if arr.ndim != 4 or arr.shape[0] != 3:
        raise ValueError(f"posteriors must be (3, X, Y, Z) CSF, GM, WM; got {arr.shape}")
    return arr[1], arr[2]


def _open_sulci(skeleton, tissue, zooms, reach_vox: float = 2.5, min_voxels: int = 8):
    """Skeleton components that reach to within ``reach_vox`` voxels of the outside.

    Those continue a sulcus opening to the brain surface; isolated components deep in the
    tissue would only add closed bubbles to the pial iso-surface and are dropped. "Within
    ``reach_vox``" is the Euclidean distance (in voxels) from a skeleton voxel to the nearest
    voxel with ``tissue < 0.5``; it is tested only at the skeleton voxels, by looking for
    such a voxel among the offsets of the ball of that radius (the same answer as a distance
    transform of the whole grid).
    """
    del zooms  # distances are in voxels
    if skeleton is None or not skeleton.any():
        return None
    from scipy import ndimage

    lab, n = ndimage.label(skeleton, structure=np.ones((3, 3, 3), bool))
    if n == 0:
        return None
    vox = np.argwhere(lab > 0)
    comp = lab[tuple(vox.T)]
    outside = np.asarray(tissue) < 0.5
    r = int(np.floor(reach_vox))
    off = np.stack(np.meshgrid(*[np.arange(-r, r + 1)] * 3, indexing="ij"), -1).reshape(-1, 3)
    off = off[(off**2).sum(axis=1) <= reach_vox**2]
    near_out = np.zeros(vox.shape[0], dtype=bool)
    shape = np.asarray(outside.shape)
    for o in off:
        q = vox + o
        inside = np.all((q >= 0) & (q < shape), axis=1)
        near_out[inside] |= outside[tuple(q[inside].T)]
    reach = np.zeros(n + 1, dtype=bool)
    reach[comp[near_out]] = True
    size = np.bincount(comp, minlength=n + 1)
    keep = reach & (size >= min_voxels)
    keep[0] = False
    return keep[lab]


def _sample_ct(thick, gm, affine, surf, fill_mm):
    sampler = build_sampler(thick.shape, affine, mask=gm, depths=CT_DEPTHS, surf=surf)
    ct = sampler.apply(thick)
    todo = surf.cortex & ~np.isfinite(ct)
    n_fill = 0
    if todo.any() and gm.any():
        vox = np.argwhere(gm)
        world = vox @ affine[:3, :3].T + affine[:3, 3]
        dist, idx = cKDTree(world).query(surf.coords["midthickness"][todo])
        ok = dist <= fill_mm
        vals = np.full(int(todo.sum()), np.nan, dtype=np.float32)
        vals[ok] = thick[tuple(vox[idx[ok]].T)]
        ct[todo] = vals
        n_fill = int(ok.sum())
    return ct, n_fill


def surface_morphometry(
    posteriors,
    affine: np.ndarray,
    surfaces: dict,
    fslr: FsLR32k | None = None,
    *,
    fill_mm: float = 4.0,
    lgi_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """CT, SA and LGI of one subject on the 64,984 fsLR 32k vertices.

    Parameters
    ----------
    posteriors
        ``{"csf", "gm", "wm"}`` arrays or a ``(3, X, Y, Z)`` CSF, GM, WM stack.
    affine
        Voxel-to-world affine of the posteriors' grid (T1w world RAS mm).
    surfaces
        ``{"L"|"R": {"white"|"midthickness"|"pial": (32492, 3)}}`` in the same world space.
    fslr
        fsLR 32k topology and medial wall (default :func:`load_fslr32k`).
    fill_mm
        Largest distance from a vertex to the GM voxel whose thickness it may take.
    lgi_kwargs
        Extra arguments of :func:`~isyb_dask.metrics.gyrification.local_gyrification`.

    Returns
    -------
    dict
        ``"CT"``, ``"SA"``, ``"LGI"``: ``(64984,)`` float32, NaN on the medial wall;
        ``"thickness"``: native float32 thickness map (mm, 0 outside the GM);
        ``"info"``: medians, totals, fill counts and CPU seconds per step.
    """
    fslr = fslr if fslr is not None else load_fslr32k()
    affine = np.asarray(affine, dtype=np.float64)
    surf = surfaces_as_fslr(surfaces, fslr)
    p_gm, p_wm = _posteriors(posteriors)
    zooms = tuple(float(z) for z in voxel_sizes(affine))
    cpu = {}
    t0 = time.process_time()
    res = laplace_thickness(p_gm, p_wm, zooms)
    ct, n_fill = _sample_ct(res.thickness, res.gm, affine, surf, fill_mm)
    cpu["CT"] = time.process_time() - t0
    t0 = time.process_time()
    sa = np.concatenate(
        [
            vertex_areas(surf.coords["midthickness"][fslr.hemi_slice(h)], fslr.hemi_faces(h))
            for h in ("L", "R")
        ]
    ).astype(np.float32)
    cpu["SA"] = time.process_time() - t0
    t0 = time.process_time()
    tissue = np.clip(np.nan_to_num(p_gm.astype(np.float32) + p_wm.astype(np.float32)), 0, 1)
    # the reconstructed sulci of the thickness step open the pial surface too
    sulci = _open_sulci(res.skeleton, tissue, zooms)
    lgi_res = local_gyrification(tissue, affine, sulci=sulci, **(lgi_kwargs or {}))
    lgi = lgi_at_points(lgi_res, surf.coords["pial"])
    cpu["LGI"] = time.process_time() - t0
    out = {"CT": ct.astype(np.float32), "SA": sa, "LGI": lgi}
    for arr in out.values():
        arr[~fslr.cortex] = np.nan
    gm_t = res.thickness[res.gm]
    info = {
        "ct_method": "Laplace/Eulerian PDE thickness (Jones 2000; Yezzi & Prince 2003)",
        "ct_median_voxel_mm": float(np.median(gm_t)) if gm_t.size else float("nan"),
        "ct_median_vertex_mm": float(np.nanmedian(out["CT"])),
        "ct_vertices_filled_nearest_gm": n_fill,
        "ct_iterations": res.iterations,
        "sa_total_mm2": float(np.nansum(sa)),
        "sa_total_with_medial_wall_mm2": float(
            sum(
                vertex_areas(surf.coords["midthickness"][fslr.hemi_slice(h)], fslr.hemi_faces(h))
                .sum()
                for h in ("L", "R")
            )
        ),
        "lgi_mean": float(np.nanmean(out["LGI"])),
        "pial_area_mm2": lgi_res.pial_area,
        "hull_area_mm2": lgi_res.hull_area,
        "cpu_s": cpu,
    }
    return {**out, "thickness": res.thickness, "info": info}


def t1w_morphometry(
    seg_info: dict[str, Any],
    t1w_img,
    t1w_to_mni: np.ndarray,
    fslr: FsLR32k,
    *,
    anatomy=None,
) -> dict[str, Any]:
    """CT/SA/LGI for the metrics stage from its segmentation (or a ``SubjectAnatomy``).

    Parameters
    ----------
    seg_info
        ``info`` of :func:`isyb_dask.metrics.gmv.gm_probability` (holds ``"posteriors"``
        when the segmentation ran).
    t1w_img
        The canonical T1w image the posteriors are on.
    t1w_to_mni
        World affine used to place the fsLR surfaces when ``anatomy`` has none.
    fslr
        fsLR 32k surfaces.
    anatomy
        Optional ``isyb_dask.anat.reference.SubjectAnatomy``: its posteriors (canonical
        grid, ``anatomy.canonical.affine``) and ``surfaces`` are preferred when present.

    Returns
    -------
    dict
        As :func:`surface_morphometry`, ``info["surfaces"]`` says which surfaces were used.

    Raises
    ------
    ValueError
        If no tissue posteriors are available (the segmentation fell back to the priors).
    """
    surfaces = getattr(anatomy, "surfaces", None)
    if anatomy is not None and getattr(anatomy, "posteriors", None):
        post, affine = anatomy.posteriors, anatomy.canonical.affine
    else:
        post, affine = seg_info.get("posteriors"), t1w_img.affine
    if post is None:
        raise ValueError(
            f"no tissue posteriors for CT/LGI ({seg_info.get('source', 'segmentation failed')})"
        )
    how = "anatomy surfaces (SubjectAnatomy.surfaces)"
    if surfaces is None:
        surfaces = place_fslr_affine(t1w_to_mni, fslr)
        how = "S1200 fsLR surfaces placed by the T1w->MNI affine"
    res = surface_morphometry(post, affine, surfaces, fslr)
    res["info"]["surfaces"] = how
    return res


def surface_provenance(
    found: dict[str, Any], sources: dict[str, list], computed=()
) -> dict[str, str]:
    """Where each of CT/SA/LGI comes from.

    Parameters
    ----------
    found
        Metrics with values so far.
    sources
        ``{metric: [files]}``.
    computed
        Metrics computed here from the T1w (the others in ``found`` were read from
        ``--surface-derivatives``).

    Returns
    -------
    dict
        ``{metric: "computed: ..." | "FreeSurfer-derived: <files>"}`` for the metrics found.
    """
    methods = {
        "CT": "Laplace/Eulerian thickness of the T1w's tissue posteriors, mid-ribbon sampled",
        "SA": "vertex area of the fsLR midthickness surface in T1w space",
        "LGI": "Schaer LGI of the T1w's own pial iso-surface and 15 mm closing hull",
    }
    out = {}
    for m in ("CT", "SA", "LGI"):
        if m in computed:
            out[m] = f"computed: {methods[m]}"
        elif m in found:
            names = ", ".join(str(getattr(p, "name", p)) for p in sources.get(m, []))
            out[m] = f"FreeSurfer-derived: {names}"
    return out
