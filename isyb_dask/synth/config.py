"""Settings of the synthetic study generator (acquisition grids, noise, motion)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SynthConfig"]


@dataclass(frozen=True)
class SynthConfig:
    """Acquisition and simulation settings shared by every subject.

    Attributes
    ----------
    t1w_fov_mm
        T1w field of view (LR, AP, SI) in mm; the grid is ``ceil(fov / voxel_size)``.
    bold_shape, bold_voxel, bold_tr, bold_volumes
        BOLD grid (RAS, slices along the third axis), voxel size (mm), TR (s), volumes.
    dwi_shape, dwi_voxel, dwi_dirs, dwi_b0, dwi_bval
        DWI grid, voxel size, number of diffusion directions and b0 volumes, b-value.
    asl_shape, asl_voxel, asl_pairs
        ASL grid, voxel size and number of control/label pairs.
    t1w_snr_range
        Default per-subject T1w SNR (WM mean / noise SD) at 2 mm, drawn uniformly from this
        range and multiplied by ``(voxel_size / 2) ** 1.5`` (so about 12-21 at 1 mm).
    bold_snr, dwi_snr, asl_snr
        Default SNRs (GM mean / SD for BOLD, brain b0 mean / SD for DWI, brain M0 mean / SD
        for ASL). A user ``snr`` replaces the T1w SNR and scales these by ``snr / 30``.
    high_motion_every, high_motion_offset
        Subject number ``i`` is a high mover when ``i % every == offset`` (10 % of subjects).
    fd_range, high_fd_range
        Target mean Power FD (mm) drawn uniformly for ordinary / high-motion subjects.
    n_spikes, n_jerks
        Spike volumes and motion jerks per BOLD run (high movers get three times the jerks).
    compresslevel
        gzip level of the NIfTI files.
    global_warp_sd_mm
        SD (mm) of each component of the long-wavelength (60 mm FWHM) random warp of the
        head; faces vary through the landmark model (``face_model``), not through noise.
    fov_shift_mm
        BOLD/DWI/ASL fields of view are centred this far above the brain centre (so the
        vertex is inside; the lowest cerebellum may touch the bottom slice).
    """

    t1w_fov_mm: tuple[float, float, float] = (192.0, 256.0, 256.0)
    bold_shape: tuple[int, int, int] = (44, 54, 40)
    bold_voxel: float = 4.0
    bold_tr: float = 2.0
    bold_volumes: int = 80
    dwi_shape: tuple[int, int, int] = (56, 68, 50)
    dwi_voxel: float = 3.0
    dwi_dirs: int = 30
    dwi_b0: int = 2
    dwi_bval: float = 1000.0
    asl_shape: tuple[int, int, int] = (44, 54, 36)
    asl_voxel: float = 4.0
    asl_pairs: int = 10
    t1w_snr_range: tuple[float, float] = (35.0, 60.0)
    bold_snr: float = 60.0
    dwi_snr: float = 25.0
    asl_snr: float = 300.0
    high_motion_every: int = 10
    high_motion_offset: int = 3
    fd_range: tuple[float, float] = (0.04, 0.15)
    high_fd_range: tuple[float, float] = (0.3, 0.6)
    n_spikes: int = 2
    n_jerks: int = 2
    compresslevel: int = 1
    fov_shift_mm: float = 6.0
    global_warp_sd_mm: float = 1.5
