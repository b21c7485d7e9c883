"""Known cortical-thickness truth: a patch of cortex made thinner in some subjects.

In a subject drawn with ``thinned = True`` (about half, one extra draw of the anatomy
stream), the cortex inside a ball of ``radius_mm`` around a fixed point of the left lateral
convexity loses ``thinning_mm`` of grey matter at its outer (pial) side. The cortex is taken
as the image shows it (template T1w intensity above half-way between the CSF and GM
levels, inside the brain); the part of each GM-like voxel that lies within ``thinning_mm``
of that outer boundary (distance map on the subject's grid, partial voxels in proportion)
becomes CSF: its intensity moves to the CSF level by that fraction and the truth GM/CSF
fractions change accordingly.
The settings and the subject's flag are written to ``derivatives/synth-truth/sub-X/
sub-X_truth.json`` (``cortical_thinning``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage as ndi

__all__ = ["THINNING", "apply_thinning", "draw_thinning"]

#: Region (MNI152 mm, left superior parietal / postcentral convexity), radius and thinning.
THINNING: dict[str, Any] = {"centre_mni_mm": (-38.0, -38.0, 58.0), "radius_mm": 15.0,
                            "thinning_mm": 0.8}


def draw_thinning(rng: np.random.Generator, maps) -> dict[str, Any]:
    """Draw whether this subject is thinned and locate the patch in template space.

    The MNI centre is mapped to the template with the atlas's head -> MNI affine and moved
    to the nearest template voxel with GM probability >= 0.5 (so it lies on the cortex).
    """
    from isyb_dask.atlas import get_reference_atlas

    thinned = bool(rng.random() < 0.5)
    h2m = get_reference_atlas().head_to_mni_affine()
    inv = np.linalg.inv(h2m)
    c = inv[:3, :3] @ np.asarray(THINNING["centre_mni_mm"]) + inv[:3, 3]
    gm = maps.maps["gm"]
    vox = np.argwhere(gm >= 0.5)
    world = vox @ maps.affine[:3, :3].T + maps.affine[:3, 3]
    c = world[np.argmin(np.linalg.norm(world - c, axis=1))]
    return {
        "thinned": thinned,
        "centre_template_mm": [float(v) for v in c],
        "centre_mni_mm": [float(v) for v in h2m[:3, :3] @ c + h2m[:3, 3]],
        "radius_mm": float(THINNING["radius_mm"]),
        "thinning_mm": float(THINNING["thinning_mm"]) if thinned else 0.0,
        "planted_thinning_mm": float(THINNING["thinning_mm"]),
    }


def apply_thinning(
    sampled: dict[str, np.ndarray], grid, centre_scanner: np.ndarray, spec: dict[str, Any]
) -> np.ndarray:
    """Erode GM into CSF inside the patch (in place) and return the removed GM fraction.

    Parameters
    ----------
    sampled
        ``t1``, ``gm``, ``wm``, ``csf`` maps on ``grid`` (modified in place).
    grid
        The image grid (``shape``, ``affine``, ``world()``).
    centre_scanner
        Patch centre in scanner mm.
    spec
        Output of :func:`draw_thinning`.

    Returns
    -------
    np.ndarray
        float32 fraction of each voxel turned from GM into CSF (0 outside the patch).
    """
    removed = np.zeros(grid.shape, dtype=np.float32)
    if spec["thinning_mm"] <= 0:
        return removed
    aff = np.asarray(grid.affine)
    zooms = np.sqrt((aff[:3, :3] ** 2).sum(axis=0))
    t1 = sampled["t1"]
    brain = (sampled["gm"] + sampled["wm"] + sampled["csf"]) > 0.5
    i_gm = float(np.median(t1[brain & (sampled["gm"] > 0.8)]))
    i_wm = float(np.median(t1[brain & (sampled["wm"] > 0.8)]))
    i_csf = float(np.median(t1[brain & (sampled["csf"] > 0.8)]))
    # the cortex as the image shows it: brighter than half-way from CSF to GM
    inside = ~brain | (t1 >= 0.5 * (i_gm + i_csf))
    d_out = ndi.distance_transform_edt(inside, sampling=zooms)
    idx = np.ogrid[tuple(slice(0, n) for n in grid.shape)]
    dist2 = np.zeros(grid.shape, dtype=np.float32)
    for k in range(3):
        coord = sum(np.float32(aff[k, a]) * idx[a].astype(np.float32) for a in range(3))
        dist2 += (coord + np.float32(aff[k, 3] - centre_scanner[k])) ** 2
    h = float(zooms.mean())
    frac = np.clip((spec["thinning_mm"] - d_out + h) / h, 0.0, 1.0).astype(np.float32)
    # only GM-like voxels of the patch (not WM, not CSF, not outside the brain)
    frac[~brain | ~inside | (t1 >= 0.5 * (i_gm + i_wm)) | (dist2 > spec["radius_mm"] ** 2)] = 0
    removed = (frac * sampled["gm"]).astype(np.float32)
    sampled["gm"] -= removed
    sampled["csf"] += removed
    sampled["t1"] -= frac * (t1 - np.float32(i_csf))
    return removed
