"""Files of the BOLD, DWI and ASL runs of one synthetic subject (raw BIDS plus truth)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from isyb_dask.synth.anatomy import load_template_maps, template_factor
from isyb_dask.synth.asl import PCASL, synth_asl
from isyb_dask.synth.bold import synth_bold
from isyb_dask.synth.config import SynthConfig
from isyb_dask.synth.dwi import TENSOR_ORDER, fsl_bvecs, synth_dwi
from isyb_dask.synth.fields import Grid
from isyb_dask.synth.writer import slice_direction, write_json, write_nifti, write_tsv

if TYPE_CHECKING:
    from isyb_dask.synth.anatomy import SubjectAnatomy
    from isyb_dask.synth.subject import SubjectSpec

__all__ = ["SCANNER", "truth_maps", "write_asl", "write_bold", "write_dwi"]


SCANNER = {
    "MagneticFieldStrength": 3,
    "Manufacturer": "isyb-dask synthetic",
    "ManufacturersModelName": "isyb synth",
}


def truth_maps(
    out: dict,
    grid_affine: np.ndarray,
    folder: Path,
    stem: str,
    spec: SubjectSpec,
    cfg: SynthConfig,
) -> None:
    """Write GM/WM/CSF fractions (``label-*_probseg``) and the brain mask of one grid."""
    for key, label in (("gm", "GM"), ("wm", "WM"), ("csf", "CSF")):
        write_nifti(
            out[key],
            grid_affine,
            folder / f"{stem}_label-{label}_probseg.nii.gz",
            orientation=spec.orientation,
            compresslevel=cfg.compresslevel,
        )
    write_nifti(
        out["brain"] > 0.5,
        grid_affine,
        folder / f"{stem}_desc-brain_mask.nii.gz",
        dtype=np.uint8,
        orientation=spec.orientation,
        compresslevel=cfg.compresslevel,
    )


def write_bold(
    spec: SubjectSpec,
    cfg: SynthConfig,
    anat: SubjectAnatomy,
    centre: np.ndarray,
    rng: np.random.Generator,
    snr: float,
    raw: Path,
    truth: Path,
) -> dict:
    """Simulate and write the resting BOLD run and its truth; return the truth.json entries.

    ``centre`` is the FOV centre (scanner mm), ``raw``/``truth`` the subject's folders.
    """
    sub, lvl, ori = spec.label, cfg.compresslevel, spec.orientation
    maps = load_template_maps(template_factor(cfg.bold_voxel))
    grid = Grid.centred(cfg.bold_shape, cfg.bold_voxel, centre)
    high = spec.index % cfg.high_motion_every == cfg.high_motion_offset
    target = float(rng.uniform(*(cfg.high_fd_range if high else cfg.fd_range)))
    out = synth_bold(
        anat,
        maps,
        grid,
        rng,
        n_volumes=spec.bold_volumes,
        tr=cfg.bold_tr,
        snr=snr,
        target_fd=target,
        n_jerks=cfg.n_jerks * (3 if high else 1),
        n_spikes=cfg.n_spikes,
    )
    stem = f"{sub}_task-rest"
    _, _, ornt = write_nifti(
        out["bold"],
        grid.affine,
        raw / "func" / f"{stem}_bold.nii.gz",
        dtype=np.int16,
        orientation=ori,
        tr=cfg.bold_tr,
        slice_axis=2,
        compresslevel=lvl,
    )
    write_json(
        raw / "func" / f"{stem}_bold.json",
        {
            **SCANNER,
            "TaskName": "rest",
            "RepetitionTime": cfg.bold_tr,
            "SliceTiming": out["slice_timing"],
            "SliceEncodingDirection": slice_direction(ornt),
            "EchoTime": 0.03,
            "FlipAngle": 78,
            "PhaseEncodingDirection": "j-",
            "MRAcquisitionType": "2D",
        },
    )
    cols = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z", "framewise_displacement"]
    rows = [list(p) + [fd] for p, fd in zip(out["params"], out["fd"])]
    write_tsv(truth / "func" / f"{stem}_desc-motion_timeseries.tsv", cols, rows)
    write_tsv(
        truth / "func" / f"{stem}_desc-spikes_events.tsv",
        ["volume", "slice", "factor"],
        [list(s) for s in out["spikes"]],
    )
    truth_maps(out, grid.affine, truth / "func", f"{stem}_space-bold", spec, cfg)
    return {
        "target_mean_fd": target,
        "mean_fd": float(out["fd"][1:].mean()),
        "high_motion": high,
        "spike_volumes": [s[0] for s in out["spikes"]],
        "noise_sigma": out["sigma"],
        "motion_centre_mm": grid.centre,
        "physio_freqs_hz": out["freqs"],
        "n_symmetric_components": 3,
        "shape": grid.shape,
        "voxel_size": cfg.bold_voxel,
    }


def write_dwi(
    spec: SubjectSpec,
    cfg: SynthConfig,
    anat: SubjectAnatomy,
    centre: np.ndarray,
    rng: np.random.Generator,
    snr: float,
    raw: Path,
    truth: Path,
) -> dict:
    """Simulate and write the DWI run (with bval/bvec) and its truth; return the truth.json entries.

    ``centre`` is the FOV centre (scanner mm), ``raw``/``truth`` the subject's folders.
    """
    sub, lvl, ori = spec.label, cfg.compresslevel, spec.orientation
    maps = load_template_maps(template_factor(cfg.dwi_voxel))
    grid = Grid.centred(cfg.dwi_shape, cfg.dwi_voxel, centre)
    out = synth_dwi(
        anat, maps, grid, rng, snr=snr, n_dirs=cfg.dwi_dirs, n_b0=cfg.dwi_b0, bval=cfg.dwi_bval
    )
    _, aff, _ = write_nifti(
        out["dwi"],
        grid.affine,
        raw / "dwi" / f"{sub}_dwi.nii.gz",
        dtype=np.int16,
        orientation=ori,
        compresslevel=lvl,
    )
    bvecs = fsl_bvecs(out["bvecs_world"], aff)
    (raw / "dwi" / f"{sub}_dwi.bval").write_text(
        " ".join(str(int(b)) for b in out["bvals"]) + "\n"
    )
    (raw / "dwi" / f"{sub}_dwi.bvec").write_text(
        "\n".join(" ".join(f"{v:.6f}" for v in row) for row in bvecs.T) + "\n"
    )
    write_json(
        raw / "dwi" / f"{sub}_dwi.json",
        {
            **SCANNER,
            "RepetitionTime": 8.0,
            "EchoTime": 0.089,
            "PhaseEncodingDirection": "j-",
            "TotalReadoutTime": 0.05,
            "MRAcquisitionType": "2D",
        },
    )
    d = truth / "dwi"
    write_nifti(
        out["tensor"],
        grid.affine,
        d / f"{sub}_space-dwi_model-tensor_param-tensor_dwimap.nii.gz",
        orientation=ori,
        compresslevel=lvl,
    )
    for key in ("fa", "md", "s0"):
        write_nifti(
            out[key],
            grid.affine,
            d / f"{sub}_space-dwi_model-tensor_param-{key}_dwimap.nii.gz",
            orientation=ori,
            compresslevel=lvl,
        )
    truth_maps(out, grid.affine, d, f"{sub}_space-dwi", spec, cfg)
    return {
        "tensor_order": TENSOR_ORDER,
        "tensor_frame": "world RAS (mm^2/s)",
        "noise_sigma": out["sigma"],
        "shape": grid.shape,
        "voxel_size": cfg.dwi_voxel,
    }


def write_asl(
    spec: SubjectSpec,
    cfg: SynthConfig,
    anat: SubjectAnatomy,
    centre: np.ndarray,
    rng: np.random.Generator,
    snr: float,
    raw: Path,
    truth: Path,
) -> dict:
    """Simulate and write the pCASL run, aslcontext and M0 scan and its truth; return the truth.json entries.

    ``centre`` is the FOV centre (scanner mm), ``raw``/``truth`` the subject's folders.
    """
    sub, lvl, ori = spec.label, cfg.compresslevel, spec.orientation
    maps = load_template_maps(template_factor(cfg.asl_voxel))
    grid = Grid.centred(cfg.asl_shape, cfg.asl_voxel, centre)
    out = synth_asl(anat, maps, grid, rng, snr=snr, n_pairs=cfg.asl_pairs)
    p = raw / "perf"
    _, _, ornt = write_nifti(
        out["asl"],
        grid.affine,
        p / f"{sub}_asl.nii.gz",
        orientation=ori,
        tr=PCASL["tr_prep"],
        slice_axis=2,
        compresslevel=lvl,
    )
    common = {
        **SCANNER,
        "EchoTime": 0.012,
        "FlipAngle": 90,
        "MRAcquisitionType": "2D",
        "SliceTiming": out["slice_timing"],
        "SliceEncodingDirection": slice_direction(ornt),
        "PhaseEncodingDirection": "j-",
    }
    write_json(
        p / f"{sub}_asl.json",
        {
            **common,
            "ArterialSpinLabelingType": "PCASL",
            "PCASLType": "balanced",
            "PostLabelingDelay": PCASL["post_labeling_delay"],
            "LabelingDuration": PCASL["labeling_duration"],
            "M0Type": "Separate",
            "BackgroundSuppression": False,
            "VascularCrushing": False,
            "LabelingEfficiency": PCASL["alpha"],
            "RepetitionTimePreparation": PCASL["tr_prep"],
            "RepetitionTime": PCASL["tr_prep"],
            "AcquisitionVoxelSize": [cfg.asl_voxel] * 3,
        },
    )
    write_tsv(p / f"{sub}_aslcontext.tsv", ["volume_type"], [[c] for c in out["context"]])
    write_nifti(
        out["m0"],
        grid.affine,
        p / f"{sub}_m0scan.nii.gz",
        orientation=ori,
        slice_axis=2,
        compresslevel=lvl,
    )
    write_json(
        p / f"{sub}_m0scan.json",
        {
            **common,
            "RepetitionTimePreparation": 10.0,
            "RepetitionTime": 10.0,
            "IntendedFor": f"perf/{sub}_asl.nii.gz",
        },
    )
    write_nifti(
        out["cbf"],
        grid.affine,
        truth / "perf" / f"{sub}_space-asl_cbf.nii.gz",
        orientation=ori,
        compresslevel=lvl,
    )
    truth_maps(out, grid.affine, truth / "perf", f"{sub}_space-asl", spec, cfg)
    return {
        "model": "white-paper pCASL",
        "constants": PCASL,
        "subject_cbf_factor": out["subject_factor"],
        "noise_sigma": out["sigma"],
        "shape": grid.shape,
        "voxel_size": cfg.asl_voxel,
    }
