"""Registration chains of the surface metrics: modality -> T1w -> MNI (world-to-world affines).

Choices
-------
* **T1w -> MNI** goes through the reference *head* template: the atlas head (pydeface
  ``mean_reg2mean``, with face and skull) is registered to the subject's whole-head T1w
  (12-dof affine, :func:`isyb_dask.anat.segmentation.register_atlas`, which wraps
  :func:`isyb_dask.registration.register_affine`), then the atlas's fixed ``head_to_mni``
  affine is applied: ``A_t1w->mni = H2M @ M`` with ``M`` mapping T1w mm to head mm. A
  head-to-head registration needs no skull stripping of the subject (a direct T1w-brain ->
  ``mni_t1_brain`` registration would), it is the same, tested registration the face
  masking and the anatomical QC use (so the QC stage and this stage agree on the subject's
  brain mask and priors), and the head->MNI part is computed once per installation.
* **modality -> T1w** is rigid (6 dof, Mattes MI) from a 3-D reference of the modality (BOLD
  temporal mean, mean b0, mean ASL control / M0) to the T1w, restricted to the T1w brain
  mask (the warped atlas mask): ``R`` maps T1w mm to modality mm, so
  ``A_mod->mni = A_t1w->mni @ inv(R)``.

All matrices are RAS world-to-world affines (``x_out = A @ x_in``, homogeneous mm).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import nibabel as nb
import numpy as np
from nibabel.affines import voxel_sizes
from scipy import ndimage

from isyb_dask import registration
from isyb_dask.errors import RegistrationError
from isyb_dask.registration import to_sitk

__all__ = [
    "SpaceChain",
    "chain_from_anatomy",
    "jacobian_determinant",
    "mni_grid",
    "modality_to_t1w",
    "resample_to_grid",
    "t1w_to_mni",
]


@dataclass
class SpaceChain:
    """The T1w -> MNI part of a subject's registration chain.

    Attributes
    ----------
    t1w_to_mni
        4x4 world affine.
    t1w_to_head
        4x4 world affine (T1w mm -> atlas head mm).
    brain
        Boolean brain mask on the T1w grid (warped atlas mask).
    priors
        ``(3, X, Y, Z)`` CSF, GM, WM atlas priors on the T1w grid.
    checks
        Registration metric, plausibility and the transform checks.
    """

    t1w_to_mni: np.ndarray
    t1w_to_head: np.ndarray
    brain: np.ndarray
    priors: np.ndarray
    checks: dict[str, Any] = field(default_factory=dict)
    #: World affine from the T1w to the space the sampling surfaces are in: None means the
    #: fsLR surfaces are in MNI (``t1w_to_mni``); the identity when they were placed in the
    #: subject's T1w space (``SubjectAnatomy.surfaces``).
    t1w_to_sampling: np.ndarray | None = None

    @property
    def sampling_affine(self) -> np.ndarray:
        """T1w world -> world of the sampling surfaces."""
        return self.t1w_to_mni if self.t1w_to_sampling is None else self.t1w_to_sampling


def jacobian_determinant(affine: np.ndarray) -> float:
    """Determinant of the linear part of a world affine (volume ratio out/in)."""
    return float(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3]))


@lru_cache(maxsize=4)
def _grid_cached(path: str, step: float) -> tuple[tuple[int, int, int], tuple[float, ...]]:
    img = nb.load(path)
    aff = img.affine.copy()
    scale = step / voxel_sizes(aff)
    out = aff.copy()
    out[:3, :3] = aff[:3, :3] * scale
    shape = tuple(int(np.ceil(n / s)) for n, s in zip(img.shape[:3], scale))
    return shape, tuple(out.ravel())


def mni_grid(atlas, step_mm: float = 2.0) -> tuple[tuple[int, int, int], np.ndarray]:
    """The MNI output grid: the nilearn MNI brain's box sampled every ``step_mm``.

    Parameters
    ----------
    atlas
        :class:`isyb_dask.atlas.ReferenceAtlas`.
    step_mm
        Voxel size (2 mm by default).

    Returns
    -------
    shape, affine
    """
    shape, aff = _grid_cached(str(atlas.mni_t1_brain), float(step_mm))
    return shape, np.asarray(aff).reshape(4, 4)


def t1w_to_mni(t1w: nb.Nifti1Image, atlas, *, seed: int, threads: int = 1) -> SpaceChain:
    """Register the atlas head to the T1w and chain with the atlas's head->MNI affine.

    Parameters
    ----------
    t1w
        Subject T1w, RAS-conformed (:func:`isyb_dask.registration.to_canonical`).
    atlas
        :class:`isyb_dask.atlas.ReferenceAtlas`.
    seed
        Metric sampling seed.
    threads
        SimpleITK threads.

    Returns
    -------
    SpaceChain
        Brain mask and priors are on the grid of ``t1w``.

    Raises
    ------
    RegistrationError
        If the registration fails or the transform is implausible.
    """
    from isyb_dask.anat.segmentation import register_atlas, warp_atlas

    can = t1w
    head = nb.load(str(atlas.head))
    reg = register_atlas(can, head, seed=seed, threads=threads)
    if not reg.plausible:
        raise RegistrationError(
            f"T1w -> head template registration implausible: {reg.checks.get('violations')}"
        )
    priors_img = tuple(nb.load(str(p)) for p in (atlas.csf_prob, atlas.gm_prob, atlas.wm_prob))
    warped = warp_atlas(can, reg, nb.load(str(atlas.brain_mask)), priors_img, threads=threads)
    t1_to_head = np.asarray(warped.image_to_atlas, dtype=np.float64)
    chain = atlas.head_to_mni_affine() @ t1_to_head
    brain = np.asarray(warped.brain, dtype=bool)
    priors = np.asarray(warped.priors, dtype=np.float32)
    checks = {"metric": float(reg.metric), "plausible": bool(reg.plausible)}
    checks.update({k: v for k, v in reg.checks.items() if k != "violations"})
    return SpaceChain(
        t1w_to_mni=chain, t1w_to_head=t1_to_head, brain=brain, priors=priors, checks=checks
    )


def chain_from_anatomy(anatomy, atlas) -> SpaceChain:
    """The T1w -> MNI chain of a subject's anatomical reference (no registration).

    Uses the reference's one template registration (``anatomy.atlas_registration``, the
    deface-grade registration of the built-in head, which is the atlas head) and the
    atlas's head -> MNI affine; brain mask and priors are the reference's.

    Parameters
    ----------
    anatomy
        :class:`isyb_dask.anat.reference.SubjectAnatomy`.
    atlas
        :class:`isyb_dask.atlas.ReferenceAtlas`.

    Returns
    -------
    SpaceChain
        On the canonical grid of ``anatomy``.
    """
    t1_to_head = anatomy.t1w_to_atlas
    reg = anatomy.atlas_registration
    checks = {"metric": float(reg.metric), "plausible": bool(reg.plausible)}
    checks.update({k: v for k, v in reg.checks.items() if k != "violations"})
    priors = anatomy.priors
    if priors is None:
        priors = np.stack([anatomy.posteriors[t] for t in ("csf", "gm", "wm")])
    return SpaceChain(
        t1w_to_mni=atlas.head_to_mni_affine() @ t1_to_head,
        t1w_to_head=t1_to_head,
        brain=np.asarray(anatomy.brain_mask, dtype=bool),
        priors=np.asarray(priors, dtype=np.float32),
        checks=checks,
    )


def modality_to_t1w(
    reference: np.ndarray,
    reference_affine: np.ndarray,
    t1w: nb.Nifti1Image,
    t1w_brain: np.ndarray,
    *,
    seed: int,
    threads: int = 1,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Rigid registration of a modality's 3-D reference image to the T1w.

    Parameters
    ----------
    reference, reference_affine
        3-D image of the modality (e.g. mean BOLD) and its voxel-to-world affine.
    t1w
        Subject T1w.
    t1w_brain
        Boolean brain mask on the T1w grid (dilated by 2 voxels to keep the brain edge).
    seed
        Metric sampling seed.
    threads
        SimpleITK threads.

    Returns
    -------
    modality_to_t1w, checks
        4x4 world affine (modality mm -> T1w mm) and the registration checks.

    Raises
    ------
    RegistrationError
        When SimpleITK fails or the rigid transform is implausible.
    """
    import SimpleITK as sitk

    fixed = to_sitk(t1w)
    moving = to_sitk(np.asarray(reference, dtype=np.float32), reference_affine)
    mask = ndimage.binary_dilation(np.asarray(t1w_brain, bool), iterations=2)
    fixed_mask = sitk.Cast(to_sitk(mask.astype(np.float32), t1w.affine) > 0.5, sitk.sitkUInt8)
    reg = registration.register_affine(  # looked up at call time (patchable, one copy)
        fixed,
        moving,
        dof=6,
        seed=seed,
        threads=threads,
        fixed_mask=fixed_mask,
        levels_mm=(8.0, 4.0),
        coarse_search=True,
    )
    if not reg.plausible:
        raise RegistrationError(f"rigid registration to the T1w implausible: {reg.checks}")
    r = np.asarray(reg.matrix_ras, dtype=np.float64)  # T1w mm -> modality mm
    checks = {"metric": float(reg.metric), "plausible": bool(reg.plausible)}
    return np.linalg.inv(r), checks


def resample_to_grid(
    data: np.ndarray,
    affine: np.ndarray,
    native_to_out: np.ndarray,
    shape: tuple[int, int, int],
    out_affine: np.ndarray,
    *,
    order: int = 1,
) -> np.ndarray:
    """Resample a native 3-D map onto another grid through a world affine.

    Parameters
    ----------
    data, affine
        Native map and its voxel-to-world affine.
    native_to_out
        World affine native mm -> output-space mm.
    shape, out_affine
        Output grid.
    order
        Spline order (1 = trilinear, 0 = nearest for masks).

    Returns
    -------
    np.ndarray
        float32 map, 0 outside the native field of view.
    """
    vox = np.linalg.inv(affine) @ np.linalg.inv(native_to_out) @ out_affine
    return ndimage.affine_transform(
        np.asarray(data, dtype=np.float32),
        vox[:3, :3],
        offset=vox[:3, 3],
        output_shape=tuple(shape),
        order=order,
        mode="constant",
        cval=0.0,
    ).astype(np.float32)
