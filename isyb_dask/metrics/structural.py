"""Cortical thickness, surface area and LGI read from FreeSurfer/ciftify derivatives.

These metrics need a FreeSurfer reconstruction, which this package does not run. When the
run is given a derivatives folder (``MetricsConfig.surface_derivatives``, command line
``--surface-derivatives DIR``), the subject's fsLR 32k maps are read from it; otherwise the
metrics are missing (NaN) with the reason recorded.

Accepted files, searched recursively under ``DIR/sub-<label>/`` (names compared in lower
case):

* GIFTI, one file per hemisphere, ``*.shape.gii`` or ``*.func.gii`` whose name holds the
  hemisphere as ``hemi-L``/``hemi-R`` (BIDS) or ``.L.``/``.R.`` (HCP/ciftify) and the metric
  key: ``thickness`` (CT; not ``midthickness``, and not a name that also says ``area``),
  ``area`` (SA; e.g. ``midthickness_area``, ``desc-area``), ``lgi`` (LGI; e.g. ``pial_lgi``).
  Each must hold 32,492 values.
* CIFTI-2 dense scalar ``*.dscalar.nii`` whose name holds the key, with
  ``CIFTI_STRUCTURE_CORTEX_LEFT``/``_RIGHT`` brain models on 32,492-vertex surfaces (the
  first map is used). This includes fMRIPrep's morphometric outputs
  ``sub-X[_ses-Y]_space-fsLR_den-91k_{thickness,curv,sulc}.dscalar.nii`` (91k
  grayordinates: the subcortical volume models are ignored; ``thickness`` gives CT,
  ``curv``/``sulc`` are not among the metrics and are not read).

With a session label, files naming that session (``ses-<label>``) are preferred; files of
another session are never used.

These values are FreeSurfer-derived and win over the ones computed from the T1w
(:mod:`isyb_dask.metrics.morphometry`); the stage records which in its provenance.

Medial-wall vertices are set to NaN.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import nibabel as nb
import numpy as np

from isyb_dask.errors import InputError
from isyb_dask.metrics.fslr import N_VERTICES, N_VERTICES_HEMI, FsLR32k, load_fslr32k

__all__ = ["STRUCTURAL_KEYS", "find_structural_files", "read_structural_metrics"]

#: metric -> file-name key
STRUCTURAL_KEYS: dict[str, str] = {"CT": "thickness", "SA": "area", "LGI": "lgi"}
_PATTERNS = {
    "CT": re.compile(r"(?<!mid)thickness"),  # not "midthickness" (a surface name)
    "SA": re.compile(r"area"),
    "LGI": re.compile(r"lgi"),
}
_GIFTI_EXT = (".shape.gii", ".func.gii")


def _hemi_of(name: str) -> str | None:
    for h in ("L", "R"):
        if f"hemi-{h.lower()}" in name or f".{h.lower()}." in name:
            return h
    return None


#: fMRIPrep's fsLR morphometric CIFTI outputs (``{key}`` = thickness, curv, sulc).
FMRIPREP_CIFTI = "{subject}[_ses-{session}]_space-fsLR_den-91k_{key}.dscalar.nii"


def _session_ok(name: str, session: str | None) -> bool:
    m = re.search(r"ses-([a-z0-9]+)", name)
    return m is None or session is None or m.group(1) == session.lower()


def find_structural_files(
    deriv_dir: str | os.PathLike[str], subject: str, session: str | None = None
) -> dict[str, dict]:
    """Locate the CT/SA/LGI files of one subject.

    Parameters
    ----------
    deriv_dir
        Derivatives folder.
    subject
        ``"sub-XX"`` label.
    session
        Optional session label (without ``ses-``): files of other sessions are skipped and
        files naming this one come first.

    Returns
    -------
    dict
        ``{metric: {"L": Path, "R": Path}}`` (GIFTI) or ``{metric: {"cifti": Path}}``;
        metrics without files are absent.
    """
    root = Path(deriv_dir) / subject
    found: dict[str, dict] = {}
    if not root.is_dir():
        return found
    files = sorted(
        (p for p in root.rglob("*") if p.is_file() and _session_ok(p.name.lower(), session)),
        key=lambda p: (session is None or f"ses-{session.lower()}" not in p.name.lower(), p),
    )
    for metric in STRUCTURAL_KEYS:
        for p in files:
            name = p.name.lower()
            if not _PATTERNS[metric].search(name):
                continue
            if metric == "CT" and "area" in name:
                continue
            if name.endswith(_GIFTI_EXT):
                h = _hemi_of(name)
                if h is not None:
                    found.setdefault(metric, {}).setdefault(h, p)
            elif name.endswith(".dscalar.nii"):
                found.setdefault(metric, {}).setdefault("cifti", p)
    return found


def _read_gifti(path: Path) -> np.ndarray:
    try:
        img = nb.load(str(path))
        data = np.asarray(img.darrays[0].data, dtype=np.float32).ravel()
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types for bad files
        raise InputError(f"{path.name}: not a readable GIFTI metric ({exc})") from None
    if data.size != N_VERTICES_HEMI:
        raise InputError(
            f"{path.name}: {data.size} vertices, expected fsLR 32k ({N_VERTICES_HEMI})"
        )
    return data


def _read_cifti(path: Path) -> np.ndarray:
    try:
        img = nb.load(str(path))
        data = np.asarray(img.get_fdata(dtype=np.float32))[0]
        axis = img.header.get_axis(1)
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types for bad files
        raise InputError(f"{path.name}: not a readable CIFTI dscalar ({exc})") from None
    out = np.full(N_VERTICES, np.nan, dtype=np.float32)
    seen = set()
    for name, slc, bm in axis.iter_structures():
        if name not in ("CIFTI_STRUCTURE_CORTEX_LEFT", "CIFTI_STRUCTURE_CORTEX_RIGHT"):
            continue
        if axis.nvertices.get(name) != N_VERTICES_HEMI:
            raise InputError(f"{path.name}: {name} is not a fsLR 32k surface")
        off = 0 if name.endswith("LEFT") else N_VERTICES_HEMI
        out[off + np.asarray(bm.vertex)] = data[slc]
        seen.add(name)
    if len(seen) != 2:
        raise InputError(f"{path.name}: no left and right cortex in the CIFTI file")
    return out


def read_structural_metrics(
    deriv_dir: str | os.PathLike[str] | None,
    subject: str,
    *,
    surf: FsLR32k | None = None,
    session: str | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, str], dict[str, list[Path]]]:
    """Read CT, SA and LGI of a subject on fsLR 32k.

    Parameters
    ----------
    deriv_dir
        Derivatives folder, or ``None`` (all three missing).
    subject
        ``"sub-XX"`` label.
    surf
        Surfaces (for the medial wall); default :func:`load_fslr32k`.
    session
        Optional session label (see :func:`find_structural_files`).

    Returns
    -------
    values
        ``{metric: (64984,) float32}`` for the metrics found.
    missing
        ``{metric: reason}`` for the others.
    sources
        ``{metric: [files read]}``.

    Raises
    ------
    InputError
        If a matching file exists but is unreadable or not on fsLR 32k.
    """
    values: dict[str, np.ndarray] = {}
    missing: dict[str, str] = {}
    sources: dict[str, list[Path]] = {}
    if deriv_dir is None:
        for m in STRUCTURAL_KEYS:
            missing[m] = "no surface derivatives folder given (--surface-derivatives)"
        return values, missing, sources
    surf = surf if surf is not None else load_fslr32k()
    found = find_structural_files(deriv_dir, subject, session)
    for metric, key in STRUCTURAL_KEYS.items():
        files = found.get(metric, {})
        if "L" in files and "R" in files:
            vals = np.concatenate([_read_gifti(files["L"]), _read_gifti(files["R"])])
            sources[metric] = [files["L"], files["R"]]
        elif "cifti" in files:
            vals = _read_cifti(files["cifti"])
            sources[metric] = [files["cifti"]]
        else:
            missing[metric] = f"no '{key}' GIFTI pair or dscalar for {subject} in {deriv_dir}"
            continue
        vals = vals.astype(np.float32)
        vals[~surf.cortex] = np.nan
        values[metric] = vals
    return values, missing, sources
