"""Template heads as the registrations use them: read once per process, shared by every stage.

The atlas registration of the anatomical reference (:mod:`isyb_dask.anat.reference`) and the
deface stage's template registrations (:mod:`isyb_dask.deface.template_fit`) both register a
template head in its closest-canonical orientation, down-sampled to 2 mm. The built-in head is
both the atlas head and the first deface template, so one cache serves the two: the head is
read and down-sampled once per worker process, not once per stage.

Down-sampling a 1 mm head that is not on an integer grid (pydeface's 0.98 mm head) takes a
Gaussian filter and a resampling, about 0.6 s per head. So that a run's workers do not each
pay it on their first subject, the run writes every template's grid head once
(:func:`write_head_on_grid`, MetaImage: the voxels and the double-precision geometry come back
bit for bit) and the workers read it (``stored=`` of :func:`head_on_grid`).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import SimpleITK as sitk

from isyb_dask.io.nifti import file_sha256, load_image
from isyb_dask.registration.grid import downsample, to_canonical, to_sitk

__all__ = ["REGISTRATION_STEP_MM", "head_on_grid", "write_head_on_grid"]

#: Grid step (mm) of the head every template and atlas registration uses at its finest level.
REGISTRATION_STEP_MM = 2.0

_CACHE: dict[tuple[str, float, float], sitk.Image] = {}
_CACHE_SIZE = 8
_CACHE_LOCK = threading.Lock()  # a worker's threads share the cache


def _compute(path: str, step_mm: float) -> sitk.Image:
    return downsample(to_sitk(to_canonical(load_image(path, ndim=3))), step_mm)


def head_on_grid(path: str | os.PathLike[str], step_mm: float,
                 stored: str | os.PathLike[str] | None = None) -> sitk.Image:
    """A head image, closest-canonical, down-sampled to ``step_mm`` (cached per process).

    Parameters
    ----------
    path
        NIfTI file of the head.
    step_mm
        Isotropic grid step (:func:`isyb_dask.registration.downsample`).
    stored
        The same image as written by :func:`write_head_on_grid` for this head and step; it
        is read instead of computed when it exists and is readable.

    Returns
    -------
    SimpleITK.Image
        Shared by every caller: treat it as read-only.
    """
    key = (str(path), os.path.getmtime(path), float(step_mm))
    image = _CACHE.get(key)
    if image is None:
        if stored is not None and Path(stored).is_file():
            try:
                image = sitk.ReadImage(str(stored))
            except RuntimeError:  # unreadable: computed below as if it were absent
                image = None
        if image is None:
            image = _compute(key[0], key[2])
        with _CACHE_LOCK:
            while len(_CACHE) >= _CACHE_SIZE:
                _CACHE.pop(next(iter(_CACHE)))
            image = _CACHE.setdefault(key, image)  # a thread that got there first wins
    return image


def write_head_on_grid(path: str | os.PathLike[str], step_mm: float,
                       folder: str | os.PathLike[str]) -> Path:
    """Write the head's down-sampled image once (``folder/<sha>_grid-<step>mm_head.mha``).

    The name holds the head file's SHA-256 and the step, so an existing file is the same
    image and is kept. Written to a temporary name and renamed (concurrent runs are safe).

    Parameters
    ----------
    path
        NIfTI file of the head.
    step_mm
        Isotropic grid step.
    folder
        Where to write (created if needed).

    Returns
    -------
    Path
        The written (or already present) file.
    """
    out = Path(folder) / f"{file_sha256(path)[:24]}_grid-{float(step_mm):g}mm_head.mha"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".tmp-{os.getpid()}-{out.name}")
        sitk.WriteImage(head_on_grid(path, step_mm), str(tmp), True)
        os.replace(tmp, out)
    return out
