"""The per-subject BOLD reference: the run read, motion-corrected and masked once.

:func:`build_bold_reference` is computed once per BOLD run at the start of the subject task
and shared by the functional QC (:func:`isyb_dask.qc.func_stage.run_qc_func`) and the
surface metrics (:func:`isyb_dask.metrics.stage.run_metrics`):

* the file is read and validated once (:func:`isyb_dask.io.nifti.load_image`) and hashed
  once;
* leading non-steady-state volumes are detected (MRIQC rule) and dropped;
* head motion is estimated once (:func:`isyb_dask.bold.hmc.realign_series`): the metrics
  apply these parameters after despiking and slice-timing correction
  (:func:`isyb_dask.bold.rigid.apply_parameters`) instead of estimating them again;
* the temporal mean of the realigned series and its 3dAutomask-like brain mask are the one
  BOLD mean and mask of every stage;
* framewise displacement has one definition (:func:`isyb_dask.qc.motion.framewise_displacement`):
  the confounds table, ``fd_mean`` (the exclusion rule) and the metrics' spike regressors all
  use ``fd`` below.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nb
import numpy as np

from isyb_dask.errors import InputError
from isyb_dask.io.nifti import file_sha256, load_image

__all__ = ["MIN_VOLUMES", "BoldReference", "build_bold_reference", "repetition_time"]

#: Shortest BOLD run accepted (DVARS needs an AR(1) fit and differences).
MIN_VOLUMES = 5


@dataclass
class BoldReference:
    """One BOLD run, read and motion-corrected once.

    Attributes
    ----------
    path, sha256
        Input file and its SHA-256.
    image
        The validated image (header, affine).
    data
        float32 ``(X, Y, Z, T)`` series, all volumes, non-finite values set to 0.
    tr
        Repetition time (s) from the BIDS metadata.
    meta
        BIDS metadata of the run.
    dummy
        Leading non-steady-state volumes (dropped before everything below).
    params
        ``(T - dummy, 6)`` motion parameters (trans mm, rot rad) of the retained volumes.
    realigned
        Motion-corrected retained volumes (float32).
    mean
        Temporal mean of ``realigned`` (float64).
    mask
        Boolean brain mask of ``mean`` (3dAutomask-like).
    fd
        ``T - dummy - 1`` Power FD values (mm) with head radius ``fd_radius``.
    fd_radius
        Head radius (mm) of ``fd``.
    settings
        Motion-correction settings (for provenance).
    """

    path: Path
    sha256: str
    image: nb.Nifti1Image
    data: np.ndarray
    tr: float
    meta: dict[str, Any]
    dummy: int
    params: np.ndarray
    realigned: np.ndarray
    mean: np.ndarray
    mask: np.ndarray
    fd: np.ndarray
    fd_radius: float
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def fd_mean(self) -> float:
        """Mean FD of the run (the value the motion exclusion rule reads)."""
        return float(np.mean(self.fd))

    def params_from(self, first_volume: int) -> np.ndarray:
        """Motion parameters of the volumes from ``first_volume`` (index in the file) on.

        Raises
        ------
        ValueError
            If ``first_volume`` is before the retained volumes.
        """
        if first_volume < self.dummy:
            raise ValueError(f"volume {first_volume} was dropped (non-steady state)")
        return self.params[first_volume - self.dummy:]


def repetition_time(meta: Mapping[str, Any] | None, name: str) -> float:
    """``RepetitionTime`` of the BIDS metadata (s), checked."""
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


def build_bold_reference(
    bold: str | os.PathLike[str],
    meta: Mapping[str, Any] | None,
    cfg: Any,
    *,
    threads: int = 1,
    image: nb.Nifti1Image | None = None,
) -> BoldReference:
    """Read a BOLD run once, drop non-steady-state volumes, correct motion, mask the mean.

    Parameters
    ----------
    bold
        4-D BOLD NIfTI file.
    meta
        Its BIDS metadata (``RepetitionTime`` required).
    cfg
        :class:`isyb_dask.qc.config.QCConfig` (``fd_radius``; ``seed``, ``hmc_reference``,
        ``drop_dummy_volumes`` when present).
    threads
        SimpleITK threads of the motion correction.

    Returns
    -------
    BoldReference

    Raises
    ------
    InputError
        Unreadable file, fewer than :data:`MIN_VOLUMES` steady-state volumes, no
        ``RepetitionTime`` or a degenerate mean image.
    """
    from isyb_dask.qc.func_iqms import non_steady_state_volumes
    from isyb_dask.qc.func_masks import automask
    from isyb_dask.bold.hmc import realign_series, rotation_center
    from isyb_dask.qc.motion import framewise_displacement

    bold = Path(bold)
    name = f"{bold.parent.name}/{bold.name}"
    tr = repetition_time(meta, name)
    img = image if image is not None else load_image(bold, ndim=4, min_volumes=MIN_VOLUMES)
    if img.shape[3] < MIN_VOLUMES:
        raise InputError(f"{name}: too short, {img.shape[3]} volumes; at least {MIN_VOLUMES} are needed")
    data = np.asarray(img.dataobj, dtype=np.float32)
    if data.ndim > 4:
        data = data.reshape(data.shape[:4])
    data = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)
    n_total = data.shape[3]
    dummy = non_steady_state_volumes(data) if getattr(cfg, "drop_dummy_volumes", True) else 0
    if n_total - dummy < MIN_VOLUMES:
        raise InputError(f"{name}: only {n_total - dummy} steady-state volumes after dropping "
                         f"{dummy} non-steady-state volumes (need {MIN_VOLUMES})")
    kept = data[..., dummy:]
    seed = int(getattr(cfg, "seed", 0))
    reference = getattr(cfg, "hmc_reference", 0)
    realigned, params = realign_series(kept, img.affine, reference=reference, threads=threads,
                                       seed=seed)
    mean = realigned.mean(axis=3, dtype=np.float64)
    try:
        mask = automask(mean)
    except ValueError as exc:
        raise InputError(f"{name}: {exc}") from None
    radius = float(getattr(cfg, "fd_radius", 50.0))
    settings = {
        "hmc": {"method": "gauss-newton", "reference": reference,
                "cost": "sum of squares after global gain, head voxels, outlier slices dropped",
                "estimation_interpolation": "trilinear, quadratic B-spline final iterations",
                "output_interpolation": "trilinear",
                "pyramid": {"shrink": [2, 1], "smooth_vox": [1, 0]},
                "rotation_center_mm": rotation_center(kept.shape, img.affine).tolist()},
        "mask": "3dAutomask-like (clfrac 0.5, peel nbhrs 17, fill holes)",
        "fd_radius_mm": radius,
        "threads": threads, "seed": seed,
        "non_steady_state_volumes_dropped": dummy,
    }
    return BoldReference(
        path=bold, sha256=file_sha256(bold), image=img, data=data, tr=tr, meta=dict(meta or {}),
        dummy=int(dummy), params=np.asarray(params, np.float64), realigned=realigned,
        mean=mean, mask=np.asarray(mask, bool),
        fd=framewise_displacement(params, radius=radius), fd_radius=radius, settings=settings,
    )
