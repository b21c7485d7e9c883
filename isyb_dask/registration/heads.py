"""Template heads as the registrations use them: read once per process, shared by every stage.

The atlas registration of the anatomical reference (:mod:`isyb_dask.anat.reference`) and the
deface stage's template registrations (:mod:`isyb_dask.deface.template_fit`) both register a
template head in its closest-canonical orientation, down-sampled to 2 mm. The built-in head is
both the atlas head and the first deface template, so one cache serves the two: the head is
read and down-sampled once per worker process, not once per stage.
"""

from __future__ import annotations

import os
from functools import lru_cache

import SimpleITK as sitk

from isyb_dask.io.nifti import load_image
from isyb_dask.registration.grid import downsample, to_canonical, to_sitk

__all__ = ["head_on_grid"]


@lru_cache(maxsize=8)
def _head_on_grid(path: str, mtime: float, step_mm: float) -> sitk.Image:
    del mtime  # part of the cache key only (a rewritten file is read again)
    return downsample(to_sitk(to_canonical(load_image(path, ndim=3))), step_mm)


def head_on_grid(path: str | os.PathLike[str], step_mm: float) -> sitk.Image:
    """A head image, closest-canonical, down-sampled to ``step_mm`` (cached per process).

    Parameters
    ----------
    path
        NIfTI file of the head.
    step_mm
        Isotropic grid step (:func:`isyb_dask.registration.downsample`).

    Returns
    -------
    SimpleITK.Image
        Shared by every caller: treat it as read-only.
    """
    return _head_on_grid(str(path), os.path.getmtime(path), float(step_mm))
