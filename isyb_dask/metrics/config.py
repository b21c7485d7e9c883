"""Settings of the per-subject surface metrics stage."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricsConfig:
    """Functional, diffusion, perfusion and structural metric settings (METHODS §8-§13).

    Attributes
    ----------
    dummy_volumes
        Volumes dropped at the start of each BOLD run.
    band
        ALFF/fALFF frequency band in Hz (also the band-pass of the ReHo/VMHC series).
    surface_derivatives
        Optional FreeSurfer/ciftify derivatives folder with CT, SA and LGI.
    seed
        Seed of the registration metric sampling.
    threads
        SimpleITK threads per registration / filter.
    alff_variant
        ``"ccs"`` (FFT amplitude sum, the paper's) or ``"cpac"`` (SD ratio).
    reho_neighbourhood
        Volume ReHo neighbourhood (27, 19 or 7 voxels).
    gm_depths
        Relative cortical depths (white = 0, pial = 1) averaged for grey-matter metrics.
    wm_depths
        Depths below the white surface (units of local thickness) for FA_WM / MD_WM.
    mni_step_mm
        Voxel size of the ``space-MNI152`` volumetric outputs.
    write_mni
        Also write the volumetric maps resampled to MNI space.
    write_gifti
        Write the per-metric GIFTI files (``..._space-fsLR_den-32k_desc-<M>.shape.gii``).
    morphometry
        Compute CT, SA and LGI from the T1w's own tissue posteriors where
        ``surface_derivatives`` does not provide them (about 11 s CPU of a 1 mm subject).
        False leaves them missing, with that reason in the results.
    """

    dummy_volumes: int = 5
    band: tuple[float, float] = (0.01, 0.1)
    surface_derivatives: str | None = None
    seed: int = 20220531
    threads: int = 1
    alff_variant: str = "ccs"
    reho_neighbourhood: int = 27
    gm_depths: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9)
    wm_depths: tuple[float, ...] = (-1.0, -0.75, -0.5, -0.25)
    mni_step_mm: float = 2.0
    write_mni: bool = True
    write_gifti: bool = True
    morphometry: bool = True
