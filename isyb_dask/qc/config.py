"""Settings of the quality-control stage."""

from __future__ import annotations

import math
from dataclasses import dataclass

from isyb_dask.errors import ConfigError


@dataclass(frozen=True)
class QCConfig:
    """IQM and exclusion settings (METHODS §5-§7).

    Attributes
    ----------
    fd_radius
        Head radius in mm used to turn rotations into displacements (Power FD).
    fd_threshold
        Per-volume FD threshold in mm for ``fd_num``/``fd_perc``.
    fd_mean_max
        BOLD runs with mean FD above this (mm) are excluded.
    sd_limit
        Values beyond this many SDs of the study mean are excluded.
    sd_ddof
        Delta degrees of freedom of that SD.
    sd_iterate
        Repeat the SD rule until nothing more is excluded (paper: single pass).
    sd_direction
        ``"both"`` (two-sided, default) or ``"bad"``: only values on the bad side of the
        mean of each IQM are excluded (e.g. low SNR, high EFC).
    anat_sd_metrics, func_sd_metrics
        IQMs screened by the SD rule (paper: T1w SNR, FBER, CNR, EFC, FWHM; BOLD SNR, FBER,
        EFC, FWHM, mean FD, DVARS, GCOR).
    seed
        Seed of every random step of the QC (metric sampling, head-mask enhancement).
    threads
        SimpleITK thread count of the QC stage.
    registration_levels_mm
        Pyramid of the atlas-to-T1w affine registration (masks and priors only).
    inu_grid_mm
        Voxel size (mm) of the coarse N4 fitting grid (integer shrink of the image).
    prior_weight
        Weight of the warped atlas priors in the tissue EM (Atropos default 0.1).
    mrf_beta
        Smoothing factor of the tissue segmentation's Markov random field (Atropos ``-m``,
        radius 1; MRIQC 0.01); 0 turns it off.
    head_threshold
        Gradient threshold of the head mask (MRIQC: 15 on a 0-100 scale).
    artifact_zscore
        Background intensity / MAD above which a hat voxel is an artifact (MRIQC: 10).
    """

    fd_radius: float = 50.0
    fd_threshold: float = 0.2
    fd_mean_max: float = 0.2
    sd_limit: float = 3.0
    sd_ddof: int = 1
    sd_iterate: bool = False
    sd_direction: str = "both"
    anat_sd_metrics: tuple[str, ...] = ("snr_total", "fber", "cnr", "efc", "fwhm_avg")
    func_sd_metrics: tuple[str, ...] = (
        "snr",
        "fber",
        "efc",
        "fwhm_avg",
        "fd_mean",
        "dvars_std",
        "gcor",
    )
    seed: int = 20220531
    threads: int = 1
    registration_levels_mm: tuple[float, ...] = (6.0, 4.0)
    inu_grid_mm: float = 8.0
    prior_weight: float = 0.1
    mrf_beta: float = 0.01
    head_threshold: float = 15.0
    artifact_zscore: float = 10.0

    def __post_init__(self) -> None:
        if self.sd_direction not in ("both", "bad"):
            raise ConfigError(f"sd_direction must be 'both' or 'bad', got {self.sd_direction!r}")
        if self.sd_limit <= 0:
            raise ConfigError(f"sd_limit must be positive, got {self.sd_limit}")
        if self.sd_ddof < 0:
            raise ConfigError(f"sd_ddof must be >= 0, got {self.sd_ddof}")
        if not math.isfinite(self.mrf_beta) or self.mrf_beta < 0:
            raise ConfigError(f"mrf_beta must be a finite number >= 0, got {self.mrf_beta}")
