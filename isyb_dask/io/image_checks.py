"""The checks :func:`isyb_dask.io.nifti.load_image` applies to every image it reads.

Each check raises :class:`~isyb_dask.errors.InputError` with a message that starts with the
file (relative to the BIDS root when the path has a ``sub-*`` folder) and then names the
fault. The decisions (documented in docs/qc.md, "Bad input"):

* **data type** — complex and RGB (structured) data are refused: every metric is defined on
  real magnitudes.
* **voxel sizes** — the *raw* ``pixdim[1..3]`` of the header (nibabel silently turns zero
  into one on load) must be finite and > 0, and the voxel sizes of the affine in use at
  most :data:`MAX_VOXEL_MM`.
* **orientation** — at least one of qform/sform must be set (code > 0); each one that is
  set must be finite and non-singular; when both are set they must agree to within one
  voxel (largest distance of the eight field-of-view corners, compared with the largest
  voxel size). A larger disagreement **fails**: tools disagree on which one to use (nibabel
  takes the sform, ITK/ANTs the qform), so no choice would be safe.
* **non-finite voxels** — NaN/±Inf in at most :data:`REPAIR_MAX_FRACTION` of the voxels
  (0.1 %) are repaired *in memory* (the mean of the finite 26-neighbours, 0 if none) and the
  repair is recorded (:func:`recorded_repair`: the sidecars of every derivative made from
  the file and the ``repairs`` variable of the store's ``participants`` group); more fail
  with the fraction in the message. The input file is never modified.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import nibabel as nb
import numpy as np
from nibabel.affines import voxel_sizes

from isyb_dask.errors import InputError

__all__ = [
    "MAX_VOXEL_MM",
    "REPAIR_MAX_FRACTION",
    "check_data_type",
    "check_geometry",
    "display_name",
    "raw_header",
    "recorded_repair",
    "repair_nonfinite",
]

#: Largest fraction of non-finite voxels that is repaired instead of refused (0.1 %).
REPAIR_MAX_FRACTION = 1e-3
#: Largest plausible voxel edge (mm).
MAX_VOXEL_MM = 20.0

_REPAIRS: dict[tuple[str, int, int], dict[str, Any]] = {}
_LOCK = threading.Lock()


def display_name(path: str | os.PathLike[str]) -> str:
    """The file as users know it: relative to the BIDS root if a ``sub-*`` folder is in it.

    ``/data/bids/sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz`` -> ``sub-01/ses-1/anat/...``;
    other paths give ``parent/name``.
    """
    path = Path(path)
    parts = path.parts
    for i, part in enumerate(parts[:-1]):
        if part.startswith("sub-"):
            return "/".join(parts[i:])
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


def raw_header(path: Path, img: nb.spatialimages.SpatialImage) -> nb.Nifti1Header:
    """The header as stored in the file, without nibabel's silent fixes (zero pixdim -> 1)."""
    from nibabel.openers import ImageOpener

    with ImageOpener(str(path), "rb") as fobj:
        return type(img.header).from_fileobj(fobj, check=False)


def check_data_type(name: str, img: nb.spatialimages.SpatialImage) -> None:
    """Refuse complex and RGB/RGBA (structured) voxel types."""
    dtype = img.get_data_dtype()
    if dtype.kind == "c":
        raise InputError(f"{name}: complex-valued data ({dtype}); a magnitude image is needed")
    if dtype.names is not None or dtype.kind == "V":
        kind = "RGBA" if dtype.names and "A" in dtype.names else "RGB"
        raise InputError(f"{name}: {kind} colour data ({dtype}); a single-channel image is needed")


def _corners(shape: tuple[int, ...]) -> np.ndarray:
    n = np.asarray(shape[:3], dtype=float) - 1
    return np.array([[x, y, z, 1.0] for x in (0, n[0]) for y in (0, n[1]) for z in (0, n[2])]).T


def _usable(aff: np.ndarray) -> bool:
    return bool(np.all(np.isfinite(aff)) and abs(np.linalg.det(aff[:3, :3])) > 1e-6)


def check_geometry(name: str, path: Path, img: nb.spatialimages.SpatialImage) -> None:
    """Voxel sizes, presence and consistency of qform/sform (see the module docstring)."""
    hdr = raw_header(path, img)
    ndim = max(3, min(int(hdr["dim"][0]), 7))
    pixdim = np.asarray(hdr["pixdim"][1:4], dtype=float)[: min(ndim, 3)]
    if not np.all(np.isfinite(pixdim)):
        raise InputError(f"{name}: invalid voxel size pixdim = {tuple(pixdim.tolist())} "
                         "(NaN or infinite)")
    if np.any(pixdim <= 0):
        raise InputError(f"{name}: invalid voxel size pixdim = {tuple(pixdim.tolist())} "
                         "(zero or negative)")
    qcode, scode = int(hdr["qform_code"]), int(hdr["sform_code"])
    if qcode <= 0 and scode <= 0:
        raise InputError(f"{name}: missing qform and sform (qform_code = sform_code = 0): "
                         "orientation and voxel-to-world mapping unknown")
    forms = {}
    if scode > 0:
        forms["sform"] = np.asarray(hdr.get_sform(), dtype=float)
    if qcode > 0:
        try:
            forms["qform"] = np.asarray(hdr.get_qform(), dtype=float)
        except Exception as exc:  # nibabel raises several types for a broken quaternion
            raise InputError(f"{name}: implausible geometry: unreadable qform ({exc})") from None
    for label, aff in forms.items():
        if not _usable(aff):
            raise InputError(f"{name}: implausible geometry (the {label} is singular or "
                             "non-finite)")
    if len(forms) == 2:
        corners = _corners(img.shape)
        dist = float(np.sqrt(((forms["qform"] @ corners - forms["sform"] @ corners)[:3] ** 2)
                             .sum(axis=0)).max())
        vox = float(voxel_sizes(forms["sform"]).max())
        if dist > vox:
            raise InputError(
                f"{name}: sform and qform disagree by {dist:.1f} mm (more than one voxel, "
                f"{vox:.2g} mm) at the corners of the field of view; fix the header "
                "(tools disagree on which one to use)"
            )
    affine = img.affine
    if not _usable(affine):
        raise InputError(f"{name}: implausible geometry (singular or non-finite affine)")
    zooms = voxel_sizes(affine)
    if np.any(zooms > MAX_VOXEL_MM):
        raise InputError(f"{name}: implausible voxel size {tuple(np.round(zooms, 3))} mm")


def _key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return (str(path.resolve()), int(st.st_size), int(st.st_mtime_ns))


def repair_nonfinite(name: str, path: Path, data: np.ndarray) -> np.ndarray:
    """Return ``data`` with a few non-finite voxels repaired, or raise if there are many.

    Parameters
    ----------
    name
        File name for messages.
    path
        The file (key of the repair record).
    data
        Real array (3-D, or 4-D repaired volume by volume).

    Returns
    -------
    numpy.ndarray
        ``data`` itself when every voxel is finite, else a float32 copy.

    Raises
    ------
    InputError
        When no voxel is finite, or when more than :data:`REPAIR_MAX_FRACTION` are not.
    """
    bad = ~np.isfinite(data)
    n_bad = int(bad.sum())
    if n_bad == 0:
        return data
    if n_bad == data.size:
        raise InputError(f"{name}: no finite values in the image")
    frac = n_bad / data.size
    n_nan = int(np.isnan(data).sum())
    what = f"{n_bad} non-finite voxels ({frac:.3%}: {n_nan} NaN, {n_bad - n_nan} ±Inf)"
    if frac > REPAIR_MAX_FRACTION:
        raise InputError(f"{name}: {what}; at most {REPAIR_MAX_FRACTION:.1%} can be repaired")
    from scipy import ndimage as ndi

    out = np.array(data, dtype=np.float32)
    vols = out[..., None] if out.ndim == 3 else out.reshape(out.shape[:3] + (-1,))
    bads = bad[..., None] if bad.ndim == 3 else bad.reshape(bad.shape[:3] + (-1,))
    for t in range(vols.shape[-1]):
        if not bads[..., t].any():
            continue
        vol, b = vols[..., t], bads[..., t]
        finite = (~b).astype(np.float32)
        total = ndi.uniform_filter(np.where(b, 0.0, vol), size=3, mode="constant") * 27
        count = ndi.uniform_filter(finite, size=3, mode="constant") * 27
        fill = np.divide(total, count, out=np.zeros_like(total), where=count > 0.5)
        vol[b] = fill[b]
    record = {
        "file": name,
        "voxels": n_bad,
        "fraction": frac,
        "nan": n_nan,
        "inf": n_bad - n_nan,
        "method": "replaced by the mean of the finite 26-neighbours (0 if none), in memory",
        "max_fraction": REPAIR_MAX_FRACTION,
        "description": f"{name}: {what} repaired (mean of finite neighbours)",
    }
    with _LOCK:
        _REPAIRS[_key(path)] = record
    return out


def recorded_repair(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The repair applied when this process loaded ``path`` (None if none or unknown)."""
    try:
        key = _key(Path(path))
    except OSError:
        return None
    with _LOCK:
        rec = _REPAIRS.get(key)
    return dict(rec) if rec else None
