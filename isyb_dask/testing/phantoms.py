"""Phantoms with known truth: a rigidly moving smooth head and a WM ball in a GM shell."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from isyb_dask.bold.rigid import rigid_matrix, rotation_center


def smooth_head(points: np.ndarray, seed: int = 0) -> np.ndarray:
    """Smooth head-like intensity at world points: a soft ellipsoid plus Gaussian blobs.

    Parameters
    ----------
    points : ndarray, shape (N, 3)
        World coordinates in mm.
    seed : int
        Seed of the 30 blobs' centres, widths and amplitudes.

    Returns
    -------
    ndarray, shape (N,)
        Intensity (about 800 inside the head, 0 far outside).
    """
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-40, 40, size=(30, 3)) * np.array([1.0, 1.2, 0.8])
    sigmas = rng.uniform(7, 14, size=30)
    amps = rng.uniform(200, 600, size=30)
    r = np.sqrt(((points / np.array([60.0, 72.0, 50.0])) ** 2).sum(axis=1))
    out = 800.0 / (1.0 + np.exp((r - 1.0) / 0.04))
    for c, s, a in zip(centres, sigmas, amps):
        out += a * np.exp(-((points - c) ** 2).sum(axis=1) / (2 * s * s))
    return out


def moving_series(
    shape: Sequence[int],
    affine: np.ndarray,
    params: np.ndarray,
    noise: float = 0.0,
    seed: int = 0,
) -> np.ndarray:
    """A 4-D series whose volume ``t`` shows :func:`smooth_head` moved by ``params[t]``.

    ``vol_t(q) = f(M_t^-1 q)`` with ``M_t = rigid_matrix(params[t], centre)`` (the pipeline's
    own rigid convention, rotation about the grid centre).

    Parameters
    ----------
    shape : sequence of int
        Spatial grid shape.
    affine : ndarray, shape (4, 4)
        Voxel-to-world affine.
    params : ndarray, shape (T, 6)
        Translations (mm) and rotations (rad) per volume.
    noise : float
        SD of added Gaussian noise (0: none).
    seed : int
        Seed of the head (``seed``) and of the noise (``seed + 1``).

    Returns
    -------
    ndarray, shape (*shape, T), float32
    """
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    world = ijk.reshape(-1, 3) @ affine[:3, :3].T + affine[:3, 3]
    centre = rotation_center(shape, affine)
    out = np.empty(tuple(shape) + (len(params),), dtype=np.float32)
    for t, p in enumerate(params):
        inv = np.linalg.inv(rigid_matrix(p, centre))
        out[..., t] = smooth_head(world @ inv[:3, :3].T + inv[:3, 3], seed).reshape(shape)
    if noise:
        rng = np.random.default_rng(seed + 1)
        out += rng.normal(0.0, noise, out.shape).astype(np.float32)
    return out


def random_walk(
    n_vol: int, seed: int = 1, trans_sd: float = 0.15, rot_sd: float = 0.003
) -> np.ndarray:
    """Rigid motion parameters as a Gaussian random walk starting at zero.

    Returns
    -------
    ndarray, shape (n_vol, 6)
        Three translations (mm, step SD ``trans_sd``) and three rotations (rad, ``rot_sd``).
    """
    rng = np.random.default_rng(seed)
    steps = rng.normal(size=(n_vol, 6)) * np.array([trans_sd] * 3 + [rot_sd] * 3)
    params = np.cumsum(steps, axis=0)
    return params - params[0]


def shell_phantom(
    n: int, r_wm: float, thick: float, sub: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """A WM ball of radius ``r_wm`` inside a GM shell of exact thickness ``thick``.

    1 mm voxels on an ``n``-cube centred at voxel ``(n - 1) / 2``; partial-volume fractions
    from ``sub``-fold supersampling along each axis.

    Returns
    -------
    gm, wm : ndarray, shape (n, n, n), float64
        GM and WM fractions in [0, 1].
    """
    c = (n - 1) / 2.0
    x = np.arange(n, dtype=np.float64)
    off = (np.arange(sub) + 0.5) / sub - 0.5
    wm = np.zeros((n, n, n))
    gmwm = np.zeros((n, n, n))
    for a in off:
        for b in off:
            for d in off:
                r = np.sqrt(
                    (x[:, None, None] + a - c) ** 2
                    + (x[None, :, None] + b - c) ** 2
                    + (x[None, None, :] + d - c) ** 2
                )
                wm += r < r_wm
                gmwm += r < r_wm + thick
    wm /= sub**3
    gmwm /= sub**3
    return gmwm - wm, wm
