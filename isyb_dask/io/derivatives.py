"""BIDS-derivative naming, sidecars with provenance and the dataset description."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from isyb_dask import __version__
from isyb_dask.io.jsonable import jsonable
from isyb_dask.io.nifti import file_sha256

__all__ = [
    "PIPELINE_NAME",
    "derivative_path",
    "write_sidecar",
    "write_json",
    "provenance",
    "write_dataset_description",
    "subject_label",
]

PIPELINE_NAME = "isyb-dask"
CODE_URL = "https://github.com/isyb-dask/isyb-dask"

# BIDS entity order (BIDS specification, appendix "Entity table").
_ENTITY_ORDER = ("session", "task", "acq", "run", "hemi", "space", "den", "label", "desc")
_ENTITY_KEYS = {
    "session": "ses",
    "task": "task",
    "acq": "acq",
    "run": "run",
    "hemi": "hemi",
    "space": "space",
    "den": "den",
    "label": "label",
    "desc": "desc",
}


def subject_label(subject: str) -> str:
    """``"sub-01"`` or ``"01"`` -> ``"sub-01"``."""
    return subject if subject.startswith("sub-") else f"sub-{subject}"


def derivative_path(
    out_dir: str | os.PathLike[str],
    subject: str,
    datatype: str,
    suffix: str,
    *,
    session: str | None = None,
    task: str | None = None,
    acq: str | None = None,
    run: str | int | None = None,
    hemi: str | None = None,
    space: str | None = None,
    den: str | None = None,
    label: str | None = None,
    desc: str | None = None,
    extension: str = ".nii.gz",
    mkdir: bool = True,
) -> Path:
    """Path of a derivative file named with BIDS entities in the standard order.

    An empty ``suffix`` gives names such as ``..._desc-ALFF.shape.gii`` (GIFTI metrics).

    Examples
    --------
    >>> derivative_path("/out", "sub-01", "anat", "T1w", desc="defacedMNI152", mkdir=False)
    PosixPath('/out/sub-01/anat/sub-01_desc-defacedMNI152_T1w.nii.gz')
    >>> derivative_path("/out", "01", "anat", "", hemi="L", space="fsLR", den="32k",
    ...                 desc="ALFF", extension=".shape.gii", mkdir=False).name
    'sub-01_hemi-L_space-fsLR_den-32k_desc-ALFF.shape.gii'
    """
    sub = subject_label(subject)
    values = {
        "session": session,
        "task": task,
        "acq": acq,
        "run": run,
        "hemi": hemi,
        "space": space,
        "den": den,
        "label": label,
        "desc": desc,
    }
    parts = [sub]
    for key in _ENTITY_ORDER:
        val = values[key]
        if val is None or val == "":
            continue
        val = str(val)
        if key == "session" and val.startswith("ses-"):
            val = val[4:]
        parts.append(f"{_ENTITY_KEYS[key]}-{val}")
    folder = Path(out_dir) / sub
    if session:
        ses = session if str(session).startswith("ses-") else f"ses-{session}"
        folder = folder / ses
    folder = folder / datatype
    if mkdir:
        folder.mkdir(parents=True, exist_ok=True)
    name = "_".join(parts) + (f"_{suffix}" if suffix else "") + extension
    return folder / name


def provenance(
    sources: Iterable[str | os.PathLike[str]] = (), settings: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Provenance record: software, version, input files with SHA-256, settings.

    A source whose non-finite voxels were repaired on loading
    (:func:`isyb_dask.io.image_checks.recorded_repair`) carries the record as ``repair``.
    """
    from isyb_dask.io.image_checks import recorded_repair

    entries = []
    for p in sources:
        if not Path(p).exists():
            continue
        entry: dict[str, Any] = {"path": str(p), "sha256": file_sha256(p)}
        repair = recorded_repair(p)
        if repair is not None:
            entry["repair"] = repair
        entries.append(entry)
    return {
        "software": PIPELINE_NAME,
        "version": __version__,
        "python": platform.python_version(),
        "sources": entries,
        "settings": dict(settings or {}),
    }


def _sidecar_path(path: Path) -> Path:
    name = path.name
    exts = (".nii.gz", ".nii", ".shape.gii", ".func.gii", ".surf.gii", ".gii", ".tsv", ".json")
    for ext in exts:
        if name.endswith(ext):
            return path.with_name(name[: -len(ext)] + ".json")
    return path.with_suffix(".json")


def write_json(path: str | os.PathLike[str], payload: Mapping[str, Any]) -> Path:
    """Write JSON atomically (temporary file then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    tmp.write_text(json.dumps(jsonable(payload, nonfinite="keep"), indent=2, sort_keys=False))
    os.replace(tmp, path)
    return path


def write_sidecar(
    path: str | os.PathLike[str],
    metadata: Mapping[str, Any] | None = None,
    *,
    sources: Iterable[str | os.PathLike[str]] = (),
    settings: Mapping[str, Any] | None = None,
) -> Path:
    """Write the JSON sidecar of a derivative file, with a ``provenance`` entry.

    Parameters
    ----------
    path
        The derivative data file (``.nii.gz``, ``.gii``, ``.tsv``); the sidecar replaces
        its extension with ``.json``.
    metadata
        BIDS metadata of the file (``Sources``, ``Description``, units, ...).
    sources
        Input files whose SHA-256 goes into the provenance.
    settings
        Settings that produced the file.
    """
    payload = dict(metadata or {})
    payload["provenance"] = provenance(sources, settings)
    return write_json(_sidecar_path(Path(path)), payload)


def write_dataset_description(
    out_dir: str | os.PathLike[str], source: Mapping[str, Any] | None = None
) -> Path:
    """Write ``dataset_description.json`` of the derivatives folder (BIDS ``GeneratedBy``)."""
    source = dict(source or {})
    desc: dict[str, Any] = {
        "Name": f"{PIPELINE_NAME} derivatives of {source.get('Name', 'a BIDS dataset')}",
        "BIDSVersion": "1.10.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": PIPELINE_NAME, "Version": __version__, "CodeURL": CODE_URL}],
        "HowToAcknowledge": "Cite Gao et al. (2022) Sci Data 9:286 and isyb-dask.",
    }
    if "License" in source:
        desc["License"] = source["License"]
    if "DatasetDOI" in source:
        desc["SourceDatasets"] = [{"DOI": source["DatasetDOI"]}]
    return write_json(Path(out_dir) / "dataset_description.json", desc)
