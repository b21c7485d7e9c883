"""Resting-state BOLD series with known head motion, spikes and low-frequency signal.

Model, per voxel ``v`` and volume ``t`` (before motion)::

    S(v, t) = B(v) * bias(v) * (1 + drift(t) + a(v) * sum_k F_k(v) g_k(t + st(v)))

* ``B`` is a T2*-weighted baseline from tissue fractions (CSF > GM > WM, scalp dim);
* ``g_k`` are unit-SD sums of three sinusoids with frequencies in 0.01-0.1 Hz, sampled at the
  slice acquisition time ``t + SliceTiming[slice]``;
* ``F_k`` are smooth spatial maps defined in template space; the first ``n_symmetric`` are
  made left-right symmetric about the brain's midsagittal plane (VMHC signal);
* ``a(v) = amplitude * (GM + 0.3 WM)``.

Motion: volume ``t`` is the motion-free volume resampled (cubic spline) with the rigid
transform of parameters ``params[t]`` about the FOV centre (a head point ``p`` at volume 0
is at ``R (p - c) + c + t`` at volume ``t``; ``params[0] = 0``). Spikes multiply one slice of
a few known volumes. Rician noise of SD ``mean GM signal / snr`` is added last.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from isyb_dask.rigid import rigid_matrix
from isyb_dask.synth.anatomy import SubjectAnatomy, TemplateMaps
from isyb_dask.synth.fields import (
    Grid,
    add_rician_noise,
    power_fd,
    random_smooth_field,
)
from isyb_dask.synth.t1w import bias_field, sample_anatomy

__all__ = [
    "apply_rigid",
    "bold_baseline",
    "draw_motion",
    "interleaved_slice_timing",
    "synth_bold",
]


def interleaved_slice_timing(n_slices: int, tr: float) -> np.ndarray:
    """Interleaved ascending acquisition: slices 0, 2, 4, ... then 1, 3, 5, ... (seconds)."""
    order = list(range(0, n_slices, 2)) + list(range(1, n_slices, 2))
    times = np.empty(n_slices)
    times[order] = np.arange(n_slices) * (tr / n_slices)
    return times


def draw_motion(
    rng: np.random.Generator, n_volumes: int, target_fd: float, n_jerks: int
) -> np.ndarray:
    """Rigid parameters ``(T, 6)`` (mm, rad): smooth drift plus ``n_jerks`` steps.

    Parameters
    ----------
    rng
        Random generator.
    n_volumes
        Number of volumes ``T``.
    target_fd
        Mean Power FD (mm, 50 mm radius) of the returned trace.
    n_jerks
        Number of sudden moves (1-3 volumes each, then back to the drift).

    The whole trace is scaled so that its mean Power FD (50 mm radius) equals ``target_fd``;
    volume 0 has all-zero parameters.
    """
    scale = np.array([1.0, 1.0, 1.0, 0.02, 0.02, 0.02])  # mm and ~1 degree per unit
    steps = rng.standard_normal((n_volumes, 6)) * scale * 0.05
    drift = np.cumsum(ndi.gaussian_filter1d(steps, 3.0, axis=0), axis=0)
    drift += np.outer(np.linspace(0, 1, n_volumes), rng.standard_normal(6) * scale * 0.3)
    jerk = np.zeros((n_volumes, 6))
    if n_volumes > 2:
        for vol in rng.choice(
            np.arange(1, n_volumes), size=min(n_jerks, n_volumes - 1), replace=False
        ):
            amp = rng.standard_normal(6) * scale * 0.4
            length = int(rng.integers(1, 4))  # returns to the drift after 1-3 volumes
            jerk[vol : vol + length] += amp
    params = drift + jerk
    params -= params[0]
    fd = power_fd(params)
    mean_fd = float(fd[1:].mean()) if n_volumes > 1 else 0.0
    if mean_fd > 0:
        params *= target_fd / mean_fd
    return params


def apply_rigid(
    volume: np.ndarray, affine: np.ndarray, params: np.ndarray, centre: np.ndarray, order: int = 1
) -> np.ndarray:
    """Resample ``volume`` so that the object moves by the rigid ``params`` about ``centre``.

    Parameters
    ----------
    volume
        3-D array on the grid ``affine``.
    affine
        Voxel-to-world affine.
    params
        ``(trans_x, trans_y, trans_z, rot_x, rot_y, rot_z)`` (mm, rad).
    centre
        Rotation centre (world mm).
    order
        Spline order of the interpolation (1 = trilinear).

    Output voxel ``i`` (world ``y = A i``) takes the input at ``M^-1 y`` with
    ``M = rigid_matrix(params, centre)``; outside the FOV is 0.
    """
    m = rigid_matrix(params, centre)
    vox = np.linalg.inv(affine) @ np.linalg.inv(m) @ affine
    return ndi.affine_transform(
        volume, vox[:3, :3], vox[:3, 3], order=order, mode="constant", cval=0.0, output=np.float32
    )


def bold_baseline(sampled: dict[str, np.ndarray], scale: float = 1000.0) -> np.ndarray:
    """T2*-weighted EPI baseline: CSF 1.3, GM 1.0, WM 0.75, non-brain head 0.25 (x scale)."""
    brain = np.clip(sampled["gm"] + sampled["wm"] + sampled["csf"], 0, 1)
    scalp = np.clip(sampled["head"] - brain, 0, 1)
    base = 1.3 * sampled["csf"] + 1.0 * sampled["gm"] + 0.75 * sampled["wm"] + 0.25 * scalp
    return (scale * base).astype(np.float32)


def _time_courses(rng: np.random.Generator, n: int, f_lo: float = 0.01, f_hi: float = 0.1):
    freqs = rng.uniform(f_lo, f_hi, size=(n, 3))
    phases = rng.uniform(0, 2 * np.pi, size=(n, 3))
    weights = rng.uniform(0.5, 1.0, size=(n, 3))

    def evaluate(times: np.ndarray) -> np.ndarray:
        """``(n, *times.shape)`` unit-SD (over a long window) signals."""
        t = np.asarray(times, dtype=float)[None, None]
        arg = 2 * np.pi * freqs.reshape(n, 3, *([1] * (t.ndim - 2))) * t
        arg = arg + phases.reshape(n, 3, *([1] * (t.ndim - 2)))
        w = weights.reshape(n, 3, *([1] * (t.ndim - 2)))
        norm = np.sqrt((weights**2).sum(1) / 2).reshape(n, *([1] * (t.ndim - 2)))
        return (w * np.sin(arg)).sum(1) / norm

    return evaluate, freqs


def synth_bold(
    anat: SubjectAnatomy,
    maps: TemplateMaps,
    grid: Grid,
    rng: np.random.Generator,
    *,
    n_volumes: int,
    tr: float,
    snr: float,
    target_fd: float,
    n_jerks: int = 3,
    n_spikes: int = 2,
    n_components: int = 6,
    n_symmetric: int = 3,
    amplitude: float = 0.02,
    drift_sd: float = 0.005,
) -> dict[str, object]:
    """Simulate a resting BOLD run on ``grid`` (RAS, slices along the third axis).

    Parameters
    ----------
    anat, maps
        Subject geometry and template maps (block factor matching the BOLD voxel size).
    grid
        BOLD grid; motion acts about its centre.
    rng
        The subject's BOLD random stream.
    n_volumes, tr
        Run length and repetition time (s).
    snr
        Mean GM baseline / noise SD (``inf`` = no noise).
    target_fd
        Mean Power FD (mm) of the motion trace (0 = no motion).
    n_jerks, n_spikes
        Sudden movements and single-slice spikes.
    n_components, n_symmetric, amplitude
        Low-frequency components, how many are left-right symmetric, and their amplitude
        (fraction of baseline in GM).
    drift_sd
        SD of the linear drift over the run (fraction of baseline).

    Returns
    -------
    dict
        ``bold`` (float32 ``(*shape, T)``), ``params`` ``(T, 6)``, ``fd`` ``(T,)``,
        ``slice_timing`` ``(nz,)``, ``spikes`` (list of ``(volume, slice, factor)``),
        ``gm``/``wm``/``csf``/``brain``/``head`` maps, ``baseline``, ``sigma``, ``freqs``.
    """
    sampled, xt = sample_anatomy(
        anat, maps, grid, ("gm", "wm", "csf", "brain", "head"), return_points=True
    )
    base = bold_baseline(sampled) * bias_field(rng, grid, sd=0.05)
    st = interleaved_slice_timing(grid.shape[2], tr)
    # Spatial maps in template space: a smooth field, symmetrised for the first components.
    field = random_smooth_field(rng, maps.brain_centre, 220.0, 6.0, 25.0, 1.0, n_components)
    maps_k = field(xt)
    if n_symmetric > 0:
        mir = maps.mirror
        xm = (mir[:3, :3] @ xt.reshape(3, -1) + mir[:3, 3:4]).reshape(xt.shape)
        maps_k[:n_symmetric] = 0.5 * (maps_k[:n_symmetric] + field(xm)[:n_symmetric])
    weight = amplitude * (sampled["gm"] + 0.3 * sampled["wm"])
    courses, freqs = _time_courses(rng, n_components)
    drift_coef = rng.normal(0.0, 1.0) * drift_sd
    times = np.arange(n_volumes) * tr
    params = draw_motion(rng, n_volumes, target_fd, n_jerks)
    centre = grid.centre
    data = np.empty((*grid.shape, n_volumes), dtype=np.float32)
    for t in range(n_volumes):
        g = courses(times[t] + st)  # (n_components, nz)
        fluct = np.einsum("kxyz,kz->xyz", maps_k, g)
        drift = drift_coef * times[t] / max(times[-1], tr)
        vol = base * (1.0 + drift + weight * fluct)
        data[..., t] = apply_rigid(vol, grid.affine, params[t], centre) if t else vol
    spikes = []
    if n_spikes > 0 and n_volumes > 2:
        vols = np.sort(
            rng.choice(np.arange(1, n_volumes), size=min(n_spikes, n_volumes - 1), replace=False)
        )
        for v in vols:
            z = int(rng.integers(grid.shape[2] // 4, 3 * grid.shape[2] // 4))
            factor = float(rng.uniform(1.3, 1.6))
            data[:, :, z, v] *= factor
            spikes.append((int(v), z, factor))
    gm_mean = float(base[sampled["gm"] > 0.5].mean())
    sigma = gm_mean / snr if np.isfinite(snr) and snr > 0 else 0.0
    if sigma > 0:
        data = add_rician_noise(data, sigma, rng)
    out: dict[str, object] = dict(sampled)
    out.update(
        {
            "bold": data,
            "params": params,
            "fd": power_fd(params),
            "slice_timing": st,
            "spikes": spikes,
            "baseline": base,
            "sigma": sigma,
            "freqs": freqs,
        }
    )
    return out
