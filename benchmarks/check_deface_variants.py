"""Defacing of the real volunteer under acquisition variants a new site could bring.

The volunteer (``../shared/data/heads/xa30_sub1_T1w_tfl_2mm.nii.gz``) is written again with
Rician background noise of several levels, a 40 % intensity ramp, another voxel order (PIL),
a head pitched by 15 degrees or turned by 20 degrees in scanner space, a 100x smaller
intensity scale and the chin cut by the field of view. Each copy is defaced (``maskface``)
with the built-in template and FSL MNI152 2 mm + mydeface mask, then audited
(:func:`isyb_dask.deface.audit.audit_defaced`). Printed per variant and template: the
isolated-voxel share (:func:`isyb_dask.deface.skin.noisy_background`), face found, detector
score per view, median facial depth change, brain voxels changed, debris cleared. Renders go
to ``WORK/out_<variant>/sub-v/figures``.

Usage::

    ISYB_SHARED_DATA=../shared/data OMP_NUM_THREADS=1 .venv/bin/python \\
        benchmarks/check_deface_variants.py WORK [VARIANT ...]
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path

import nibabel as nb
import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform

from isyb_dask.atlas import get_reference_atlas
from isyb_dask.deface.audit import audit_defaced
from isyb_dask.deface.config import DefaceConfig
from isyb_dask.deface.skin import ISOLATED_LIMIT, isolated_share, skin_threshold
from isyb_dask.deface.stage import run_deface
from isyb_dask.deface.templates import resolve_templates

SHARED = Path(os.environ.get("ISYB_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def _rician(data: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    re = data + rng.normal(0.0, sigma, data.shape)
    im = rng.normal(0.0, sigma, data.shape)
    return np.sqrt(re * re + im * im).astype(np.float32)


def _reorient(data: np.ndarray, affine: np.ndarray, codes: tuple[str, str, str]):
    o = ornt_transform(io_orientation(affine), axcodes2ornt(codes))
    return apply_orientation(data, o), affine @ inv_ornt_aff(o, data.shape)


def _turned(affine: np.ndarray, degrees: float, axis: int) -> np.ndarray:
    """The same voxels with the world rotated about one RAS axis (a tilted head)."""
    t = np.deg2rad(degrees)
    i, j = [(1, 2), (0, 2), (0, 1)][axis]
    r = np.eye(4)
    r[i, i], r[i, j], r[j, i], r[j, j] = np.cos(t), -np.sin(t), np.sin(t), np.cos(t)
    return r @ affine


def _anterior_axis(affine: np.ndarray) -> tuple[int, int]:
    """Voxel axis and direction (+1: growing index) of RAS anterior."""
    ornt = io_orientation(affine)
    axis = int(np.flatnonzero(ornt[:, 0] == 1)[0])
    return axis, int(ornt[axis, 1])


def _nose_cut(data: np.ndarray, affine: np.ndarray):
    """The field of view ends 6 mm behind the most anterior head voxel (nose tip cut)."""
    axis, sign = _anterior_axis(affine)
    vox = float(np.sqrt((affine[:3, axis] ** 2).sum()))
    front = np.flatnonzero((data > skin_threshold(data)).any(axis=tuple(i for i in range(3) if i != axis)))
    cut = int(round(6.0 / vox))
    keep = [slice(None)] * 3
    keep[axis] = slice(0, front.max() + 1 - cut) if sign > 0 else slice(front.min() + cut, None)
    shift = np.eye(4)
    shift[axis, 3] = keep[axis].start or 0
    return data[tuple(keep)], affine @ shift


def _thick_slices(data: np.ndarray, affine: np.ndarray):
    """Pairs of slices along the third voxel axis averaged: 4 mm slices."""
    n = data.shape[2] // 2 * 2
    thick = data[:, :, :n].reshape(data.shape[0], data.shape[1], n // 2, 2).mean(axis=3)
    scale = np.diag([1.0, 1.0, 2.0, 1.0])
    scale[2, 3] = 0.5  # the new voxel centre lies between the two it averages
    return thick.astype(np.float32), affine @ scale


def _ghost(data: np.ndarray, affine: np.ndarray, level: float) -> np.ndarray:
    """A phase-encoding ghost: the head shifted by half the field of view along A-P, at ``level``."""
    axis, _ = _anterior_axis(affine)
    return (data + level * np.roll(data, data.shape[axis] // 2, axis=axis)).astype(np.float32)


def variants(data: np.ndarray, affine: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The volunteer's copies by name."""
    rng = np.random.default_rng(0)
    g = np.indices(data.shape).astype(np.float32)
    ramp = 1.0 + 0.4 * (g[1] / data.shape[1] - 0.5) + 0.3 * (g[2] / data.shape[2] - 0.5)
    crop = np.eye(4)
    crop[2, 3] = 12
    low = np.eye(4)
    low[2, 3] = 24
    out = {"base": (data, affine)}
    for sigma in (60.0, 90.0, 134.0):
        out[f"noise{int(sigma)}"] = (_rician(data, sigma, rng), affine)
    out.update({
        "bias40": ((data * ramp).astype(np.float32), affine),
        "PIL": _reorient(data, affine, ("P", "I", "L")),
        "pitch15": (data, _turned(affine, 15.0, 0)),
        "yaw20": (data, _turned(affine, 20.0, 2)),
        "scale0.01": ((data * 0.01).astype(np.float32), affine),
        "cropchin": (data[:, :, 12:], affine @ crop),
        "cropmouth": (data[:, :, 24:], affine @ low),
        "nosecut": _nose_cut(data, affine),
        "slices4mm": _thick_slices(data, affine),
        "ghost30": (_ghost(data, affine, 0.3), affine),
    })
    return out


def mni152_templates(work: Path) -> list:
    """The built-in template and FSL's MNI152 2 mm head with its mydeface mask, resolved."""
    tpl = SHARED / "templates"
    return resolve_templates(
        [f"MNI152={tpl / 'mni152_fsl_T1_2mm_head.nii.gz'}:"
         f"{tpl / 'mni152_2mm_defacemask_mydeface.nii.gz'}"],
        None, work / "tpl", atlas=get_reference_atlas())


def main(work: Path, only: list[str]) -> None:
    work.mkdir(parents=True, exist_ok=True)
    templates = mni152_templates(work)
    img = nb.load(SHARED / "heads" / "xa30_sub1_T1w_tfl_2mm.nii.gz")
    cfg = dataclasses.replace(DefaceConfig(), audit=False)
    print(f"median route when the isolated share > {ISOLATED_LIMIT}")
    for name, (data, affine) in variants(np.asarray(img.dataobj, np.float32), img.affine).items():
        if only and name not in only:
            continue
        path = work / f"{name}.nii.gz"
        nb.save(nb.Nifti1Image(data, affine), path)
        out = work / f"out_{name}"
        t0 = time.process_time()
        res = run_deface(path, "sub-v", templates, cfg, out)
        defaced = {}
        for t, row in res["templates"].items():
            if row.get("error"):
                print(f"{name:10s} {t:9s} ERROR {row['error']}")
                continue
            p = out / "sub-v" / "anat" / f"sub-v_desc-defaced{t}_T1w.nii.gz"
            defaced[t] = np.asarray(nb.load(p).dataobj, np.float32)
        audit = audit_defaced(data, affine, defaced, out, "sub-v")
        share = isolated_share(data, skin_threshold(data))
        for t, row in audit.items():
            r = res["templates"][t]
            print(f"{name:10s} {t:9s} isolated={share:.4f} face={row['face_detected']!s:5s} "
                  f"scores={[round(x, 2) for x in row['view_scores']]} deep={row['face_score_deep']:.2f} "
                  f"depth_mm={r['surface_depth_change_mm']:.1f} brain_changed={r['brain_voxels_changed']} "
                  f"debris={r['debris_voxels_cleared']} ({time.process_time() - t0:.0f} s CPU)", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
