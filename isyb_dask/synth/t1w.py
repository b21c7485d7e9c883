"""T1-weighted image of a synthetic subject, with its tissue maps on the same grid."""

from __future__ import annotations

import numpy as np

from isyb_dask.synth.anatomy import SubjectAnatomy, TemplateMaps
from isyb_dask.synth.fields import Grid, add_rician_noise, random_smooth_field

__all__ = ["bias_field", "sample_anatomy", "synth_t1w"]


def sample_anatomy(
    anat: SubjectAnatomy,
    maps: TemplateMaps,
    grid: Grid,
    names: tuple[str, ...],
    *,
    return_points: bool = False,
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Sample template maps on a scanner ``grid`` through the subject's map.

    Works slab by slab so that 1 mm grids stay within a few hundred MB.

    Returns
    -------
    tuple
        ``(maps, template_points)``: float32 arrays of ``grid.shape`` (probabilities or
        fractions; ``t1`` in template units) and, if ``return_points``, the template-world
        coordinates ``(3, *shape)`` (else ``None``).
    """
    out = {name: np.empty(grid.shape, dtype=np.float32) for name in names}
    points = np.empty((3, *grid.shape), dtype=np.float64) if return_points else None
    for start, stop in grid.slabs():
        xt = anat.to_template(grid.world(start, stop))
        for name in names:
            out[name][start:stop] = maps.sample(name, xt, order=1)
        if points is not None:
            points[:, start:stop] = xt
    return out, points


def bias_field(
    rng: np.random.Generator,
    grid: Grid,
    sd: float = 0.08,
    fwhm_mm: float = 150.0,
    spacing_mm: float = 10.0,
) -> np.ndarray:
    """Smooth multiplicative field ``exp(f)`` (f Gaussian, SD ``sd``) on ``grid``, float32."""
    extent = float(np.max(np.asarray(grid.shape) * np.abs(np.diag(grid.affine)[:3]))) + 40.0
    f = random_smooth_field(rng, grid.centre, extent, spacing_mm, fwhm_mm, sd, 1)
    out = np.empty(grid.shape, dtype=np.float32)
    for start, stop in grid.slabs():
        out[start:stop] = np.exp(f(grid.world(start, stop))[0])
    return out


def synth_t1w(
    anat: SubjectAnatomy,
    maps: TemplateMaps,
    grid: Grid,
    rng: np.random.Generator,
    *,
    snr: float,
    gain: float,
    bias_sd: float = 0.08,
    contrast: float = 0.0,
    texture_sd: float = 0.0,
) -> dict[str, np.ndarray | float]:
    """Simulate a T1w image.

    intensity = gain x template(x(y)) x (1 + contrast x (WM - GM)) x bias(y), Rician noise
    of SD ``mean WM intensity / snr`` (``snr = inf`` for no noise), then rounded to int16.
    ``contrast`` changes the GM/WM contrast (e.g. +-0.05) using the warped tissue fractions.
    Outside the brain (scalp, face, neck) a subject-specific texture ``exp(t)`` (8 mm FWHM,
    SD ``texture_sd``) makes skin and fat intensities differ from the template's.

    Parameters
    ----------
    anat, maps
        Subject geometry and template maps (block factor matching the voxel size).
    grid
        T1w grid.
    rng
        The subject's T1w random stream (bias field, noise).
    snr
        Mean WM intensity / noise SD (``inf`` = no noise).
    gain
        Global intensity scale applied to the template.
    bias_sd
        SD of the log bias field.
    contrast
        GM/WM contrast change.
    texture_sd
        SD of the log intensity texture outside the brain (0 = none).

    Returns
    -------
    dict
        ``t1w`` (int16), ``gm``, ``wm``, ``csf``, ``brain``, ``head``, ``face`` (float32 on
        the grid), ``bias`` (float32), ``sigma`` (float, noise SD), ``wm_mean`` (float) and,
        when the anatomy carries one, ``thinning`` (the cortical-thinning truth with its
        scanner-space centre; :mod:`isyb_dask.synth.thinning`).
    """
    sampled, _ = sample_anatomy(
        anat, maps, grid, ("t1", "gm", "wm", "csf", "brain", "head", "face")
    )
    thinning = None
    if getattr(anat, "thinning", None) is not None:
        from isyb_dask.synth.thinning import apply_thinning

        centre = anat.to_scanner(np.asarray(anat.thinning["centre_template_mm"])[:, None])[:, 0]
        removed = apply_thinning(sampled, grid, centre, anat.thinning)
        vox_ml = float(abs(np.linalg.det(np.asarray(grid.affine)[:3, :3]))) / 1000.0
        thinning = {
            **anat.thinning,
            "centre_scanner_mm": [float(v) for v in centre],
            "removed_gm_ml": float(removed.sum()) * vox_ml,
        }
    bias = bias_field(rng, grid, sd=bias_sd)
    tissue = 1.0 + np.float32(contrast) * (sampled["wm"] - sampled["gm"])
    if texture_sd > 0:
        texture = bias_field(rng, grid, sd=texture_sd, fwhm_mm=8.0, spacing_mm=3.0)
        outside = np.clip(sampled["head"] - sampled["brain"], 0.0, 1.0)
        tissue = tissue * (1.0 + outside * (texture - 1.0))
    clean = sampled["t1"] * np.float32(gain) * tissue * bias
    wm = sampled["wm"] > 0.9
    wm_mean = float(clean[wm].mean()) if wm.any() else float(clean.max())
    sigma = wm_mean / snr if np.isfinite(snr) and snr > 0 else 0.0
    noisy = add_rician_noise(clean, sigma, rng)
    t1w = np.clip(np.rint(noisy), 0, np.iinfo(np.int16).max).astype(np.int16)
    out: dict[str, np.ndarray | float] = {k: v for k, v in sampled.items() if k != "t1"}
    out.update({"t1w": t1w, "bias": bias, "sigma": float(sigma), "wm_mean": wm_mean})
    if thinning is not None:
        out["thinning"] = thinning
    return out
