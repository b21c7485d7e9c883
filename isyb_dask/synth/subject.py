"""Generate and write one synthetic subject (raw BIDS files plus ground truth)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from isyb_dask.synth.anatomy import SEX_SCALE, draw_anatomy, load_template_maps, template_factor
from isyb_dask.synth.config import SynthConfig
from isyb_dask.synth.face_model import (
    FaceField,
    base_landmarks,
    draw_face_parameters,
    measure,
    subject_landmarks,
)
from isyb_dask.synth.fields import Grid
from isyb_dask.synth.modality_files import SCANNER, truth_maps, write_asl, write_bold, write_dwi
from isyb_dask.synth.t1w import synth_t1w
from isyb_dask.synth.writer import write_json, write_nifti, write_tsv

__all__ = ["TRUTH_NAME", "SubjectSpec", "generate_subject"]

TRUTH_NAME = "synth-truth"
_POP_CODE = {"chinese": 1, "western": 2}
_STREAMS = ("demographics", "anatomy", "t1w", "bold", "dwi", "asl", "face")


@dataclass(frozen=True)
class SubjectSpec:
    """What to generate for one subject."""

    index: int
    population: str
    seed: int
    voxel_size: float
    snr: float | None
    modalities: tuple[str, ...]
    bold_volumes: int
    orientation: str | None

    @property
    def label(self) -> str:
        """BIDS subject label, e.g. ``sub-0001``."""
        return f"sub-{self.index:04d}"


def _streams(spec: SubjectSpec) -> dict[str, np.random.Generator]:
    ss = np.random.SeedSequence([int(spec.seed), int(spec.index), _POP_CODE[spec.population]])
    return {
        name: np.random.default_rng(child)
        for name, child in zip(_STREAMS, ss.spawn(len(_STREAMS)))
    }


def _snrs(spec: SubjectSpec, cfg: SynthConfig, rng: np.random.Generator) -> dict[str, float]:
    # Range given for 2 mm voxels; thermal SNR grows with voxel volume (exponent 1.5 as a
    # compromise for the longer scans used at high resolution).
    drawn = float(rng.uniform(*cfg.t1w_snr_range)) * (spec.voxel_size / 2.0) ** 1.5
    if spec.snr is None:
        return {"t1w": drawn, "bold": cfg.bold_snr, "dwi": cfg.dwi_snr, "asl": cfg.asl_snr}
    snr = float(spec.snr)
    f = snr / 30.0 if math.isfinite(snr) else math.inf
    return {"t1w": snr, "bold": cfg.bold_snr * f, "dwi": cfg.dwi_snr * f, "asl": cfg.asl_snr * f}


def _add_face(anat, population: str, rng: np.random.Generator):
    """Add the landmark face model to a subject's displacement (see ``face_model``)."""
    params = draw_face_parameters(rng, population)
    disp = anat.displacement
    field = FaceField(disp.values, disp.affine, params=params, landmarks=base_landmarks(),
                      centre=anat.centre, scales=anat.scales, pop_scales=anat.population_scales)
    anat = dataclasses.replace(anat, displacement=field)

    def unposed_to_template(points: np.ndarray) -> np.ndarray:
        c = anat.centre[:, None]
        return c + (points - c) / anat.scales[:, None] + anat.displacement(points)

    marks = subject_landmarks(base_landmarks(), unposed_to_template, anat.centre, anat.scales)
    return anat, params, marks


def write_landmarks(path: Path, landmarks: dict[str, np.ndarray], pose: np.ndarray) -> None:
    """Landmark table: name and scanner-world RAS mm (x, y, z) of each facial landmark."""
    rows = []
    for name, pos in landmarks.items():
        w = pose[:3, :3] @ pos + pose[:3, 3]
        rows.append([name, *(f"{v:.3f}" for v in w)])
    write_tsv(path, ["landmark", "x", "y", "z"], rows)


def generate_subject(spec: SubjectSpec, out_dir: Path, cfg: SynthConfig) -> dict:
    """Simulate and write every requested modality of one subject.

    Returns
    -------
    dict
        The participant row (``participant_id``, ``age``, ``sex``, ``population``).
    """
    rngs = _streams(spec)
    sub = spec.label
    sex = "M" if rngs["demographics"].random() < 0.5 else "F"
    age = int(rngs["demographics"].integers(18, 31))
    snrs = _snrs(spec, cfg, rngs["demographics"])
    maps_t1 = load_template_maps(template_factor(spec.voxel_size))
    anat = draw_anatomy(rngs["anatomy"], spec.population, sex, maps_t1,
                        global_sd_mm=cfg.global_warp_sd_mm, face_sd_mm=0.0)
    anat, face_params, landmarks = _add_face(anat, spec.population, rngs["face"])
    raw = out_dir / sub
    truth = out_dir / "derivatives" / TRUTH_NAME / sub
    lvl = cfg.compresslevel
    ori = spec.orientation
    info: dict = {
        "participant_id": sub,
        "population": spec.population,
        "sex": sex,
        "age": age,
        "population_scales_LR_AP_SI": anat.population_scales,
        "sex_scale": SEX_SCALE[sex],
        "head_scales_LR_AP_SI": anat.scales,
        "face_parameters_mm": face_params,
        "face_measures_mm": measure(landmarks),
        "head_centre_template_mm": anat.centre,
        "pose": {
            "params": anat.pose,
            "columns": ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"],
            "matrix": anat.pose_matrix,
            "centre_mm": anat.centre,
        },
        "snr": snrs,
        "seed": spec.seed,
        "orientation": ori or "RAS",
    }
    brain_centre = anat.to_scanner(maps_t1.brain_centre[:, None])[:, 0]
    brain_centre = brain_centre + np.array([0.0, 0.0, cfg.fov_shift_mm])
    if "anat" in spec.modalities:
        shape = tuple(math.ceil(f / spec.voxel_size - 1e-6) for f in cfg.t1w_fov_mm)
        grid = Grid.centred(shape, spec.voxel_size, maps_t1.head_centre)
        gain = float(rngs["t1w"].uniform(2.0, 3.0))
        bias_sd = float(rngs["t1w"].uniform(0.04, 0.12))
        contrast = float(rngs["t1w"].uniform(-0.06, 0.06))
        texture_sd = 0.10
        t1 = synth_t1w(
            anat,
            maps_t1,
            grid,
            rngs["t1w"],
            snr=snrs["t1w"],
            gain=gain,
            bias_sd=bias_sd,
            contrast=contrast,
            texture_sd=texture_sd,
        )
        write_nifti(
            t1["t1w"],
            grid.affine,
            raw / "anat" / f"{sub}_T1w.nii.gz",
            dtype=np.int16,
            orientation=ori,
            compresslevel=lvl,
        )
        write_json(
            raw / "anat" / f"{sub}_T1w.json",
            {
                **SCANNER,
                "RepetitionTime": 2.3,
                "EchoTime": 0.00298,
                "InversionTime": 0.9,
                "FlipAngle": 9,
                "MRAcquisitionType": "3D",
                "PulseSequenceType": "MPRAGE",
            },
        )
        truth_maps(t1, grid.affine, truth / "anat", sub, spec, cfg)
        write_nifti(
            t1["head"] > 0.5,
            grid.affine,
            truth / "anat" / f"{sub}_desc-head_mask.nii.gz",
            dtype=np.uint8,
            orientation=ori,
            compresslevel=lvl,
        )
        write_nifti(
            t1["face"] > 0.5,
            grid.affine,
            truth / "anat" / f"{sub}_desc-face_mask.nii.gz",
            dtype=np.uint8,
            orientation=ori,
            compresslevel=lvl,
        )
        info["t1w"] = {
            "gain": gain,
            "bias_sd": bias_sd,
            "gm_wm_contrast": contrast,
            "brain_class_means": maps_t1.brain_contrast,
            "face_texture_sd": texture_sd,
            "noise_sigma": t1["sigma"],
            "wm_mean": t1["wm_mean"],
            "shape": grid.shape,
            "voxel_size": spec.voxel_size,
        }
        info["cortical_thinning"] = t1.get("thinning")
    disp = anat.displacement
    write_landmarks(truth / "anat" / f"{sub}_desc-landmarks.tsv", landmarks, anat.pose_matrix)
    write_nifti(
        np.moveaxis(disp.sampled(), 0, -1),
        disp.affine,
        truth / "xfm" / f"{sub}_desc-displacement_xfm.nii.gz",
        compresslevel=lvl,
    )
    if "func" in spec.modalities:
        info["bold"] = write_bold(
            spec, cfg, anat, brain_centre, rngs["bold"], snrs["bold"], raw, truth
        )
    if "dwi" in spec.modalities:
        info["dwi"] = write_dwi(
            spec, cfg, anat, brain_centre, rngs["dwi"], snrs["dwi"], raw, truth
        )
    if "perf" in spec.modalities:
        info["asl"] = write_asl(
            spec, cfg, anat, brain_centre, rngs["asl"], snrs["asl"], raw, truth
        )
    write_json(truth / f"{sub}_truth.json", info)
    return {"participant_id": sub, "age": age, "sex": sex, "population": spec.population}
