"""Standard space and subject surfaces of a subject's anatomical reference.

After :func:`isyb_dask.anat.reference.build_anatomy`, the subject task calls
:func:`attach_standard_space` once: the T1w is normalised non-linearly to MNI152NLin6Asym
(:func:`isyb_dask.anat.normalize.normalize_to_standard`, ANTs SyN through the cached
2009aSym -> NLin6Asym bridge), the fsLR 32k white/midthickness/pial surfaces are carried into
the T1w through that transform and refined to the subject's own GM/WM and GM/CSF boundaries
(:mod:`isyb_dask.anat.surfaces`), and the transforms and surfaces are written as BIDS
derivatives. Every stage then samples through ``anatomy.surfaces``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import nibabel as nb
import numpy as np

__all__ = ["attach_standard_space", "refinement_maps", "subject_fslr"]

#: Surface kinds placed in the subject's T1w space.
SUBJECT_KINDS = ("white", "midthickness", "pial")


def attach_standard_space(
    anatomy: Any,
    out_dir: str | os.PathLike[str],
    *,
    seed: int,
    threads: int,
    cache_dir: str | os.PathLike[str] | None = None,
    atlas: Any = None,
) -> list[Path]:
    """Normalise, place and refine the surfaces; fill ``anatomy.standard``/``.surfaces``.

    Parameters
    ----------
    anatomy
        :class:`isyb_dask.anat.reference.SubjectAnatomy` (modified in place).
    out_dir
        Derivatives root.
    seed, threads
        Registration seed and thread count.
    cache_dir
        Cache root of the reference data (the bridge lives in ``bridge-v*`` below it).
    atlas
        The :class:`isyb_dask.atlas.ReferenceAtlas` whose head the anatomy was registered
        to. Its head -> MNI152NLin2009aSym affine composed with the subject's atlas
        registration is the start of the SyN (no second affine registration); without it
        ANTs runs its own affine stage first.

    Returns
    -------
    list of Path
        The written files (transforms, surfaces and their sidecars).
    """
    from isyb_dask.anat.normalize import normalize_to_standard, write_transforms
    from isyb_dask.anat.surfaces import place_surfaces, refine_surfaces, write_surfaces
    from isyb_dask.metrics.fslr import load_fslr32k

    n4 = nb.Nifti1Image(np.asarray(anatomy.n4, dtype=np.float32), anatomy.canonical.affine)
    initial = None if atlas is None else atlas.head_to_mni_affine() @ anatomy.t1w_to_atlas
    norm = normalize_to_standard(
        n4, anatomy.brain_mask, anatomy.posteriors, seed=seed, threads=threads,
        cache_dir=None if cache_dir is None else Path(cache_dir), initial=initial,
    )
    fslr = load_fslr32k()
    refine_info: dict = {}
    surfaces = refine_surfaces(place_surfaces(norm, fslr), fslr,
                               refinement_maps(anatomy, refine_info), anatomy.canonical.affine,
                               info=refine_info)
    anatomy.standard = norm
    anatomy.surfaces = surfaces
    info = getattr(anatomy, "info", None)
    if isinstance(info, dict):
        info["standard_space"] = norm.space
        info["surface_refinement"] = {k: v for k, v in refine_info.items()
                                      if np.isscalar(v) or isinstance(v, str)}
    paths = list(write_transforms(norm, out_dir, anatomy.subject))
    paths += list(write_surfaces(surfaces, fslr, anatomy.image, out_dir, anatomy.subject))
    return paths


def refinement_maps(anatomy: Any, info: dict | None = None) -> dict[str, np.ndarray]:
    """The GM/WM maps whose boundaries the surfaces are refined to.

    The partial-volume fractions of :func:`isyb_dask.anat.surfaces.boundary_fractions` from
    the N4 image and the segmentation's class means (``anatomy.info["segmentation"]``); an
    anatomy without those means (built by hand) gives its posteriors. ``info`` receives
    ``boundary_maps``, naming which was used.
    """
    from isyb_dask.anat.surfaces import boundary_fractions

    seg = (getattr(anatomy, "info", None) or {}).get("segmentation") or {}
    if all(f"{t}_mean" in seg for t in ("csf", "gm", "wm")):
        maps, used = boundary_fractions(anatomy.n4, anatomy.brain_mask, seg), "fractions"
    else:
        maps, used = anatomy.posteriors, "posteriors"
    if info is not None:
        info["boundary_maps"] = used
    return maps


def subject_fslr(fslr: Any, surfaces: dict[str, dict[str, np.ndarray]]) -> Any:
    """The fsLR 32k mesh with the subject's T1w-space white/midthickness/pial coordinates.

    Topology, medial-wall mask and the inflated/sphere coordinates (figures only) stay the
    template's; the three placed kinds are the subject's (left then right, as the template's
    concatenation).
    """
    import dataclasses

    coords = dict(fslr.coords)
    for kind in SUBJECT_KINDS:
        coords[kind] = np.vstack([np.asarray(surfaces["L"][kind], dtype=np.float64),
                                  np.asarray(surfaces["R"][kind], dtype=np.float64)])
    return dataclasses.replace(fslr, coords=coords)
