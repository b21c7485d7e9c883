"""Write the anatomical reference's derivatives once (brain/head masks, posteriors, bias).

The files are on the T1w's original voxel grid (the canonical arrays go back through
:func:`isyb_dask.registration.from_canonical`, a pure axis permutation/flip, so the written
values are the arrays the IQMs, GMV and the nuisance model used). Names and ownership come
from :mod:`isyb_dask.io.outputs`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from isyb_dask.anat.reference import SubjectAnatomy
from isyb_dask.io.derivatives import write_sidecar
from isyb_dask.io.nifti import save_like
from isyb_dask.io.outputs import ANAT_OUTPUTS, anat_path
from isyb_dask.registration import from_canonical

__all__ = ["write_anatomy"]

_KEYS = ("brain", "head", "csf", "gm", "wm", "bias")


def _array(anatomy: SubjectAnatomy, key: str) -> np.ndarray:
    if key == "brain":
        return anatomy.brain_mask
    if key == "head":
        return anatomy.head_mask
    if key == "bias":
        return anatomy.bias
    return anatomy.posteriors[key]


def write_anatomy(anatomy: SubjectAnatomy, out_dir: str | os.PathLike[str], *,
                  session: str | None = None, settings: dict[str, Any] | None = None
                  ) -> list[Path]:
    """Write the masks, tissue posteriors and bias field of a subject's anatomy.

    Parameters
    ----------
    anatomy
        The subject's reference (:func:`isyb_dask.anat.reference.build_anatomy`).
    out_dir
        Derivatives root.
    session
        BIDS session label, if any.
    settings
        Settings recorded in each sidecar's provenance.

    Returns
    -------
    list of Path
        The written data files (each with a JSON sidecar).
    """
    written = []
    raw = anatomy.image
    info = {
        "RegistrationMetric": anatomy.info.get("registration_metric"),
        "SubjectToTemplateRAS": anatomy.t1w_to_atlas.tolist(),
    }
    for key in _KEYS:
        out = ANAT_OUTPUTS[key]
        path = anat_path(out_dir, anatomy.subject, key, session=session)
        arr = from_canonical(np.asarray(_array(anatomy, key)), raw.affine)
        dtype = np.uint8 if out.suffix == "mask" else np.float32  # float32 = values used
        save_like(arr.astype(dtype), raw, path, dtype=dtype)
        meta = {"Description": out.description, "Sources": [anatomy.t1w.name]}
        if key in ("brain", "csf", "gm", "wm"):
            meta.update(info)
        write_sidecar(path, meta, sources=[anatomy.t1w], settings=settings)
        written.append(path)
    return written
