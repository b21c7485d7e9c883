"""Diffusion-weighted images from a known tensor field.

Each voxel has one tensor ``D = sum_t p_t D_t / sum_t p_t`` (tissue fractions ``p_t``):

* WM: axially symmetric, FA from a smooth field in [0.45, 0.75] (mean 0.6), MD 0.7e-3 mm^2/s,
  principal direction from a smooth random vector field;
* GM: isotropic, MD 0.8e-3; CSF: isotropic 3.0e-3; non-brain head tissue: isotropic 1.0e-3.

The signal is ``S_i = S0 exp(-b_i g_i^T D g_i)`` (S0 by tissue: CSF 2.0, GM 1.0, WM 0.75,
scalp 0.3, times ``scale`` and a bias field), plus Rician noise. Because each voxel holds a
single tensor, a log-linear fit of noise-free data recovers ``D`` exactly.
"""

from __future__ import annotations

import numpy as np
from nibabel.affines import voxel_sizes

from isyb_dask.synth.anatomy import SubjectAnatomy, TemplateMaps
from isyb_dask.synth.fields import Grid, add_rician_noise, random_smooth_field
from isyb_dask.synth.t1w import bias_field, sample_anatomy

__all__ = [
    "fsl_bvecs",
    "gradient_directions",
    "gradient_table",
    "synth_dwi",
    "tensor_eigen_stats",
    "tensor_field",
]

#: Tensor component order used everywhere here (dipy's lower-triangular order).
TENSOR_ORDER = ("Dxx", "Dxy", "Dyy", "Dxz", "Dyz", "Dzz")


def gradient_directions(n: int) -> np.ndarray:
    """``(n, 3)`` unit vectors spread over the upper hemisphere (Fibonacci spiral)."""
    i = np.arange(n) + 0.5
    z = 1.0 - i / n  # z in (0, 1): one hemisphere is enough for antipodal symmetry
    r = np.sqrt(1.0 - z**2)
    phi = i * np.pi * (3.0 - np.sqrt(5.0))
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def gradient_table(
    n_dirs: int = 30, n_b0: int = 2, bval: float = 1000.0
) -> tuple[np.ndarray, np.ndarray]:
    """b-values ``(N,)`` and world directions ``(N, 3)``; b0s at the start and spread evenly."""
    dirs = gradient_directions(n_dirs)
    n = n_dirs + n_b0
    b0_pos = {round(k * n / max(n_b0, 1)) for k in range(n_b0)}
    bvals = np.zeros(n)
    vecs = np.zeros((n, 3))
    d = 0
    for i in range(n):
        if i in b0_pos:
            continue
        bvals[i] = bval
        vecs[i] = dirs[d]
        d += 1
    return bvals, vecs


def fsl_bvecs(vectors_world: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """World (RAS) unit vectors -> FSL ``bvecs`` rows ``(N, 3)`` for an image ``affine``.

    FSL bvecs are given along the image's voxel axes, with the first component negated when
    the affine has a positive determinant (FSL's radiological voxel convention).
    """
    rot = affine[:3, :3] / voxel_sizes(affine)
    vox = vectors_world @ rot  # = (rot^T g) for each row
    if np.linalg.det(affine[:3, :3]) > 0:
        vox[:, 0] = -vox[:, 0]
    return vox


def tensor_eigen_stats(tensor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FA and MD of ``(..., 6)`` tensors in :data:`TENSOR_ORDER`."""
    dxx, dxy, dyy, dxz, dyz, dzz = np.moveaxis(tensor, -1, 0)
    mat = np.stack(
        [
            np.stack([dxx, dxy, dxz], -1),
            np.stack([dxy, dyy, dyz], -1),
            np.stack([dxz, dyz, dzz], -1),
        ],
        -2,
    )
    ev = np.clip(np.linalg.eigvalsh(mat), 0, None)
    md = ev.mean(-1)
    num = ((ev - md[..., None]) ** 2).sum(-1)
    den = (ev**2).sum(-1)
    fa = np.sqrt(1.5 * num / np.where(den > 0, den, 1.0))
    return np.where(den > 0, fa, 0.0), md


def _axial_tensor(direction: np.ndarray, fa: np.ndarray, md: np.ndarray) -> np.ndarray:
    """Axially symmetric tensors with given FA/MD and principal ``direction`` ``(3, ...)``."""
    k = np.sqrt(3 * fa**2 / (9 - 6 * fa**2))
    l1 = md * (1 + 2 * k)
    l2 = md * (1 - k)
    e = direction
    # D = l2 I + (l1 - l2) e e^T
    d = l1 - l2
    return np.stack(
        [
            l2 + d * e[0] * e[0],
            d * e[0] * e[1],
            l2 + d * e[1] * e[1],
            d * e[0] * e[2],
            d * e[1] * e[2],
            l2 + d * e[2] * e[2],
        ],
        -1,
    )


def tensor_field(
    sampled: dict[str, np.ndarray], grid: Grid, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tensor ``(*shape, 6)``, S0 weights ``(*shape,)`` and WM principal direction ``(3, *shape)``."""
    world = grid.world()
    extent = float(np.max(np.asarray(grid.shape) * np.abs(np.diag(grid.affine)[:3]))) + 40.0
    dir_field = random_smooth_field(rng, grid.centre, extent, 6.0, 40.0, 1.0, 3)(world)
    norm = np.sqrt((dir_field**2).sum(0))
    direction = dir_field / np.where(norm > 0, norm, 1.0)
    fa_field = random_smooth_field(rng, grid.centre, extent, 6.0, 30.0, 1.0, 1)(world)[0]
    fa_wm = np.clip(0.6 + 0.06 * fa_field, 0.45, 0.75)
    d_wm = _axial_tensor(direction, fa_wm, np.full(grid.shape, 0.7e-3))
    iso = np.array([1.0, 0.0, 1.0, 0.0, 0.0, 1.0])
    gm, wm, csf = sampled["gm"], sampled["wm"], sampled["csf"]
    brain = np.clip(gm + wm + csf, 0, 1)
    other = np.clip(sampled["head"] - brain, 0, 1)
    total = gm + wm + csf + other
    safe = np.where(total > 1e-6, total, 1.0)
    tensor = (
        wm[..., None] * d_wm
        + gm[..., None] * 0.8e-3 * iso
        + csf[..., None] * 3.0e-3 * iso
        + other[..., None] * 1.0e-3 * iso
    ) / safe[..., None]
    tensor[total <= 1e-6] = 0.0
    s0 = 1.0 * gm + 0.75 * wm + 2.0 * csf + 0.3 * other
    return tensor, s0.astype(np.float32), direction


def synth_dwi(
    anat: SubjectAnatomy,
    maps: TemplateMaps,
    grid: Grid,
    rng: np.random.Generator,
    *,
    snr: float,
    n_dirs: int = 30,
    n_b0: int = 2,
    bval: float = 1000.0,
    scale: float = 1500.0,
) -> dict[str, object]:
    """Simulate a single-shell DWI run on ``grid`` (RAS world frame for the gradients).

    Parameters
    ----------
    anat, maps
        Subject geometry and template maps (block factor matching the DWI voxel size).
    grid
        DWI grid.
    rng
        The subject's DWI random stream.
    snr
        Mean brain S0 / noise SD (``inf`` = no noise).
    n_dirs, n_b0, bval
        Gradient scheme.
    scale
        S0 of GM (arbitrary units).

    Returns
    -------
    dict
        ``dwi`` (float32 ``(*shape, N)``), ``bvals`` ``(N,)``, ``bvecs_world`` ``(N, 3)``,
        ``tensor`` ``(*shape, 6)`` (mm^2/s, world frame), ``fa``, ``md``, ``s0``,
        tissue maps, ``sigma``.
    """
    sampled, _ = sample_anatomy(anat, maps, grid, ("gm", "wm", "csf", "brain", "head"))
    tensor, s0w, _ = tensor_field(sampled, grid, rng)
    s0 = (scale * s0w * bias_field(rng, grid, sd=0.06)).astype(np.float32)
    bvals, vecs = gradient_table(n_dirs, n_b0, bval)
    g = vecs
    # g^T D g for each direction, with D in TENSOR_ORDER
    quad = np.stack(
        [
            g[:, 0] ** 2,
            2 * g[:, 0] * g[:, 1],
            g[:, 1] ** 2,
            2 * g[:, 0] * g[:, 2],
            2 * g[:, 1] * g[:, 2],
            g[:, 2] ** 2,
        ],
        1,
    )
    adc = tensor @ quad.T  # (*shape, N)
    data = (s0[..., None] * np.exp(-bvals * adc)).astype(np.float32)
    brain = sampled["brain"] > 0.5
    sigma = float(s0[brain].mean()) / snr if np.isfinite(snr) and snr > 0 else 0.0
    if sigma > 0:
        data = add_rician_noise(data, sigma, rng)
    fa, md = tensor_eigen_stats(tensor)
    out: dict[str, object] = dict(sampled)
    out.update(
        {
            "dwi": data,
            "bvals": bvals,
            "bvecs_world": vecs,
            "tensor": tensor.astype(np.float32),
            "fa": fa.astype(np.float32),
            "md": md.astype(np.float32),
            "s0": s0,
            "sigma": sigma,
        }
    )
    return out
