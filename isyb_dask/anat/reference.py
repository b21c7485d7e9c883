"""The per-subject anatomical reference, computed once at the start of the subject task.

:func:`build_anatomy` reads, validates and reorients the T1w once, hashes it once and derives
everything the T1w-side stages share (issue 11):

1. the T1w through :func:`isyb_dask.io.nifti.load_image` (the single validation gate) and
   :func:`isyb_dask.io.nifti.check_head_in_view`; its closest-canonical (RAS) float32 copy;
2. **one** 12-dof registration of the built-in template head (pydeface ``mean_reg2mean``,
   which is also the reference atlas head) to the canonical T1w: the deface-grade one
   (:func:`isyb_dask.registration.register_affine` with the deface seed, full-resolution
   subject, template head down-sampled to 2 mm), kept as ``atlas_registration``; deface
   reuses it for the built-in template, the QC and the metrics use it for the atlas brain
   mask, tissue priors and the T1w -> MNI chain;
3. the atlas brain mask and CSF/GM/WM priors carried onto the T1w
   (:func:`isyb_dask.anat.segmentation.warp_atlas`);
4. N4 bias correction fitted in that brain mask (:func:`isyb_dask.anat.masks.n4_correct`);
5. the three-class EM segmentation with the priors
   (:func:`isyb_dask.anat.segmentation.segment_tissues`): the one segmentation used by the
   anatomical QC, the GMV metric and the BOLD nuisance model (WM/CSF signals);
6. the head mask (MRIQC gradient recipe, :func:`isyb_dask.anat.masks.head_mask`) and the
   rotation (zero-padding) mask used by FBER and EFC.

Everything is on the canonical grid of the T1w; :func:`isyb_dask.registration.from_canonical`
puts maps back on the original grid for writing (:mod:`isyb_dask.anat.derivatives`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nibabel as nb
import numpy as np

from isyb_dask import registration as reg
from isyb_dask.errors import InputError, RegistrationError
from isyb_dask.io.nifti import check_head_in_view, file_sha256, load_image
from isyb_dask.registration.heads import REGISTRATION_STEP_MM, head_on_grid

if TYPE_CHECKING:  # pragma: no cover
    import SimpleITK as sitk

    from isyb_dask.atlas import ReferenceAtlas

__all__ = ["AnatomyError", "SubjectAnatomy", "build_anatomy", "atlas_head_image"]

#: Registrations tried (seed, seed + 1, ...) before the subject's T1w is declared unusable.
REG_ATTEMPTS = 3


class AnatomyError(InputError):
    """The T1w was readable but its anatomy could not be derived (empty brain mask, no
    segmentation): the T1w-side stages that need the reference fail, deface can still run."""


@dataclass
class SubjectAnatomy:
    """One subject's anatomical reference (see module docstring and ANATOMY_INTERFACE.md).

    Attributes
    ----------
    subject
        Subject label (``"sub-01"``).
    t1w
        Input path.
    t1w_sha256
        SHA-256 of the input file (computed once; sidecars reuse it).
    image
        Validated T1w as loaded (original grid and orientation).
    canonical
        Closest-canonical (RAS) float32 copy, same world coordinates.
    n4
        Bias-corrected T1w (``clip(T1w, 0) / bias``), canonical grid, float32.
    bias
        Multiplicative N4 bias field, canonical grid, float32.
    head_mask, brain_mask
        Boolean masks on the canonical grid (brain: atlas brain mask through the registration).
    posteriors
        ``"csf"``, ``"gm"``, ``"wm"`` float32 posteriors in [0, 1] (0 outside the brain).
    atlas_registration
        :class:`isyb_dask.registration.AffineRegistration` of the built-in head (moving) to the
        canonical T1w (fixed): maps subject mm to template-head mm.
    standard, surfaces
        Non-linear normalisation and subject surfaces (filled in by ``anat.normalize`` /
        ``anat.surfaces`` when available; None keeps the affine sampling).
    priors
        ``(3, X, Y, Z)`` CSF, GM, WM atlas priors warped onto the canonical grid.
    rotation
        Rotation (zero-padding) mask (bool, canonical grid), excluded by FBER and EFC.
    info
        Diagnostics: registration metric and checks, segmentation parameters, timings.
    """

    subject: str
    t1w: Path
    t1w_sha256: str
    image: nb.Nifti1Image
    canonical: nb.Nifti1Image
    n4: np.ndarray
    bias: np.ndarray
    head_mask: np.ndarray
    brain_mask: np.ndarray
    posteriors: dict[str, np.ndarray]
    atlas_registration: reg.AffineRegistration
    standard: Any | None = None
    surfaces: dict[str, dict[str, np.ndarray]] | None = None
    priors: np.ndarray | None = None
    rotation: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def zooms(self) -> tuple[float, float, float]:
        """Voxel sizes (mm) of the canonical grid."""
        return tuple(float(z) for z in self.canonical.header.get_zooms()[:3])  # type: ignore[return-value]

    @property
    def t1w_to_atlas(self) -> np.ndarray:
        """4x4 RAS world affine: T1w mm -> template-head mm."""
        return np.asarray(self.atlas_registration.matrix_ras, dtype=np.float64)


def atlas_head_image(path: str | os.PathLike[str],
                     stored: str | os.PathLike[str] | None = None) -> "sitk.Image":
    """The template head as the deface-grade registration uses it (canonical, 2 mm, cached).

    The same cached image the deface stage registers for the built-in template
    (:func:`isyb_dask.registration.heads.head_on_grid`); ``stored`` is the run's written
    copy of it (:attr:`isyb_dask.deface.templates.Template.grid_head`), read if given.
    """
    return head_on_grid(path, REGISTRATION_STEP_MM, stored=stored)


def _register_head(fixed: "sitk.Image", head_path: Path, *, seed: int, threads: int,
                   stored: str | os.PathLike[str] | None = None) -> reg.AffineRegistration:
    """Deface-grade registration of the head to the subject, retried with the next seeds."""
    moving = atlas_head_image(head_path, stored)
    best: reg.AffineRegistration | None = None
    for attempt in range(REG_ATTEMPTS):
        res = reg.register_affine(fixed, moving, seed=seed + attempt, threads=threads)
        if res.plausible:
            return res
        if best is None or res.metric < best.metric:
            best = res
    assert best is not None
    raise RegistrationError(
        "T1w: registration of the template head implausible after "
        f"{REG_ATTEMPTS} attempts ({'; '.join(best.checks.get('violations', []))})"
    )


def _settings(cfg: Any) -> tuple[Any, int]:
    """(QC section, registration seed) of a RunConfig, or of a bare QCConfig."""
    qc = getattr(cfg, "qc", cfg)
    deface = getattr(cfg, "deface", None)
    seed = int(getattr(deface, "seed", getattr(qc, "seed", 20220531)))
    return qc, seed


def build_anatomy(
    t1w: str | os.PathLike[str],
    subject: str,
    atlas: "ReferenceAtlas",
    cfg: Any,
    *,
    threads: int,
    image: nb.Nifti1Image | None = None,
    atlas_grid_head: str | os.PathLike[str] | None = None,
) -> SubjectAnatomy:
    """Compute a subject's anatomical reference (module docstring, steps 1-6).

    Parameters
    ----------
    t1w
        The subject's (original, not defaced) T1w.
    subject
        Subject label.
    atlas
        :class:`isyb_dask.atlas.ReferenceAtlas` (its ``head`` is the built-in template head).
    cfg
        :class:`isyb_dask.config.RunConfig` (``deface.seed`` seeds the registration, ``qc``
        gives N4 grid, prior weight, head threshold and the enhancement seed), or a bare
        :class:`isyb_dask.qc.config.QCConfig` (its seed is used for both).
    threads
        SimpleITK threads.
    image
        The T1w already read and validated (it is read from ``t1w`` otherwise).
    atlas_grid_head
        The run's stored copy of the atlas head on the registration grid (the built-in
        template's :attr:`~isyb_dask.deface.templates.Template.grid_head`); computed if None.

    Returns
    -------
    SubjectAnatomy

    Raises
    ------
    InputError
        Unreadable or degenerate T1w, no head in view.
    AnatomyError
        Empty brain mask or failed segmentation (an ``InputError`` subclass).
    RegistrationError
        When no plausible template registration is found.
    """
    from isyb_dask.anat import masks as am
    from isyb_dask.anat.masks import rotation_mask
    from isyb_dask.anat.segmentation import TISSUES, segment_tissues, warp_atlas

    qc, seed = _settings(cfg)
    t1w = Path(t1w)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if image is None:  # already read and validated by the task's input check otherwise
        image = load_image(t1w, ndim=3)
    check_head_in_view(image)
    sha = file_sha256(t1w)
    can = reg.to_canonical(image)
    data = np.asarray(can.dataobj, dtype=np.float64).astype(np.float32)
    canonical = nb.Nifti1Image(data, can.affine, can.header)
    canonical.set_data_dtype(np.float32)
    original = np.ascontiguousarray(np.nan_to_num(data))
    zooms = tuple(float(z) for z in canonical.header.get_zooms()[:3])
    rotation = rotation_mask(original).astype(bool)
    timings["load"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    fixed = reg.to_sitk(data, canonical.affine)
    registration = _register_head(fixed, Path(atlas.head), seed=seed, threads=threads,
                                  stored=atlas_grid_head)
    priors_img = tuple(nb.load(str(p)) for p in (atlas.csf_prob, atlas.gm_prob, atlas.wm_prob))
    warped = warp_atlas(canonical, registration, nb.load(str(atlas.brain_mask)), priors_img,
                        threads=threads)
    timings["registration"] = time.perf_counter() - t0
    if int(warped.brain.sum()) < 1000:
        raise AnatomyError(f"{t1w.name}: brain mask from the atlas registration is (nearly) "
                           "empty")

    t0 = time.perf_counter()
    positive = np.clip(original, 0, None)
    n4, bias = am.n4_correct(positive, zooms, warped.brain, grid_mm=qc.inu_grid_mm,
                             threads=threads)
    n4[n4 < 0] = 0
    timings["inu"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    try:
        post, seg_info = segment_tissues(n4, warped.brain, warped.priors,
                                         prior_weight=qc.prior_weight, mrf_beta=qc.mrf_beta,
                                         zooms=zooms)
    except ValueError as exc:
        raise AnatomyError(f"{t1w.name}: tissue segmentation failed ({exc})") from None
    posteriors = {name: np.ascontiguousarray(post[i]) for i, name in enumerate(TISSUES)}
    timings["segmentation"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    rng = np.random.default_rng(qc.seed)
    enhanced = am.enhance(n4, warped.priors[2], rng)
    head = am.head_mask(enhanced, warped.brain, zooms, threshold=qc.head_threshold)
    timings["head_mask"] = time.perf_counter() - t0

    info = {
        "registration_metric": float(registration.metric),
        "registration_plausible": bool(registration.plausible),
        "registration_checks": registration.checks,
        "registration_seed": seed,
        "segmentation": seg_info,
        "seconds": timings,
    }
    return SubjectAnatomy(
        subject=subject, t1w=t1w, t1w_sha256=sha, image=image, canonical=canonical, n4=n4,
        bias=bias, head_mask=np.asarray(head, bool), brain_mask=np.asarray(warped.brain, bool),
        posteriors=posteriors, atlas_registration=registration, priors=warped.priors,
        rotation=rotation, info=info,
    )
