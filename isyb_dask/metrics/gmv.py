"""Grey-matter volume per vertex (GMV), Jacobian-modulated, on fsLR 32k.

Variant (VBM-style modulation with an affine normalisation):

1. GM probability of the T1w: the three-class segmentation of the anatomical QC
   (:func:`isyb_dask.anat.segmentation.segment_tissues`, Gaussian mixture with atlas priors,
   after N4 correction). If it cannot be computed the warped atlas GM prior is used instead
   and the fallback is recorded: ``info["source"]`` starts with ``"fallback:"``, and the
   metrics stage puts it in the store (``surface/provenance``), where the group step leaves
   it out by default (then GMV only reflects head size, not the subject's anatomy).
2. Modulation: ``GMV density = p_GM / det(A)``, where ``A`` is the T1w -> MNI world affine.
   ``1 / det(A)`` is the native volume (mm^3) that one mm^3 of MNI space came from, so the
   density is *mm^3 of the subject's grey matter per mm^3 of MNI space* (a 1-mm voxel
   equivalent); a bigger brain gives larger values. For an affine normalisation the
   Jacobian is constant over the brain (a nonlinear warp, as in CCS/FreeSurfer, would make
   it local; we have none).
3. Projection: the density is sampled between the white and pial surfaces (relative depths
   0.1-0.9, trilinear, brain-masked, see :mod:`isyb_dask.metrics.sampling`) and averaged.

This differs from CCS, where GMV is FreeSurfer's per-vertex volume (thickness x area); the
two agree in spirit (grey matter per unit template surface) but not in scale.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from isyb_dask.errors import IsybError
from isyb_dask.metrics.sampling import GM_DEPTHS, sample_to_surface
from isyb_dask.metrics.spaces import jacobian_determinant
from isyb_dask.outcome import FALLBACK_PREFIX

__all__ = ["gm_probability", "gmv_surface", "modulated_gm"]


def gm_probability(
    t1w: np.ndarray,
    zooms: tuple[float, float, float],
    brain: np.ndarray,
    priors: np.ndarray,
    *,
    threads: int = 1,
    prior_weight: float = 0.1,
    mrf_beta: float = 0.01,
) -> tuple[np.ndarray, dict[str, Any]]:
    """GM probability map of the T1w.

    Parameters
    ----------
    t1w
        T1w intensities (RAS-conformed grid).
    zooms
        Voxel sizes (mm).
    brain
        Boolean brain mask on the same grid.
    priors
        ``(3, X, Y, Z)`` CSF, GM, WM atlas priors on the same grid.
    threads
        SimpleITK threads (N4).
    prior_weight
        Weight of the spatial prior in the segmentation.
    mrf_beta
        MRF smoothing factor of the segmentation (the default is ``QCConfig.mrf_beta``,
        MRIQC's 0.01; the pipeline passes its configured value through ``build_anatomy``).

    Returns
    -------
    gm, info
        float32 GM probability (0 outside the brain) and ``{"source": ..., "fallback": bool}``;
        when the segmentation ran, ``info["posteriors"]`` holds the ``(3, X, Y, Z)`` CSF, GM,
        WM posteriors.
    """
    from isyb_dask.anat.masks import n4_correct
    from isyb_dask.anat.segmentation import segment_tissues

    try:
        positive = np.clip(np.nan_to_num(np.asarray(t1w, dtype=np.float32)), 0, None)
        inu, _ = n4_correct(positive, zooms, threads=threads)
        inu[inu < 0] = 0
        post, seg = segment_tissues(inu, brain, priors, prior_weight=prior_weight,
                                   mrf_beta=mrf_beta, zooms=zooms)
        info = {"source": "segmentation (GMM with atlas priors)", "fallback": False}
        info.update({k: v for k, v in seg.items() if np.isscalar(v)})
        info["posteriors"] = post  # (3, X, Y, Z) CSF, GM, WM (cortical thickness)
        return np.asarray(post[1], dtype=np.float32), info
    except (IsybError, ValueError, RuntimeError, np.linalg.LinAlgError) as exc:
        gm = np.asarray(priors[1], dtype=np.float32) * brain
        return gm, {"source": f"{FALLBACK_PREFIX} atlas GM prior (segmentation failed: {exc})",
                    "fallback": True}


def modulated_gm(gm: np.ndarray, t1w_to_mni: np.ndarray) -> np.ndarray:
    """Jacobian-modulated GM density (mm^3 native GM per mm^3 MNI).

    Parameters
    ----------
    gm
        GM probability on the native grid.
    t1w_to_mni
        World affine T1w mm -> MNI mm.

    Returns
    -------
    np.ndarray
        ``gm / det(t1w_to_mni)`` as float32.
    """
    det = jacobian_determinant(t1w_to_mni)
    if not np.isfinite(det) or det <= 0:
        raise ValueError(f"T1w -> MNI affine has a non-positive Jacobian ({det})")
    return (np.asarray(gm, dtype=np.float64) / det).astype(np.float32)


def gmv_surface(
    gm: np.ndarray,
    affine: np.ndarray,
    t1w_to_mni: np.ndarray,
    *,
    brain: np.ndarray | None = None,
    depths: tuple[float, ...] = GM_DEPTHS,
    surf=None,
) -> np.ndarray:
    """GMV per fsLR 32k vertex.

    Parameters
    ----------
    gm
        GM probability on the T1w grid.
    affine
        T1w voxel-to-world affine.
    t1w_to_mni
        World affine T1w -> MNI.
    brain
        Optional brain mask (samples outside are ignored).
    depths
        Ribbon depths.
    surf
        Surfaces (default fsLR 32k).

    Returns
    -------
    np.ndarray
        ``(64984,)`` float32 (mm^3 per mm^3 MNI), NaN on the medial wall.
    """
    dens = modulated_gm(gm, t1w_to_mni)
    return sample_to_surface(
        dens, affine, native_to_mni=t1w_to_mni, mask=brain, depths=depths, surf=surf
    )
