"""Resting-state BOLD preprocessing for the functional metrics (METHODS §0a, issue 5).

Order (the paper's CCS description): drop dummy volumes -> despike -> slice-timing correction
-> head-motion correction -> 4-D global mean scaling to 10,000 -> nuisance regression together
with linear and quadratic detrending. Each step is a pure function on arrays; the chain is
:func:`preprocess_bold`.

Variants chosen (details in ``docs/metrics_volume.md``):

* despiking (AFNI ``3dDespike``-like, replace and interpolate): the smooth baseline of each
  voxel series is a running median over ``window`` volumes; residuals beyond ``threshold``
  robust noise SDs (``1.4826 * MAD`` of the first differences / sqrt 2) are spikes,
  replaced by linear interpolation between the nearest non-spike neighbours in time
  (3dDespike instead fits an L1 polynomial + sinusoid curve and squashes values, it does not
  interpolate);
* slice timing: shift every slice to the middle of the slice-timing range by a Fourier phase
  shift of the linearly detrended series (trend added back at the shifted times), or by linear
  interpolation (``method="linear"``, ends held constant);
* motion: :func:`isyb_dask.bold.hmc.realign_series` (rigid, SimpleITK), parameters in mm and
  radians;
* nuisance model: 24 motion regressors (6 parameters, their backward differences, and the
  squares of both — the "6 + derivatives + squares" expansion), mean WM and CSF signals when
  tissue probability maps are given, and one spike regressor per volume with framewise
  displacement (Power, 50 mm) above ``fd_threshold``. Spike regressors + the 24 parameters
  stand in for ICA-AROMA, which is not implemented. Constant, linear and quadratic
  (Legendre) trends are in the same least-squares fit, so detrending and nuisance removal are
  one projection.

The steps live in :mod:`isyb_dask.metrics.temporal` (despiking, slice timing) and
:mod:`isyb_dask.metrics.nuisance` (regressors, regression, scaling, band-pass); this module
holds the EPI mask and the chain, and re-exports the steps.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
from scipy import ndimage as ndi

from isyb_dask.errors import InputError
from isyb_dask.metrics.nuisance import (
    GLOBAL_MEAN,
    bandpass,
    framewise_displacement,
    friston24,
    polynomial_regressors,
    regress_out,
    scale_global_mean,
    spike_regressors,
    tissue_signal,
)
from isyb_dask.metrics.temporal import _median5, despike, slice_time_correct  # noqa: F401

__all__ = [
    "despike",
    "slice_time_correct",
    "friston24",
    "framewise_displacement",
    "spike_regressors",
    "epi_mask",
    "scale_global_mean",
    "polynomial_regressors",
    "regress_out",
    "bandpass",
    "preprocess_bold",
    "GLOBAL_MEAN",
]


def epi_mask(mean_image: np.ndarray) -> np.ndarray:
    """Brain mask of a mean EPI: Otsu threshold, largest component, holes filled.

    Parameters
    ----------
    mean_image
        3-D temporal mean.

    Returns
    -------
    numpy.ndarray
        Boolean mask.
    """
    img = np.nan_to_num(np.asarray(mean_image, dtype=np.float64))
    vals = img[img > 0]
    if vals.size < 10:
        raise InputError("BOLD mean image is empty: cannot build a brain mask")
    hist, edges = np.histogram(vals, bins=256)
    centres = 0.5 * (edges[1:] + edges[:-1])
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres) / np.maximum(w0, 1)
    m1 = ((hist * centres).sum() - np.cumsum(hist * centres)) / np.maximum(w1, 1)
    thr = centres[np.argmax(w0 * w1 * (m0 - m1) ** 2)]
    mask = img > thr
    lab, n = ndi.label(mask)
    if n > 1:
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        mask = lab == np.argmax(sizes)
    return ndi.binary_fill_holes(mask)


def preprocess_bold(
    data: np.ndarray,
    affine: np.ndarray,
    tr: float,
    slice_timing: Sequence[float] | None,
    *,
    mask: np.ndarray | None = None,
    dummy_volumes: int = 5,
    tissue_probs: Mapping[str, np.ndarray] | None = None,
    threads: int = 1,
    slice_axis: int = 2,
    slice_method: Literal["fourier", "linear"] = "fourier",
    despike_threshold: float = 5.0,
    motion_model: Literal[0, 6, 12, 24] = 24,
    fd_threshold: float = 0.5,
    fd_radius: float = 50.0,
    tissue_threshold: float = 0.9,
    realign: Callable[..., tuple[np.ndarray, np.ndarray]] | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Preprocess a resting-state BOLD series for ALFF/fALFF, ReHo and VMHC.

    Parameters
    ----------
    data
        ``(X, Y, Z, T)`` raw BOLD series (not modified).
    affine
        Voxel-to-world affine.
    tr
        Repetition time (s).
    slice_timing
        BIDS ``SliceTiming`` (s) along ``slice_axis``; ``None`` skips the step.
    mask
        Brain mask; default: Otsu mask of the motion-corrected mean.
    dummy_volumes
        Volumes dropped at the start.
    tissue_probs
        Optional ``{"wm": prob, "csf": prob}`` on the BOLD grid for the mean WM/CSF signals.
    threads
        Threads for the motion correction.
    slice_axis, slice_method
        Slice axis and ``"fourier"`` or ``"linear"`` slice-timing interpolation.
    despike_threshold
        Spike threshold in robust SDs.
    motion_model
        Motion regressors: 24 (default), 12 (parameters + differences), 6 or 0.
    fd_threshold
        FD (mm) above which a volume gets a spike regressor (``inf`` disables).
    fd_radius
        Head radius (mm) of the FD (the QC's ``fd_radius``, so both use one FD).
    tissue_threshold
        Probability above which a voxel enters the WM/CSF signal.
    realign
        Motion-correction function with the signature of
        :func:`isyb_dask.bold.hmc.realign_series` (default that function).

    Returns
    -------
    cleaned, mask, info
        float32 residual series ``(X, Y, Z, T - dummy_volumes)`` with zero temporal mean in the
        mask and 0 outside; the boolean mask; ``info`` with ``params`` (T, 6), ``fd``,
        ``fd_mean``, ``spike_volumes``, ``n_despiked``, ``scale_factor``,
        ``slice_reference_time``, ``confound_names``, ``mean`` (temporal mean image of the
        scaled series, for mALFF or percent-signal scaling) and ``dropped``.

    Raises
    ------
    InputError
        On bad shapes, too few volumes or an unusable nuisance model.
    """
    arr = np.asarray(data)
    if arr.ndim != 4:
        raise InputError(f"BOLD series must be 4-D, got shape {arr.shape}")
    if not tr > 0:
        raise InputError(f"BOLD RepetitionTime must be > 0, got {tr}")
    if dummy_volumes < 0 or arr.shape[-1] - dummy_volumes < 8:
        raise InputError(f"BOLD series has {arr.shape[-1]} volumes; at least 8 must remain after "
                         f"dropping {dummy_volumes}")
    if motion_model not in (0, 6, 12, 24):
        raise InputError(f"motion_model must be 0, 6, 12 or 24, got {motion_model}")
    info: dict[str, Any] = {"dropped": int(dummy_volumes)}
    y = arr[..., dummy_volumes:].astype(np.float32)

    # despike inside a generous mask (the raw-mean mask dilated) to spare the background
    pre_mask = ndi.binary_dilation(epi_mask(y.mean(-1)), iterations=2) if mask is None else mask
    y, spk = despike(y, threshold=despike_threshold, mask=pre_mask)
    info["n_despiked"] = int(spk.sum())

    info["slice_reference_time"] = None
    if slice_timing is not None:
        y, info["slice_reference_time"] = slice_time_correct(
            y, tr, slice_timing, slice_axis=slice_axis, method=slice_method)

    if realign is None:
        from isyb_dask.bold.hmc import realign_series as realign
    y, params = realign(y, affine, threads=threads)
    y = np.asarray(y, np.float32)
    params = np.asarray(params, np.float64)
    fd = framewise_displacement(params, radius=fd_radius)
    info.update(params=params, fd=fd, fd_mean=float(fd[1:].mean()))

    m = epi_mask(y.mean(-1)) if mask is None else np.asarray(mask, bool)
    if m.shape != y.shape[:3]:
        raise InputError(f"BOLD mask shape {m.shape} does not match {y.shape[:3]}")
    y, factor = scale_global_mean(y, m)
    info["scale_factor"] = factor
    info["mean"] = np.where(m, y.mean(-1), 0).astype(np.float32)

    cols, names = [], []
    if motion_model:
        expanded = friston24(params)
        keep = {6: 6, 12: 12, 24: 24}[motion_model]
        sel = list(range(6)) if keep == 6 else (list(range(12)) if keep == 12 else list(range(24)))
        cols.append(expanded[:, sel])
        base = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]
        full = base + [b + "_derivative1" for b in base] + [b + "_power2" for b in base] + [
            b + "_derivative1_power2" for b in base]
        names += [full[i] for i in sel]
    for tissue in ("wm", "csf"):
        sig = tissue_signal(y, m, (tissue_probs or {}).get(tissue), tissue_threshold)
        if sig is not None:
            cols.append(sig[:, None])
            names.append(f"{tissue}_mean")
    flags = fd > fd_threshold
    info["spike_volumes"] = np.nonzero(flags)[0].tolist()
    if flags.any():
        cols.append(spike_regressors(flags))
        names += [f"motion_outlier_{i:02d}" for i in info["spike_volumes"]]
    confounds = np.hstack(cols) if cols else np.zeros((y.shape[-1], 0))
    varying = np.ptp(confounds, axis=0) > 0 if confounds.size else np.zeros(0, bool)
    confounds = confounds[:, varying]  # e.g. all-zero motion of a still phantom
    info["confound_names"] = [nm for nm, keep in zip(names, varying) if keep]
    cleaned = regress_out(y, m, confounds, poly_order=2)
    return cleaned, m, info
