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

from isyb_dask.bold.reference import MIN_VOLUMES, BoldReference, build_bold_reference
from isyb_dask.errors import InputError
from isyb_dask.io.derivatives import write_sidecar
from isyb_dask.io.nifti import save_like, voxel_sizes
from isyb_dask.io.outputs import func_path
from isyb_dask.qc.dvars import compute_dvars, dvars_summary
from isyb_dask.qc.func_iqms import gcor, gsr, mean_epi_iqms, tsnr
from isyb_dask.bold.rigid import PARAM_NAMES
from isyb_dask.qc.motion import fd_summary

__all__ = ["IQM_NAMES", "MIN_VOLUMES", "bold_entities", "run_qc_func"]

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
    *,
    bold_ref: BoldReference | None = None,
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
    bold_ref
        The run's :class:`isyb_dask.bold.reference.BoldReference` (read, motion-corrected and
        masked once per subject, shared with the metrics); built here when None.

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
    if bold_ref is None:
        bold_ref = build_bold_reference(bold, bold_meta, cfg,
                                        threads=int(getattr(cfg, "threads", 1)))
    ref = bold_ref
    img, tr, realigned, mask, mean_epi = ref.image, ref.tr, ref.realigned, ref.mask, ref.mean
    fd = ref.fd
    iqms: dict[str, float] = {}
    try:  # degenerate data (tiny mask, all-constant voxels) -> a user-facing error
        dvars = compute_dvars(realigned, mask)
        iqms.update(fd_summary(fd, threshold=cfg.fd_threshold))
        iqms.update(dvars_summary(dvars))
        iqms["gcor"] = gcor(realigned, mask)
        iqms["tsnr"] = tsnr(realigned, mask)
        iqms.update(mean_epi_iqms(mean_epi, mask, voxel_sizes(img)))
    except ValueError as exc:
        raise InputError(f"{name}: {exc}") from None
    iqms.update(_ghost_ratios(mean_epi, mask, img.affine))
    iqms["n_volumes"] = float(ref.data.shape[3])
    iqms["dummy_trs"] = float(ref.dummy)
    iqms = {key: float(val) for key, val in iqms.items()}

    ents = bold_entities(bold)
    settings = {
        "fd_radius_mm": ref.fd_radius, "fd_threshold_mm": cfg.fd_threshold,
        **{k: v for k, v in ref.settings.items() if k != "fd_radius_mm"},
        "dvars": {"intensity_normalization": 1000, "variance_tol": 1e-7},
    }
    _write_outputs(out_dir, subject, ents, bold, img, tr, ref.params, fd, dvars, realigned, mask,
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
    return func_path(out_dir, subject, "confounds", bold_entities(bold), mkdir=False)


def _write_outputs(out_dir, subject, ents, bold, img, tr, params, fd, dvars, realigned, mask,
                   iqms, settings) -> None:
    sources = [bold]
    conf_path = func_path(out_dir, subject, "confounds", ents)
    _confounds_table(params, fd, dvars).to_csv(conf_path, sep="\t", index=False, na_rep="n/a",
                                               float_format="%.8g")
    write_sidecar(conf_path, _CONFOUND_META, sources=sources, settings=settings)

    hmc_path = func_path(out_dir, subject, "hmc", ents)
    save_like(realigned, img, hmc_path, dtype=np.float32)
    write_sidecar(hmc_path, {"RepetitionTime": tr, "SkullStripped": False,
                             "Description": "Head-motion corrected (rigid, trilinear) series"},
                  sources=sources, settings=settings)

    mask_path = func_path(out_dir, subject, "brain", ents)
    save_like(mask, img.slicer[..., 0], mask_path, dtype=np.uint8)
    write_sidecar(mask_path, {"Type": "Brain", "Description": "Brain mask of the mean "
                              "motion-corrected EPI (3dAutomask-like), shared by the QC and "
                              "the metrics"},
                  sources=sources, settings=settings)

    iqm_path = func_path(out_dir, subject, "iqms", ents)
    write_sidecar(iqm_path, {**iqms, "RepetitionTime": tr}, sources=sources, settings=settings)
