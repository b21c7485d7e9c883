"""Brain mask and three-class tissue segmentation for the anatomical QC.

* :func:`register_atlas` aligns the reference atlas head (pydeface ``mean_reg2mean``) to the
  T1w with :func:`isyb_dask.registration.register_affine` (12 dof, fixed seed);
* :func:`warp_atlas` carries the atlas brain mask and CSF/GM/WM priors onto the T1w grid;
* :func:`segment_tissues` is a simplified Atropos: a 3-class Gaussian mixture fitted by EM
  on the INU-corrected intensities inside the brain mask, where each voxel's class prior is
  ``(1 - w) * pi_k + w * P_k(x)`` (global mixing proportion ``pi_k`` and warped atlas prior
  ``P_k``, prior weight ``w``, MRIQC/Atropos default 0.1), followed by Atropos' Markov
  random field in the final E-step (:func:`mrf_neighbour_weights`; MRIQC's setting: radius 1,
  smoothing factor 0.01). Posteriors are the partial-volume maps used by the IQMs.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from functools import lru_cache

import nibabel as nb
import numpy as np
import SimpleITK as sitk

from isyb_dask.blocks import block_affine, block_factor, block_reduce, padded_box
from isyb_dask.registration import (
    AffineRegistration,
    matrix_ras,
    register_affine,
    resample_to,
    sitk_to_array,
    to_sitk,
)

__all__ = [
    "WarpedAtlas",
    "block_mean_image",
    "mrf_neighbour_weights",
    "register_atlas",
    "segment_tissues",
    "warp_atlas",
]

TISSUES = ("csf", "gm", "wm")


@dataclass(frozen=True)
class WarpedAtlas:
    """Atlas maps on the subject grid.

    Attributes
    ----------
    brain
        Boolean brain mask (warped atlas mask >= 0.5).
    priors
        ``(3, X, Y, Z)`` float32 CSF, GM, WM priors (sum <= 1).
    image_to_atlas
        4x4 RAS matrix mapping subject mm to atlas-head mm.
    registration
        The registration result (metric, plausibility).
    """

    brain: np.ndarray
    priors: np.ndarray
    image_to_atlas: np.ndarray
    registration: AffineRegistration


def block_mean_image(img: nb.Nifti1Image, grid_mm: float = 2.0) -> nb.Nifti1Image:
    """Block-average an image by an integer factor so that its voxels are about ``grid_mm``.

    The affine is adjusted so that every coarse voxel sits at the centre of its block
    (same physical space). Images already coarser than ``grid_mm`` are returned as they are.
    """
    f = block_factor(img.header.get_zooms()[:3], grid_mm)
    if f == 1:
        return img
    data = block_reduce(np.asarray(img.dataobj, dtype=np.float32), f)
    aff = block_affine(img.affine, f)
    return nb.Nifti1Image(data.astype(np.float32), aff)


@lru_cache(maxsize=4)
def _coarse_template(path: str, grid_mm: float) -> nb.Nifti1Image:
    return block_mean_image(nb.load(path), grid_mm)


def register_atlas(
    image: nb.Nifti1Image,
    atlas_head: nb.Nifti1Image | str | os.PathLike[str],
    *,
    seed: int,
    threads: int = 1,
    levels_mm: tuple[float, ...] = (6.0, 4.0),
    attempts: int = 3,
    grid_mm: float = 2.0,
) -> AffineRegistration:
    """Affine registration of the atlas head (moving) to the subject image (fixed).

    Both images are first block-averaged to about ``grid_mm`` voxels (the pyramid is
    coarser anyway); the transform is physical and applies to the full-resolution grids.

    When the result fails the plausibility check, the registration is repeated with
    ``seed + 1``, ``seed + 2``, ... and a 2 mm finest level added (at most ``attempts``
    runs); the first plausible result, else the one with the best metric, is returned.

    Parameters
    ----------
    image
        Subject T1w (RAS-conformed).
    atlas_head
        Atlas head template with face (image, or path: the coarse copy is then cached).
    seed
        Metric sampling seed of the first attempt.
    threads
        SimpleITK threads.
    levels_mm
        Pyramid grid steps (coarse: masks and priors only need a few mm accuracy).
    attempts
        Maximum number of registrations.
    grid_mm
        Voxel size of the block-averaged copies used for the registration.

    Returns
    -------
    AffineRegistration
        Transform mapping subject physical points to atlas points.
    """
    fixed = to_sitk(block_mean_image(image, grid_mm))
    if isinstance(atlas_head, (str, os.PathLike)):
        moving_img = _coarse_template(str(atlas_head), float(grid_mm))
    else:
        moving_img = block_mean_image(atlas_head, grid_mm)
    moving = to_sitk(moving_img)
    best: AffineRegistration | None = None
    for attempt in range(max(1, attempts)):
        levels = levels_mm if attempt == 0 else tuple(sorted({*levels_mm, 2.0}, reverse=True))
        reg = register_affine(
            fixed, moving, dof=12, seed=seed + attempt, threads=threads, levels_mm=levels
        )
        if reg.plausible:
            return reg
        if best is None or reg.metric < best.metric:
            best = reg
    assert best is not None
    return best


def warp_atlas(
    image: nb.Nifti1Image,
    reg: AffineRegistration,
    brain_mask: nb.Nifti1Image,
    priors: tuple[nb.Nifti1Image, nb.Nifti1Image, nb.Nifti1Image],
    *,
    threads: int = 1,
) -> WarpedAtlas:
    """Resample the atlas brain mask and tissue priors onto the subject grid.

    Parameters
    ----------
    image
        Subject image (defines the grid).
    reg
        Result of :func:`register_atlas`.
    brain_mask
        Atlas brain mask.
    priors
        Atlas CSF, GM and WM probability maps.
    threads
        SimpleITK threads.

    Returns
    -------
    WarpedAtlas
    """
    ref = to_sitk(image)
    sources = [(np.asarray(src.dataobj, dtype=np.float32), np.asarray(src.affine, float))
               for src in (brain_mask, *priors)]  # each map read once
    # the maps are 0 outside their support: resample only the subject voxels it reaches
    box = _support_box(image, matrix_ras(reg.transform), sources)
    sub_ref = sitk.RegionOfInterest(ref, [b.stop - b.start for b in box],
                                    [b.start for b in box])

    def _warp(src: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        out = np.zeros(image.shape[:3], dtype=np.float32)
        if all(b.stop > b.start for b in box):
            warped = resample_to(to_sitk(*src), sub_ref, reg.transform, "linear", threads=threads)
            out[box] = sitk_to_array(warped)
        return out

    brain = _warp(sources[0]) >= 0.5
    stack = np.stack([np.clip(_warp(p), 0.0, 1.0) for p in sources[1:]]).astype(np.float32)
    total = stack.sum(axis=0)
    over = total > 1.0
    stack[:, over] /= total[over]
    return WarpedAtlas(
        brain=brain, priors=stack, image_to_atlas=matrix_ras(reg.transform), registration=reg
    )


def _support_box(
    image: nb.Nifti1Image, subject_to_atlas: np.ndarray,
    sources: list[tuple[np.ndarray, np.ndarray]], pad: int = 2,
) -> tuple[slice, slice, slice]:
    """Subject voxels whose linear interpolation can reach a non-zero atlas voxel.

    ``sources`` are ``(array, affine)`` pairs of the atlas maps. The bounding box of the sources' non-zero voxels, grown by one voxel (the reach of
    linear interpolation), is carried into the subject grid through the inverse of
    ``subject_to_atlas`` (4x4, RAS mm) and grown by ``pad`` voxels. Every subject voxel
    outside it resamples to exactly 0.
    """
    to_subject = np.linalg.inv(np.asarray(image.affine, float)) @ np.linalg.inv(subject_to_atlas)
    lo = np.full(3, np.inf)
    hi = np.full(3, -np.inf)
    for data, affine in sources:
        nz = data != 0
        if not nz.any():
            continue
        box = padded_box(nz, 1)
        a = np.array([b.start for b in box], dtype=float)
        b = np.array([b.stop for b in box], dtype=float)  # one voxel beyond the grown box
        corners = np.array(list(itertools.product(*zip(a, b))))
        pts = corners @ affine[:3, :3].T + affine[:3, 3]
        ijk = pts @ to_subject[:3, :3].T + to_subject[:3, 3]
        lo = np.minimum(lo, ijk.min(axis=0))
        hi = np.maximum(hi, ijk.max(axis=0))
    shape = image.shape[:3]
    if not np.all(np.isfinite(lo)):
        return (slice(0, 0),) * 3
    start = np.clip(np.floor(lo).astype(int) - pad, 0, shape)
    stop = np.clip(np.ceil(hi).astype(int) + pad + 1, 0, shape)
    return tuple(slice(int(a), int(max(a, b))) for a, b in zip(start, stop))


def _gauss(y: np.ndarray, mu: np.ndarray, var: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * (y[None, :] - mu[:, None]) ** 2 / var[:, None]) / np.sqrt(
        2.0 * np.pi * var[:, None]
    )


def segment_tissues(
    data: np.ndarray,
    brain: np.ndarray,
    priors: np.ndarray,
    *,
    prior_weight: float = 0.1,
    max_iter: int = 50,
    tol: float = 1e-5,
    max_fit_voxels: int = 100_000,
    mrf_beta: float = 0.0,
    mrf_sweeps: int = 3,
    zooms: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> tuple[np.ndarray, dict[str, float]]:
    """Three-class (CSF, GM, WM) Gaussian-mixture EM with spatial priors inside the brain.

    The mixture parameters are fitted without spatial coupling. With ``mrf_beta > 0`` the
    final posteriors then carry Atropos' Potts MRF prior on the neighbours' labels
    (radius 1, the 26 neighbours weighted by their inverse distance in mm): each voxel's
    class-``k`` probability is multiplied by ``exp(-mrf_beta * D_k)``, where ``D_k`` is the
    inverse-distance-weighted count of brain neighbours labelled other than ``k``
    (Atropos' ``EvaluateMRFNeighborhoodWeights``), and renormalised; the labels are the
    argmax of the current posteriors, updated in ``mrf_sweeps`` synchronous sweeps.
    Atropos couples this MRF to every EM iteration and combines the prior in its
    ``Socrates`` form; here it acts once the intensity model is fixed, so the class means
    and SDs (and everything built from them) do not depend on it.

    Parameters
    ----------
    data
        INU-corrected intensities.
    brain
        Brain mask.
    priors
        ``(3, X, Y, Z)`` CSF, GM, WM prior probabilities on the same grid.
    prior_weight
        Weight ``w`` of the spatial prior against the global mixing proportions.
    max_iter, tol
        EM stopping rule (relative change of the mean log-likelihood).
    max_fit_voxels
        Parameters are fitted on a regular subsample of at most this many brain voxels
        (deterministic), then posteriors are computed for every brain voxel.
    mrf_beta
        Atropos' MRF smoothing factor (``-m [beta,1x1x1]``; MRIQC uses 0.01); 0 turns the
        MRF off.
    mrf_sweeps
        Label updates of the MRF.
    zooms
        Voxel sizes (mm), for the neighbours' inverse distances.

    Returns
    -------
    (posteriors, info)
        ``(3, X, Y, Z)`` float32 posteriors (0 outside the brain; sum 1 inside) and a dict
        with the class means/SDs, iterations and final log-likelihood.

    Raises
    ------
    ValueError
        If the brain mask has fewer than 1000 voxels.
    """
    brain = np.asarray(brain) > 0
    idx = np.flatnonzero(brain)
    if idx.size < 1000:
        raise ValueError(f"segmentation: brain mask has {idx.size} voxels (< 1000)")
    y_all = np.asarray(data, dtype=np.float64).reshape(-1)[idx]
    p_all = np.asarray(priors, dtype=np.float64).reshape(3, -1)[:, idx]
    p_all = p_all + 1e-3
    p_all /= p_all.sum(axis=0, keepdims=True)
    step = max(1, int(np.ceil(idx.size / max_fit_voxels)))
    y = y_all[::step]
    pr = p_all[:, ::step]
    # Initialise with T1w contrast (CSF < GM < WM): split the sorted intensities in the
    # proportions of the prior masses and take the moments of each part.
    frac = np.cumsum(pr.sum(axis=1)) / pr.sum()
    ys = np.sort(y)
    edges = np.concatenate([[0], np.round(frac * ys.size).astype(int)])
    parts = [ys[a : max(b, a + 2)] for a, b in itertools.pairwise(edges)]
    mu = np.array([p.mean() for p in parts])
    var = np.array([p.var() for p in parts])
    mix = np.full(3, 1.0 / 3.0)
    floor = max(float(np.var(y)) * 1e-4, 1e-6)
    var = np.maximum(var, floor)
    prev = -np.inf
    n_iter = 0
    loglik = -np.inf
    for n_iter in range(1, max_iter + 1):
        prior = (1.0 - prior_weight) * mix[:, None] + prior_weight * pr
        joint = prior * _gauss(y, mu, var)
        total = joint.sum(axis=0) + 1e-300
        post = joint / total
        loglik = float(np.mean(np.log(total)))
        nk = post.sum(axis=1) + 1e-12
        mu = (post * y).sum(axis=1) / nk
        var = np.maximum((post * (y - mu[:, None]) ** 2).sum(axis=1) / nk, floor)
        mix = nk / nk.sum()
        if abs(loglik - prev) <= tol * abs(loglik):
            break
        prev = loglik
    prior = (1.0 - prior_weight) * mix[:, None] + prior_weight * p_all
    joint = prior * _gauss(y_all, mu, var)
    post = joint / (joint.sum(axis=0) + 1e-300)
    changed = 0
    if mrf_beta > 0 and mrf_sweeps > 0:
        post, changed = _mrf_posteriors(joint, brain, idx, mrf_beta, mrf_sweeps, zooms)
    out = np.zeros((3, brain.size), dtype=np.float32)
    out[:, idx] = post.astype(np.float32)
    info = {
        "iterations": float(n_iter),
        "loglik": loglik,
        "mrf_beta": float(mrf_beta),
        "mrf_labels_changed": float(changed),
        **{f"{t}_mean": float(m) for t, m in zip(TISSUES, mu)},
        **{f"{t}_sd": float(np.sqrt(v)) for t, v in zip(TISSUES, var)},
        **{f"{t}_mix": float(m) for t, m in zip(TISSUES, mix)},
    }
    return out.reshape((3, *brain.shape)), info


def mrf_neighbour_weights(zooms: tuple[float, float, float]) -> np.ndarray:
    """``(3, 3, 3)`` inverse distances (1/mm) of the 26 neighbours; 0 at the centre.

    Atropos' MRF neighbourhood of radius 1 (``-m [beta,1x1x1]``): each neighbour counts with
    the inverse of its distance to the centre voxel in physical units.
    """
    offsets = np.indices((3, 3, 3)).reshape(3, -1).T - 1
    dist = np.sqrt(((offsets * np.asarray(zooms, dtype=np.float64)) ** 2).sum(axis=1))
    weights = np.zeros(dist.size)
    weights[dist > 0] = 1.0 / dist[dist > 0]
    return weights.reshape(3, 3, 3)


def _mrf_posteriors(
    joint: np.ndarray,
    brain: np.ndarray,
    idx: np.ndarray,
    beta: float,
    sweeps: int,
    zooms: tuple[float, float, float],
) -> tuple[np.ndarray, int]:
    """Posteriors ``(3, n_brain)`` with the Potts MRF on the neighbours' labels.

    ``joint`` is the class prior times the likelihood at the brain voxels ``idx``. Works on
    the brain's bounding box; voxels outside the brain are no neighbours (label 0 in
    Atropos). Returns the posteriors and how many labels the MRF changed.
    """
    from scipy import ndimage as ndi  # scipy.ndimage is heavy; only the MRF needs it

    box = padded_box(brain, 0)
    kernel = mrf_neighbour_weights(zooms)
    coords = np.unravel_index(idx, brain.shape)
    local = tuple(c - b.start for c, b in zip(coords, box))
    post = joint / (joint.sum(axis=0) + 1e-300)
    first = labels = np.argmax(post, axis=0)
    onehot = np.zeros(tuple(b.stop - b.start for b in box), dtype=np.float32)
    for _ in range(sweeps):
        # E_k = sum of neighbour weights labelled k; D_k = (sum over all labels) - E_k, and
        # exp(-beta D_k) is proportional to exp(beta E_k) for the renormalised posterior.
        agree = np.empty_like(joint)
        for k in range(3):
            onehot.fill(0.0)
            onehot[tuple(c[labels == k] for c in local)] = 1.0
            agree[k] = ndi.convolve(onehot, kernel, mode="constant")[local]
        weighted = joint * np.exp(beta * (agree - agree.max(axis=0, keepdims=True)))
        post = weighted / (weighted.sum(axis=0) + 1e-300)
        new = np.argmax(post, axis=0)
        if np.array_equal(new, labels):
            break
        labels = new
    return post, int((labels != first).sum())
