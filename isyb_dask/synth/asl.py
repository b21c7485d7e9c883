"""pCASL control/label series and M0 from a known CBF map (ASL white paper model).

For slice ``k`` (2-D readout, effective PLD = PLD + SliceTiming[k]) the perfusion signal is
the white-paper pCASL equation solved for the difference::

    dM = CBF * 2 alpha T1b M0 (1 - exp(-tau / T1b)) exp(-PLD_k / T1b) / (6000 lambda)

with lambda = 0.9 ml/g, T1b = 1.65 s (3 T), alpha = 0.85 and M0 the voxel's value in the
separate M0 scan. Control = M0 * (1 - exp(-TR_prep / T1_tissue)) (saturation recovery, no
background suppression), label = control - dM. Truth CBF: 60 (GM) and 20 (WM) ml/100 g/min
weighted by tissue fraction, times a smooth +-15 % field and a subject factor.
"""

from __future__ import annotations

import numpy as np

from isyb_dask.synth.anatomy import SubjectAnatomy, TemplateMaps
from isyb_dask.synth.fields import Grid, add_rician_noise, random_smooth_field
from isyb_dask.synth.t1w import bias_field, sample_anatomy

__all__ = ["PCASL", "pcasl_cbf", "pcasl_delta_m", "synth_asl"]

#: Labelling and model constants (seconds, ml/g).
PCASL = {
    "lambda": 0.9,
    "t1_blood": 1.65,
    "alpha": 0.85,
    "labeling_duration": 1.8,
    "post_labeling_delay": 1.8,
    "tr_prep": 4.0,
    "slice_time": 0.035,
}
_T1_TISSUE = {"gm": 1.33, "wm": 0.83, "csf": 4.0, "other": 1.0}
_PD = {"gm": 0.85, "wm": 0.70, "csf": 1.0, "other": 0.15}  # fat-suppressed scalp


def _factor(pld: np.ndarray, tau: float, t1b: float, alpha: float, lam: float) -> np.ndarray:
    return 2 * alpha * t1b * (1 - np.exp(-tau / t1b)) * np.exp(-pld / t1b) / (6000 * lam)


def pcasl_delta_m(
    cbf: np.ndarray,
    m0: np.ndarray,
    pld: np.ndarray,
    *,
    tau: float,
    t1b: float = 1.65,
    alpha: float = 0.85,
    lam: float = 0.9,
) -> np.ndarray:
    """Control-label difference for ``cbf`` (ml/100 g/min); ``pld`` broadcasts (seconds)."""
    return cbf * m0 * _factor(np.asarray(pld, float), tau, t1b, alpha, lam)


def pcasl_cbf(
    delta_m: np.ndarray,
    m0: np.ndarray,
    pld: np.ndarray,
    *,
    tau: float,
    t1b: float = 1.65,
    alpha: float = 0.85,
    lam: float = 0.9,
) -> np.ndarray:
    """White-paper pCASL CBF (ml/100 g/min); voxels with ``|M0| < 1e-6`` give 0."""
    den = m0 * _factor(np.asarray(pld, float), tau, t1b, alpha, lam)
    ok = np.abs(m0) >= 1e-6
    return np.where(ok, delta_m / np.where(ok, den, 1.0), 0.0)


def synth_asl(
    anat: SubjectAnatomy,
    maps: TemplateMaps,
    grid: Grid,
    rng: np.random.Generator,
    *,
    snr: float,
    n_pairs: int = 10,
    scale: float = 1000.0,
) -> dict[str, object]:
    """Simulate a single-PLD pCASL run (control first) and a separate M0 on ``grid``.

    Parameters
    ----------
    anat, maps
        Subject geometry and template maps (block factor matching the ASL voxel size).
    grid
        ASL grid (2-D slices along its third axis).
    rng
        The subject's ASL random stream.
    snr
        Mean brain M0 / noise SD per volume (``inf`` = no noise).
    n_pairs
        Control/label pairs.
    scale
        M0 of pure water (arbitrary units).

    Returns
    -------
    dict
        ``asl`` (float32 ``(*shape, 2 n_pairs)``), ``context`` (list of "control"/"label"),
        ``m0`` (float32), ``cbf`` (truth), ``slice_timing`` ``(nz,)``, tissue maps,
        ``sigma``, ``subject_factor``.
    """
    sampled, _ = sample_anatomy(anat, maps, grid, ("gm", "wm", "csf", "brain", "head"))
    gm, wm, csf = sampled["gm"], sampled["wm"], sampled["csf"]
    other = np.clip(sampled["head"] - np.clip(gm + wm + csf, 0, 1), 0, 1)
    fractions = {"gm": gm, "wm": wm, "csf": csf, "other": other}
    extent = float(np.max(np.asarray(grid.shape) * np.abs(np.diag(grid.affine)[:3]))) + 40.0
    smooth = random_smooth_field(rng, grid.centre, extent, 8.0, 40.0, 0.075, 1)(grid.world())[0]
    subject_factor = float(np.clip(rng.normal(1.0, 0.1), 0.7, 1.3))
    cbf = (60.0 * gm + 20.0 * wm) * np.clip(1.0 + smooth, 0.7, 1.3) * subject_factor
    bias = bias_field(rng, grid, sd=0.05)
    m0 = scale * sum(_PD[k] * f for k, f in fractions.items()) * bias
    sat = sum(f * (1 - np.exp(-PCASL["tr_prep"] / _T1_TISSUE[k])) for k, f in fractions.items())
    total = sum(fractions.values())
    sat = np.where(total > 1e-6, sat / np.where(total > 1e-6, total, 1.0), 1.0)
    control = m0 * sat
    st = np.arange(grid.shape[2]) * PCASL["slice_time"]
    pld = PCASL["post_labeling_delay"] + st  # (nz,) broadcasts over the last axis
    dm = pcasl_delta_m(
        cbf,
        m0,
        pld,
        tau=PCASL["labeling_duration"],
        t1b=PCASL["t1_blood"],
        alpha=PCASL["alpha"],
        lam=PCASL["lambda"],
    )
    label = control - dm
    series = np.empty((*grid.shape, 2 * n_pairs), dtype=np.float32)
    series[..., 0::2] = control[..., None]
    series[..., 1::2] = label[..., None]
    brain = sampled["brain"] > 0.5
    sigma = float(m0[brain].mean()) / snr if np.isfinite(snr) and snr > 0 else 0.0
    if sigma > 0:
        series = add_rician_noise(series, sigma, rng)
        m0_out = add_rician_noise(m0, sigma, rng)
    else:
        m0_out = m0.astype(np.float32)
    out: dict[str, object] = dict(sampled)
    out.update(
        {
            "asl": series,
            "context": ["control", "label"] * n_pairs,
            "m0": m0_out,
            "cbf": cbf.astype(np.float32),
            "slice_timing": st,
            "sigma": sigma,
            "subject_factor": subject_factor,
        }
    )
    return out
