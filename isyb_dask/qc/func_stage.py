"""Functional QC stage: head-motion correction, confounds and MRIQC-style BOLD IQMs.

Called by the runner as ``run_qc_func(bold, bold_meta, subject, cfg, out_dir)``; writes
BIDS derivatives (confounds table, motion-corrected series, brain mask, IQM JSON) and
returns the IQMs as a flat dict of floats (MRIQC names).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from isyb_dask.errors import InputError
from isyb_dask.io.derivatives import derivative_path, write_sidecar
from isyb_dask.io.nifti import load_image, save_like, voxel_sizes
from isyb_dask.qc.dvars import compute_dvars, dvars_summary
from isyb_dask.qc.func_iqms import gcor, gsr, mean_epi_iqms, non_steady_state_volumes, tsnr
from isyb_dask.qc.func_masks import automask
from isyb_dask.qc.hmc import PARAM_NAMES, realign_series, rotation_center
from isyb_dask.qc.motion import fd_summary, framewise_displacement

__all__ = ["IQM_NAMES", "MIN_VOLUMES", "bold_entities", "run_qc_func"]

#: Shortest BOLD run accepted (DVARS needs an AR(1) fit and differences).
MIN_VOLUMES = 5
#: IQMs always present in the returned dict (MRIQC names), besides ``summary_*``.
IQM_NAMES = (
    "fd_mean", "fd_num", "fd_perc", "dvars_std", "dvars_nstd", "dvars_vstd", "gcor", "tsnr",
    "snr", "fber", "efc", "fwhm_x", "fwhm_y", "fwhm_z", "fwhm_avg", "gsr_x", "gsr_y",
    "n_volumes", "dummy_trs",
)

_ENTITY_RE = {
    "session": re.compile(r"(?:^|_)ses-([a-zA-Z0-9]+)"),
    "task": re.compile(r"(?:^|_)task-([a-zA-Z0-9]+)"),
    "acq": re.compile(r"(?:^|_)acq-([a-zA-Z0-9]+)"),
    "run": re.compile(r"(?:^|_)run-([a-zA-Z0-9]+)"),
}


def bold_entities(path: str | os.PathLike[str]) -> dict[str, str | None]:
    """BIDS entities ``session``, ``task``, ``acq``, ``run`` parsed from a BOLD file name.

    Parameters
    ----------
    path
        BOLD file path (``sub-01_ses-1_task-rest_run-2_bold.nii.gz``).

    Returns
    -------
    dict
        Entity values (``None`` when absent); ``task`` defaults to ``"rest"`` (the ISYB
        runs are resting state) when the name carries no task entity.
    """
    name = Path(path).name
    out: dict[str, str | None] = {}
    for key, rex in _ENTITY_RE.items():
        match = rex.search(name)
        out[key] = match.group(1) if match else None
    if out["task"] is None:
        out["task"] = "rest"
    return out


def _repetition_time(meta: Mapping[str, Any] | None, name: str) -> float:
    if not meta or "RepetitionTime" not in meta:
        raise InputError(f"{name}: 'RepetitionTime' is missing from the BOLD metadata")
    try:
        tr = float(meta["RepetitionTime"])
    except (TypeError, ValueError):
        raise InputError(
            f"{name}: RepetitionTime {meta['RepetitionTime']!r} is not a number"
        ) from None
    if not np.isfinite(tr) or tr <= 0:
        raise InputError(f"{name}: RepetitionTime must be positive, got {tr}")
    return tr


def _confounds_table(params: np.ndarray, fd: np.ndarray, dvars) -> pd.DataFrame:
    table = pd.DataFrame(params, columns=list(PARAM_NAMES))
    table["framewise_displacement"] = np.concatenate([[np.nan], fd])
    table["std_dvars"] = np.concatenate([[np.nan], dvars.std_dvars])
    table["dvars"] = np.concatenate([[np.nan], dvars.dvars])
    return table


_CONFOUND_META = {
    "trans_x": {"Description": "Translation along world x (R) of the volume relative to the "
                "HMC reference", "Units": "mm"},
    "trans_y": {"Description": "Translation along world y (A)", "Units": "mm"},
    "trans_z": {"Description": "Translation along world z (S)", "Units": "mm"},
    "rot_x": {"Description": "Rotation about world x, applied first (R = Rz Ry Rx)",
              "Units": "rad"},
    "rot_y": {"Description": "Rotation about world y", "Units": "rad"},
    "rot_z": {"Description": "Rotation about world z", "Units": "rad"},
    "framewise_displacement": {"Description": "Power framewise displacement (first row n/a)",
                               "Units": "mm"},
    "std_dvars": {"Description": "Standardised DVARS (nipype compute_dvars)"},
    "dvars": {"Description": "DVARS after 1000/median intensity scaling (not standardised)"},
}


def run_qc_func(
    bold: str | os.PathLike[str],
    bold_meta: Mapping[str, Any] | None,
    subject: str,
    cfg,
    out_dir: str | os.PathLike[str],
) -> dict[str, float]:
    """Functional QC of one BOLD run.

    Parameters
    ----------
    bold
        4-D BOLD NIfTI file.
    bold_meta
        Its BIDS JSON metadata; ``RepetitionTime`` is required.
    subject
        Subject label (``"sub-01"`` or ``"01"``).
    cfg
        :class:`isyb_dask.qc.config.QCConfig` (``fd_radius``, ``fd_threshold``; optional
        ``threads``, ``seed``, ``hmc_reference``, ``drop_dummy_volumes`` are used when
        present).
    out_dir
        Derivatives root.

    Returns
    -------
    dict
        ``fd_mean``, ``fd_num``, ``fd_perc``, ``dvars_std``, ``dvars_nstd``, ``dvars_vstd``,
        ``gcor``, ``tsnr``, ``snr``, ``fber``, ``efc``, ``fwhm_x``, ``fwhm_y``, ``fwhm_z``,
        ``fwhm_avg``, ``gsr_x``, ``gsr_y`` (ghost-to-signal ratios along the array axes
        closest to world x / y; NaN if undefined), ``n_volumes`` (volumes in the file),
        ``dummy_trs`` (leading non-steady-state volumes dropped before everything else,
        as MRIQC) and ``summary_{fg,bg}_*`` (all floats).

    Raises
    ------
    InputError
        If the file is unusable, has fewer than :data:`MIN_VOLUMES` volumes, the
        metadata lack ``RepetitionTime`` or the brain mask is too small.
    """
    bold = Path(bold)
    name = f"{bold.parent.name}/{bold.name}"
    tr = _repetition_time(bold_meta, name)
    img = load_image(bold, ndim=4, min_volumes=MIN_VOLUMES)
    data = np.asarray(img.dataobj, dtype=np.float32)
    if data.ndim > 4:
        data = data.reshape(data.shape[:4])
    data = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)
    n_total = data.shape[3]
    dummy = non_steady_state_volumes(data) if getattr(cfg, "drop_dummy_volumes", True) else 0
    if n_total - dummy < MIN_VOLUMES:
        raise InputError(f"{name}: only {n_total - dummy} steady-state volumes after dropping "
                         f"{dummy} non-steady-state volumes (need {MIN_VOLUMES})")
    data = data[..., dummy:]
    threads = int(getattr(cfg, "threads", 1))
    seed = int(getattr(cfg, "seed", 0))
    reference = getattr(cfg, "hmc_reference", 0)

    realigned, params = realign_series(data, img.affine, reference=reference, threads=threads,
                                       seed=seed)
    mean_epi = realigned.mean(axis=3, dtype=np.float64)
    fd = framewise_displacement(params, radius=cfg.fd_radius)
    iqms: dict[str, float] = {}
    try:  # degenerate data (tiny mask, all-constant voxels) -> a user-facing error
        mask = automask(mean_epi)
        dvars = compute_dvars(realigned, mask)
        iqms.update(fd_summary(fd, threshold=cfg.fd_threshold))
        iqms.update(dvars_summary(dvars))
        iqms["gcor"] = gcor(realigned, mask)
        iqms["tsnr"] = tsnr(realigned, mask)
        iqms.update(mean_epi_iqms(mean_epi, mask, voxel_sizes(img)))
    except ValueError as exc:
        raise InputError(f"{name}: {exc}") from None
    iqms.update(_ghost_ratios(mean_epi, mask, img.affine))
    iqms["n_volumes"] = float(n_total)
    iqms["dummy_trs"] = float(dummy)
    iqms = {key: float(val) for key, val in iqms.items()}

    ents = bold_entities(bold)
    kw = {"session": ents["session"], "task": ents["task"], "acq": ents["acq"], "run": ents["run"]}
    settings = {
        "fd_radius_mm": cfg.fd_radius, "fd_threshold_mm": cfg.fd_threshold,
        "hmc": {"method": "gauss-newton", "reference": reference,
                "cost": "sum of squares after global gain, head voxels, outlier slices dropped",
                "estimation_interpolation": "trilinear, cubic B-spline final iterations",
                "output_interpolation": "trilinear",
                "pyramid": {"shrink": [2, 1], "smooth_vox": [1, 0]},
                "rotation_center_mm": rotation_center(data.shape, img.affine).tolist()},
        "mask": "3dAutomask-like (clfrac 0.5, peel nbhrs 17, fill holes)",
        "dvars": {"intensity_normalization": 1000, "variance_tol": 1e-7},
        "threads": threads, "seed": seed,
        "non_steady_state_volumes_dropped": dummy,
    }
    _write_outputs(out_dir, subject, kw, bold, img, tr, params, fd, dvars, realigned, mask,
                   iqms, settings)
    return iqms


def _ghost_ratios(mean_epi: np.ndarray, mask: np.ndarray, affine: np.ndarray) -> dict:
    """``gsr_x``/``gsr_y`` along the array axes closest to world x and y (NaN if undefined)."""
    epi = np.maximum(mean_epi, 0.0)
    lin = np.abs(np.asarray(affine)[:3, :3])
    out = {}
    for name, world_axis in (("gsr_x", 0), ("gsr_y", 1)):
        try:
            out[name] = gsr(epi, mask, int(np.argmax(lin[world_axis])))
        except ValueError:
            out[name] = float("nan")
    return out


def confounds_path(bold: str | os.PathLike[str], subject: str, out_dir: str | os.PathLike[str]) -> Path:
    """Where :func:`run_qc_func` writes the confounds table of ``bold`` (not created)."""
    kw = {k: v for k, v in bold_entities(bold).items() if v is not None}
    return derivative_path(out_dir, subject, "func", "timeseries", desc="confounds",
                           extension=".tsv", mkdir=False, **kw)


def _write_outputs(out_dir, subject, kw, bold, img, tr, params, fd, dvars, realigned, mask,
                   iqms, settings) -> None:
    sources = [bold]
    conf_path = derivative_path(out_dir, subject, "func", "timeseries", desc="confounds",
                                extension=".tsv", **kw)
    _confounds_table(params, fd, dvars).to_csv(conf_path, sep="\t", index=False, na_rep="n/a",
                                               float_format="%.8g")
    write_sidecar(conf_path, _CONFOUND_META, sources=sources, settings=settings)

    hmc_path = derivative_path(out_dir, subject, "func", "bold", desc="hmc", **kw)
    save_like(realigned, img, hmc_path, dtype=np.float32)
    write_sidecar(hmc_path, {"RepetitionTime": tr, "SkullStripped": False,
                             "Description": "Head-motion corrected (rigid, trilinear) series"},
                  sources=sources, settings=settings)

    mask_path = derivative_path(out_dir, subject, "func", "mask", desc="brain", **kw)
    save_like(mask, img.slicer[..., 0], mask_path, dtype=np.uint8)
    write_sidecar(mask_path, {"Type": "Brain", "Description": "Brain mask of the mean "
                              "motion-corrected EPI (3dAutomask-like)"},
                  sources=sources, settings=settings)

    iqm_path = derivative_path(out_dir, subject, "func", "bold", desc="iqms", extension=".json",
                               **kw)
    write_sidecar(iqm_path, {**iqms, "RepetitionTime": tr}, sources=sources, settings=settings)
