"""Byte-deterministic writers for the synthetic BIDS dataset (NIfTI, JSON, TSV)."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import nibabel as nb
import numpy as np

from isyb_dask.io.jsonable import jsonable
from isyb_dask.synth.fields import reorient

__all__ = ["slice_direction", "write_json", "write_nifti", "write_tsv"]


def _atomic_write(path: Path, payload: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    tmp.write_bytes(payload)
    os.replace(tmp, path)
    return path


def write_nifti(
    data: np.ndarray,
    affine: np.ndarray,
    path: Path,
    *,
    dtype: type | np.dtype = np.float32,
    orientation: str | None = None,
    tr: float | None = None,
    slice_axis: int | None = None,
    compresslevel: int = 4,
) -> tuple[Path, np.ndarray, np.ndarray]:
    """Write an RAS-ordered array, optionally reoriented, as ``.nii.gz`` with fixed bytes.

    Integer dtypes are rounded and clipped. ``tr`` sets the 4th pixdim (seconds) and
    ``slice_axis`` (RAS axis index) the header's slice dimension.

    Returns
    -------
    tuple
        ``(path, stored_affine, ornt)`` where ``ornt`` maps RAS axes to stored axes.
    """
    arr = np.asarray(data)
    out_dtype = np.dtype(dtype)
    if np.issubdtype(out_dtype, np.integer):
        info = np.iinfo(out_dtype)
        arr = np.clip(np.rint(arr), info.min, info.max)
    arr = arr.astype(out_dtype)
    arr, aff, ornt = reorient(arr, affine, orientation)
    img = nb.Nifti1Image(arr, aff)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(aff, code=1)
    img.set_sform(aff, code=1)
    if tr is not None and arr.ndim == 4:
        zooms = list(img.header.get_zooms()[:3]) + [float(tr)]
        img.header.set_zooms(zooms)
    if slice_axis is not None:
        img.header.set_dim_info(slice=int(ornt[slice_axis, 0]))
    payload = gzip.compress(img.to_bytes(), compresslevel=compresslevel, mtime=0)
    return _atomic_write(Path(path), payload), aff, ornt


def slice_direction(ornt: np.ndarray, ras_axis: int = 2) -> str:
    """BIDS ``SliceEncodingDirection`` of RAS axis ``ras_axis`` after reorientation ``ornt``.

    With a negative direction BIDS reads ``SliceTiming`` from the highest stored index, which
    is the lowest RAS index, so timing lists in RAS order stay valid.
    """
    axis, flip = int(ornt[ras_axis, 0]), int(ornt[ras_axis, 1])
    return "ijk"[axis] + ("-" if flip < 0 else "")


def write_json(path: Path, payload: dict) -> Path:
    """Write ``payload`` as indented JSON.

    numpy values are converted, floats rounded to 10 decimals, and non-finite floats
    written as the strings ``"inf"``/``"nan"``.
    """
    plain = jsonable(payload, nonfinite="text", digits=10)
    text = json.dumps(plain, indent=2, allow_nan=False) + "\n"
    return _atomic_write(Path(path), text.encode())


def write_tsv(path: Path, columns: list[str], rows: list[list]) -> Path:
    """Write a tab-separated table (floats with up to 10 significant digits, ``n/a`` for None)."""

    def fmt(v) -> str:
        if v is None:
            return "n/a"
        if isinstance(v, (float, np.floating)):
            return f"{float(v):.10g}"
        return str(v)

    lines = ["\t".join(columns)] + ["\t".join(fmt(v) for v in row) for row in rows]
    return _atomic_write(Path(path), ("\n".join(lines) + "\n").encode())
