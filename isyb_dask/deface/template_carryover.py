"""Carry a face and brain mask over from the built-in template to a user template.

:func:`complete_template` registers the built-in (reference) head to a template head once
(12 parameters, Mattes MI), keeps that transform (it seeds every subject's registration to
the template) and resamples the reference's masks onto the template grid where the template
has none. Results are keyed by the template head's SHA-256 in ``work_dir/templates`` and,
optionally, in a cache shared between runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import nibabel as nb
import numpy as np
import SimpleITK as sitk

from isyb_dask.deface.templates import Template
from isyb_dask.errors import ConfigError, InputError
from isyb_dask.io.nifti import file_sha256, load_image

__all__ = ["complete_template"]


def _carryover_key(head_sha: str, reference: Template, seed: int) -> str:
    """Cache key of a carry-over: the template head's SHA-256, the reference's files, the seed."""
    digest = hashlib.sha256(head_sha.encode())
    for p in (reference.head, reference.face_mask, reference.brain_mask):
        digest.update((file_sha256(p) if p is not None else "-").encode())
    digest.update(str(int(seed)).encode())
    return digest.hexdigest()[:24]


def complete_template(
    t: Template, reference: Template, work_dir: str | os.PathLike[str], *, seed: int = 20220531,
    threads: int = 1, cache_dir: str | os.PathLike[str] | None = None,
) -> Template:
    """Register the template to ``reference`` once; carry missing face/brain masks over.

    The reference head is registered to the template head (12 parameters, Mattes MI). The
    transform is kept (:attr:`Template.to_builtin`: it seeds every subject's registration to
    this template) and the reference's masks are resampled (linear, threshold 0.5) onto the
    template grid; they replace the template's masks only where it has none. Results are
    written to ``work_dir/templates`` keyed by the head's SHA-256 (reused when present).
    With ``cache_dir``, the result is also kept in ``cache_dir/templates-v2/<key>`` (key:
    SHA-256 of the template head, the reference's head and masks, and the seed) and later
    runs copy it from there instead of registering again: a template's carry-over is a
    property of its files, not of a run. The reference itself is returned unchanged.
    """
    if t.head == reference.head and t.name == reference.name:
        return t
    if reference.face_mask is None or (t.brain_mask is None and reference.brain_mask is None):
        raise ConfigError(f"template {t.name}: reference {reference.name} lacks the masks to carry over")
    from isyb_dask import registration as reg

    out_dir = Path(work_dir) / "templates"
    out_dir.mkdir(parents=True, exist_ok=True)
    head_sha = file_sha256(t.head)
    sha = head_sha[:16]
    face_out = out_dir / f"{t.name}_{sha}_desc-face_mask.nii.gz"
    brain_out = out_dir / f"{t.name}_{sha}_desc-brain_mask.nii.gz"
    xfm_out = out_dir / f"{t.name}_{sha}_to-{reference.name}_xfm.tfm"
    info_out = out_dir / f"{t.name}_{sha}_carryover.json"
    files = {"face_mask.nii.gz": face_out, "brain_mask.nii.gz": brain_out,
             "to_reference.tfm": xfm_out, "carryover.json": info_out}
    need = {"face_mask": t.face_mask is None, "brain_mask": t.brain_mask is None}
    cached = None
    if cache_dir is not None:
        cached = Path(cache_dir) / "templates-v2" / _carryover_key(head_sha, reference, seed)
        if not info_out.exists() and (cached / "carryover.json").exists():
            for name, dst in files.items():
                if (cached / name).exists():
                    tmp = dst.with_name(f".tmp-{os.getpid()}-{dst.name}")
                    shutil.copyfile(cached / name, tmp)
                    os.replace(tmp, dst)
    if not info_out.exists():
        head_img = load_image(t.head, ndim=3)
        fixed = reg.to_sitk(head_img)
        moving = reg.to_sitk(load_image(reference.head, ndim=3))
        res = reg.register_affine(fixed, moving, seed=seed, threads=threads)
        if not res.plausible and not any(need.values()):
            # masks given: the template is usable, its subjects are registered unseeded
            prov = dict(t.provenance)
            prov["builtin_registration"] = (
                f"implausible ({'; '.join(res.checks['violations'])}): subject registrations "
                "to this template start from scratch")
            return Template(name=t.name, head=t.head, face_mask=t.face_mask,
                            brain_mask=t.brain_mask, provenance=prov)
        if not res.plausible:
            raise InputError(
                f"template {t.name}: registration of {reference.name} to {Path(t.head).name} is "
                f"implausible ({'; '.join(res.checks['violations'])}); give a face mask"
            )
        tmp = xfm_out.with_name(f".tmp-{os.getpid()}-{xfm_out.name}")
        sitk.WriteTransform(res.transform, str(tmp))
        os.replace(tmp, xfm_out)
        for key, src, dst in (
            ("face_mask", reference.face_mask, face_out),
            ("brain_mask", reference.brain_mask, brain_out),
        ):
            if src is None:
                continue
            m = reg.to_sitk(load_image(src, ndim=3, check_values=False))
            warped = reg.sitk_to_array(reg.resample_to(m, fixed, res.transform, "linear", threads=threads))
            # outside the reference FOV: keep (face mask) / not brain
            if key == "face_mask":
                ones = reg.resample_to(m * 0 + 1, fixed, res.transform, "nearest", default=0.0)
                warped = np.where(reg.sitk_to_array(ones) > 0, warped, 1.0)
            arr = (warped > 0.5).astype(np.uint8)
            tmp = dst.with_name(f".tmp-{os.getpid()}-{dst.name}")
            nb.save(nb.Nifti1Image(arr, head_img.affine), str(tmp))
            os.replace(tmp, dst)
        info = {
            "reference": reference.name,
            "reference_head": str(reference.head),
            "method": "affine registration (12 dof, Mattes MI) of the reference head to the "
            "template head; masks resampled linearly and thresholded at 0.5",
            "registration_metric": res.metric,
            "checks": res.checks,
        }
        tmp = info_out.with_name(f".tmp-{os.getpid()}-{info_out.name}")
        tmp.write_text(json.dumps(info, indent=2))
        os.replace(tmp, info_out)
        if cached is not None:
            _store_carryover(cached, files)
    info = json.loads(info_out.read_text())
    prov = dict(t.provenance)
    for key, carried in need.items():
        if carried:
            prov[key] = f"carried over from template {info['reference']} ({info['method']})"
    prov["carryover"] = info
    return Template(
        name=t.name,
        head=t.head,
        face_mask=face_out if need["face_mask"] else t.face_mask,
        brain_mask=brain_out if need["brain_mask"] else t.brain_mask,
        provenance=prov,
        to_builtin=xfm_out if xfm_out.exists() else None,
    )


def _store_carryover(entry: Path, files: dict[str, Path]) -> None:
    """Copy a carry-over into the cache as one directory (atomic rename; first writer wins)."""
    if entry.exists():
        return
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=entry.parent))
        for name, src in files.items():
            if src.exists():
                shutil.copyfile(src, tmp / name)
        try:
            os.rename(tmp, entry)
        except OSError:  # another run stored it first
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError:  # a read-only cache only costs the registration next time
        return
