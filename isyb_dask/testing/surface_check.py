"""Check where the subject surfaces land: GM probability at the midthickness vertices.

Issue 11's measure of the surface placement is the mean GM probability of the subject's
segmentation at the fsLR 32k cortical midthickness vertices in T1w space, for the surfaces the
pipeline places (SyN, then refined) against the affine-only placement. The refinement
follows partial-volume fractions built from our segmentation's class means, so the same
measure is also taken with a segmentation that shares nothing with ours but the brain mask (:func:`independent_gm`: ANTs N4 and Atropos), as
someone checking the surfaces with their own tools would.

Used by ``tests/test_morphometry_real.py`` and ``benchmarks/check_gm_midthickness.py``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from nibabel.affines import voxel_sizes

__all__ = ["PlacedSubject", "gm_scores", "independent_gm", "place_subject"]


@dataclass
class PlacedSubject:
    """One T1w through the pipeline's anatomical route.

    Attributes
    ----------
    anatomy
        :class:`isyb_dask.anat.reference.SubjectAnatomy` (posteriors, masks, registration).
    space
        TemplateFlow name of the standard space the surfaces come from.
    surfaces
        ``{"affine": ..., "syn": ..., "refined": ...}``, each ``{"L"|"R": {"white",
        "midthickness", "pial": (32492, 3)}}`` in T1w world mm.
    fslr
        The fsLR 32k surfaces (:func:`isyb_dask.metrics.fslr.load_fslr32k`).
    """

    anatomy: Any
    space: str
    surfaces: dict[str, dict]
    fslr: Any


def place_subject(t1w: Path, threads: int = 1, out_dir: Path | None = None) -> PlacedSubject:
    """Run the anatomical reference and its standard-space placement on one T1w.

    The refined surfaces come from :func:`isyb_dask.anat.placement.attach_standard_space`,
    the function ``isyb run`` calls (it also writes the transforms and surfaces, into
    ``out_dir`` or a temporary folder); the SyN-only placement is that normalisation's
    surfaces before refinement, and the affine-only baseline is the atlas registration's
    T1w -> MNI chain.
    """
    from isyb_dask.anat.placement import attach_standard_space
    from isyb_dask.anat.reference import build_anatomy
    from isyb_dask.anat.surfaces import place_surfaces
    from isyb_dask.atlas import get_reference_atlas
    from isyb_dask.config import RunConfig
    from isyb_dask.metrics.fslr import load_fslr32k
    from isyb_dask.metrics.morphometry import place_fslr_affine
    from isyb_dask.metrics.spaces import chain_from_anatomy

    atlas, cfg, fslr = get_reference_atlas(), RunConfig(), load_fslr32k()
    anatomy = build_anatomy(Path(t1w), "sub-check", atlas, cfg, threads=threads)
    with tempfile.TemporaryDirectory(prefix="isyb-check-") as tmp:
        attach_standard_space(anatomy, out_dir if out_dir is not None else tmp,
                              seed=cfg.deface.seed, threads=threads, atlas=atlas)
    surfaces = {
        "affine": place_fslr_affine(chain_from_anatomy(anatomy, atlas).t1w_to_mni, fslr),
        "syn": place_surfaces(anatomy.standard, fslr),
        "refined": anatomy.surfaces,
    }
    return PlacedSubject(anatomy, anatomy.standard.space, surfaces, fslr)


def independent_gm(anatomy, mrf: str = "[0.1,1x1x1]") -> np.ndarray:
    """GM probability from ANTs N4 and Atropos on the subject's canonical T1w.

    Only the brain mask is ours. N4 runs on the whole grid with the brain mask (its B-spline
    domain is the image), Atropos on the brain's bounding box (k-means start, 3 classes,
    5 iterations, MRF ``mrf``: ``[0.1,1x1x1]`` is the antsCorticalThickness default).

    Parameters
    ----------
    anatomy
        :class:`isyb_dask.anat.reference.SubjectAnatomy`.
    mrf
        Atropos ``-m`` argument.

    Returns
    -------
    numpy.ndarray
        float32 GM probability on the canonical grid (0 outside the brain).
    """
    import ants

    affine = anatomy.canonical.affine
    zooms = tuple(float(z) for z in voxel_sizes(affine))
    mask = np.asarray(anatomy.brain_mask, dtype=np.float32)
    image = ants.from_numpy(np.asarray(anatomy.canonical.get_fdata(), dtype=np.float32),
                            spacing=zooms)
    corrected = ants.n4_bias_field_correction(image, mask=ants.from_numpy(mask, spacing=zooms))
    box = tuple(slice(max(int(i.min()) - 2, 0), int(i.max()) + 3) for i in np.nonzero(mask))
    with _private_tempdir():
        seg = ants.atropos(
            a=ants.from_numpy(np.ascontiguousarray(corrected.numpy()[box]), spacing=zooms),
            x=ants.from_numpy(np.ascontiguousarray(mask[box]), spacing=zooms),
            i="kmeans[3]", m=mrf, c="[5,0]",
        )
        gm = np.zeros(mask.shape, dtype=np.float32)
        gm[box] = seg["probabilityimages"][1].numpy()  # k-means classes: CSF, GM, WM
    return gm


@contextmanager
def _private_tempdir() -> Iterator[Path]:
    """Point :mod:`tempfile` at a folder of our own for the duration, then delete it.

    ``ants.atropos`` writes its probability images to ``tempfile.mktemp()`` names and never
    removes them (three files of ~0.5 MB per 1 mm head left in ``/tmp`` on every call).
    Not thread-safe (``tempfile.tempdir`` is process-wide); used only by this check.
    """
    before = tempfile.tempdir
    with tempfile.TemporaryDirectory(prefix="isyb-atropos-") as tmp:
        tempfile.tempdir = tmp
        try:
            yield Path(tmp)
        finally:
            tempfile.tempdir = before


def gm_scores(subject: PlacedSubject, probability: np.ndarray) -> dict[str, float]:
    """Mean ``probability`` at the cortical midthickness vertices of each placement."""
    from isyb_dask.anat.surfaces import mean_at_vertices

    affine = subject.anatomy.canonical.affine
    return {
        name: float(mean_at_vertices(probability, affine, surf, "midthickness",
                                     subject.fslr.cortex))
        for name, surf in subject.surfaces.items()
    }
