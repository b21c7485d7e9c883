"""``zero``: pydeface-style removal, a plain coat at the cut and a smooth cover over the brain.

1. :func:`zero_face`: ``volume * keep`` with the interpolated KEEP weight (pydeface);
2. :func:`coat_cut`: head voxels within ``coat_mm`` of the removed region get one tissue
   intensity (mask_face's ``coating`` idea), so orbits, nasal cavity and sinuses do not show
   as eye sockets and nostrils on a skin render;
3. :func:`cover_protected`: where the cut reaches the protected (dilated) brain, its surface
   — gyri, sulci, the orbital roofs — would be the exposed wall; a smooth shell of the same
   tissue intensity is laid over it inside the removed region. The shell is the region
   where the Gaussian-smoothed signed distance to the protected mask is below ``cover_mm``
   (one smooth level set, no relief), united with a thin ``min_mm`` layer so every exposed
   protected voxel is covered. Brain voxels are never written (the cover lies outside the
   protected mask, which the stage restores anyway).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from isyb_dask.blocks import padded_box

__all__ = ["coat_cut", "cover_protected", "zero_face"]


def zero_face(volume: np.ndarray, keep_weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """pydeface-style removal: ``volume * keep`` with the interpolated KEEP mask in [0, 1].

    Returns the defaced volume (float64) and the mask of voxels whose weight is below 1.
    """
    w = np.clip(np.asarray(keep_weight, dtype=np.float64), 0.0, 1.0)
    return np.asarray(volume, dtype=np.float64) * w, w < 1.0


def coat_cut(
    volume: np.ndarray,
    removed: np.ndarray,
    head: np.ndarray,
    voxel_mm: np.ndarray,
    *,
    coat_mm: float = 8.0,
    threshold: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Give the surface left by zeroing a uniform coat (mask_face's ``coating`` idea).

    Zeroing the face exposes orbits, nasal cavity and sinuses; dark eyeballs behind the cut
    read as eye sockets on a skin render. Head voxels within ``coat_mm`` of the removed
    region are set to the median intensity of those coat voxels above ``threshold`` (the
    tissue), so the cut is a plain wall.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        The coated volume (float64) and the mask of coated voxels.
    """
    vol = np.asarray(volume, dtype=np.float64)
    removed = np.asarray(removed, dtype=bool)
    out = vol.copy()
    coat = np.zeros(vol.shape, dtype=bool)
    if not removed.any():
        return out, coat
    vox = np.asarray(voxel_mm, dtype=np.float64)
    pad = np.ceil(coat_mm / vox).astype(int) + 1
    box = padded_box(removed, pad)
    near = ndi.distance_transform_edt(~removed[box], sampling=vox) <= coat_mm
    coat[box] = near & np.asarray(head, dtype=bool)[box] & ~removed[box]
    if not coat.any():
        return out, coat
    vals = vol[coat]
    if threshold is not None and (vals > threshold).any():
        vals = vals[vals > threshold]
    out[coat] = float(np.median(vals))
    return out, coat


def cover_protected(
    volume: np.ndarray,
    removed: np.ndarray,
    protect: np.ndarray,
    voxel_mm: np.ndarray,
    value: float,
    *,
    cover_mm: float = 6.0,
    smooth_mm: float = 8.0,
    min_mm: float = 2.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Lay a smooth shell of intensity ``value`` over the protected mask inside the cut.

    Parameters
    ----------
    volume
        The zeroed (and coated) volume.
    removed
        Voxels the zeroing removed (KEEP weight below 0.5).
    protect
        The protected (dilated brain) mask; never written.
    voxel_mm
        Voxel sizes of the three axes.
    value
        Tissue intensity of the shell (the coat's).
    cover_mm
        Level of the smoothed signed distance that bounds the shell (mm outside the mask).
    smooth_mm
        Gaussian sigma (mm) of the signed distance: relief finer than about this is gone.
    min_mm
        Every removed voxel within this distance of the protected mask is in the shell.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        The covered volume (float64) and the mask of covered voxels.
    """
    vol = np.asarray(volume, dtype=np.float64)
    removed = np.asarray(removed, dtype=bool)
    protect = np.asarray(protect, dtype=bool)
    out = vol.copy()
    cover = np.zeros(vol.shape, dtype=bool)
    vox = np.asarray(voxel_mm, dtype=np.float64)
    if not removed.any() or not protect.any():
        return out, cover
    reach = cover_mm + 3.0 * smooth_mm
    box = padded_box(removed, np.ceil(reach / vox).astype(int) + 1)
    pb = protect[box]
    if not pb.any():
        return out, cover
    # signed distance to the protected mask on a grid of about 2 mm (fine index i sits at
    # coarse coordinate i / f), raw and Gaussian-smoothed; both are read back only at the
    # removed voxels that can be in the shell
    f = max(1, int(round(2.0 / float(vox.min()))))
    pc = pb[::f, ::f, ::f]
    cvox = vox * f
    sd = (ndi.distance_transform_edt(~pc, sampling=cvox)
          - ndi.distance_transform_edt(pc, sampling=cvox)).astype(np.float32)
    sds = ndi.gaussian_filter(sd, smooth_mm / cvox, mode="nearest")
    reach_c = np.minimum(sd - min_mm, sds - cover_mm) <= float(cvox.max()) + float(vox.max())
    cand = np.nonzero(removed[box] & ~pb)
    near_c = np.minimum(np.rint(np.stack(cand) / f).astype(np.intp),
                        np.asarray(pc.shape)[:, None] - 1)
    keep = reach_c[tuple(near_c)]
    cand = tuple(c[keep] for c in cand)
    if cand[0].size == 0:
        return out, cover
    pts = np.stack(cand).astype(np.float32) / f
    d_raw = ndi.map_coordinates(sd, pts, order=1, mode="nearest")
    d_s = ndi.map_coordinates(sds, pts, order=1, mode="nearest")
    # partial volume across the smooth level set (no voxel terraces on the rendered surface)
    frac = np.clip(0.5 - (d_s - cover_mm) / float(vox.min()), 0.0, 1.0)
    frac = np.maximum(frac, (d_raw <= min_mm).astype(np.float64))
    sel = frac > 0
    idx = tuple(c[sel] + (box[i].start or 0) for i, c in enumerate(cand))
    cover[idx] = True
    out[idx] = np.maximum(out[idx], value * frac[sel])
    return out, cover
