"""The results store: one zarr v3 store with one group per stage, read with xarray.

Layout (``OUT_DIR/results.zarr``; open a group with ``xr.open_zarr(path, group=NAME)``):

=============== ============================== =============================================
group           dims                           variables
=============== ============================== =============================================
participants    subject                        status (ok/partial/failed/excluded), error,
                                               failed_stages, repairs, exclusion_*, database,
                                               demographics from participants.tsv
deface          subject, template              nmi, face_voxels_changed, ..., error (text)
qc_anat         subject                        one variable per T1w IQM, harmonization_route
qc_func         subject                        one variable per BOLD IQM
surface         subject, metric, vertex        value (float32), missing (reason per metric),
                                               provenance (per metric; "fallback: ..." marks
                                               values the group step leaves out)
group           metric, vertex                 mean, sd, n, mask (written by the group step)
stats           (various)                      ANOVA and post-hoc tables, vertex-wise maps
=============== ============================== =============================================

Writing protocol (many writers, one store):

1. The runner creates every per-subject group once, before any task runs, from a lazy
   template (:func:`init_store`): only metadata and coordinates are written, data variables
   are filled with their fill values (NaN, ``"pending"``).
2. Each subject task writes only its own region along ``subject``, every group in one pass
   (:func:`write_subject_groups`: one open, the row resolved once). Per-subject variables are chunked with ``subject: 1``, so no two
   tasks ever touch the same chunk; zarr's local store writes each chunk file atomically
   (temporary file + rename), so a reader never sees a torn chunk.
3. Metadata is consolidated once, at the end of the run (:func:`consolidate`). Readers during
   a run see either the fill value or a subject's complete values.

Chunk sizes: scalar variables 1 subject (8 bytes per chunk, one file per subject and
variable); ``surface/value`` ``(1, n_metrics, 64984)`` float32 = 3.4 MB per chunk (13 metrics),
which suits both per-subject writes and group reductions that stream subjects, stored
uncompressed (:func:`surface_compressors`, chosen for read speed).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zarr

from isyb_dask.io.store_layout import (
    DEFACE_VARIABLES,
    PARTICIPANT_STATUS_VARIABLES,
    STORE_NAME,
    SUBJECT_GROUPS,
    init_store,
    store_matches,
    surface_compressors,
)
from isyb_dask.io.store_layout import silence as _silence

__all__ = [
    "STORE_NAME",
    "SUBJECT_GROUPS",
    "DEFACE_VARIABLES",
    "PARTICIPANT_STATUS_VARIABLES",
    "init_store",
    "store_matches",
    "write_subject",
    "write_subject_groups",
    "update_subjects",
    "surface_compressors",
    "open_group",
    "write_group",
    "update_participants",
    "consolidate",
    "list_groups",
]


def _subject_index(root: zarr.Group) -> dict[str, int]:
    """``{subject: row}`` from the ``participants`` subject coordinate (read once)."""
    labels = root["participants"]["subject"][...]
    return {str(s): i for i, s in enumerate(np.asarray(labels).ravel())}


def _subject_arrays(group: zarr.Group) -> dict[str, zarr.Array]:
    """The group's data variables over ``subject`` (coordinates left out)."""
    out = {}
    for name, arr in group.arrays():
        dims = tuple(arr.metadata.dimension_names or ())
        if dims and dims[0] == "subject" and name not in dims:
            out[name] = arr
    return out


def _as_stored(arr: zarr.Array, value: Any, n_rows: int) -> np.ndarray:
    """``value`` cast to the array's dtype and shaped ``(n_rows, *arr.shape[1:])``."""
    data = np.asarray(value)
    if arr.dtype.kind in "OUT":
        data = np.asarray(data, dtype=object).astype(str).astype(object)
    else:
        data = data.astype(arr.dtype)
    return data.reshape((n_rows,) + tuple(arr.shape[1:]))


def write_subject_groups(
    store_path: str | os.PathLike[str], subject: str, groups: Mapping[str, Mapping[str, Any]]
) -> None:
    """Write one subject's values into its regions of several groups, in one pass.

    The store is opened once and the subject's row is resolved once (from the
    ``participants`` coordinate, which every per-subject group shares); each variable's
    row is then exactly one chunk (``subject: 1``), written whole, so concurrent tasks of
    other subjects never touch it.

    Parameters
    ----------
    store_path
        ``results.zarr``.
    subject
        Subject label; must be in the store's ``subject`` coordinate.
    groups
        ``{group: {variable: value}}`` with groups from :data:`SUBJECT_GROUPS`. Scalars for
        ``participants``/``qc_*``; arrays over ``template`` for ``deface``; ``value``
        (metric x vertex), ``missing`` and ``provenance`` (metric) for ``surface``.
        Variables not in the group are ignored (the per-subject JSON artefact keeps
        everything).

    Raises
    ------
    KeyError
        ``subject`` is not in the store.
    """
    with _silence():
        root = zarr.open_group(str(store_path), mode="r+")
        index = _subject_index(root)
        if subject not in index:
            raise KeyError(f"{subject} is not in the store's subject coordinate")
        row = index[subject]
        for group, values in groups.items():
            arrays = _subject_arrays(root[group])
            for var, val in values.items():
                if var in arrays:
                    arrays[var][row] = _as_stored(arrays[var], val, 1)[0]


def write_subject(
    store_path: str | os.PathLike[str], group: str, subject: str, values: Mapping[str, Any]
) -> None:
    """Write one subject's values into its own region of one per-subject group.

    See :func:`write_subject_groups` (one group of it).
    """
    write_subject_groups(store_path, subject, {group: values})


def update_subjects(
    store_path: str | os.PathLike[str], group: str,
    subject_values: Mapping[str, Mapping[str, Any]],
) -> None:
    """Set variables of many subjects in one group: one open, one index, one write per variable.

    Parameters
    ----------
    store_path
        ``results.zarr``.
    group
        One of :data:`SUBJECT_GROUPS`.
    subject_values
        ``{subject: {variable: value}}``; subjects may set different variables.

    Raises
    ------
    KeyError
        A subject is not in the store (nothing is written then).
    """
    if not subject_values:
        return
    with _silence():
        root = zarr.open_group(str(store_path), mode="r+")
        index = _subject_index(root)
        unknown = [s for s in subject_values if s not in index]
        if unknown:
            raise KeyError(f"{', '.join(unknown)} not in the store's subject coordinate")
        arrays = _subject_arrays(root[group])
        by_var: dict[str, tuple[list[int], list[Any]]] = {}
        for subject, values in subject_values.items():
            for var, val in values.items():
                if var in arrays:
                    rows, vals = by_var.setdefault(var, ([], []))
                    rows.append(index[subject])
                    vals.append(val)
        for var, (rows, vals) in by_var.items():
            order = np.argsort(rows)
            arr = arrays[var]
            data = _as_stored(arr, [vals[i] for i in order], len(rows))
            arr.oindex[np.asarray(rows)[order]] = data


def open_group(store_path: str | os.PathLike[str], name: str) -> xr.Dataset:
    """Open one group lazily (dask-backed)."""
    with _silence():
        return xr.open_zarr(Path(store_path), group=name, consolidated=None)


def list_groups(store_path: str | os.PathLike[str]) -> list[str]:
    """Names of the groups present in the store."""
    root = zarr.open_group(str(store_path), mode="r")
    return sorted(name for name, _ in root.groups())


def write_group(
    store_path: str | os.PathLike[str], name: str, ds: xr.Dataset, *, encoding: Mapping | None = None
) -> None:
    """Replace a whole group (used by the group step for ``group`` and ``stats``).

    String variables and coordinates are converted to variable-length UTF-8.
    """
    ds = ds.copy()
    for var in list(ds.variables):
        if ds[var].dtype.kind in "UT":
            ds[var] = ds[var].astype(object)
    with _silence():
        ds.to_zarr(
            Path(store_path),
            group=name,
            mode="w",
            zarr_format=3,
            consolidated=False,
            encoding=dict(encoding or {}),
        )


def update_participants(
    store_path: str | os.PathLike[str], subject_values: Mapping[str, Mapping[str, Any]]
) -> None:
    """Set ``participants`` variables of some subjects (exclusion results, database split).

    O(N) in the subjects given: :func:`update_subjects` opens the store once.
    """
    update_subjects(store_path, "participants", subject_values)


def consolidate(store_path: str | os.PathLike[str]) -> None:
    """Consolidate the store's metadata once (end of a run or of the group step)."""
    with _silence():
        zarr.consolidate_metadata(str(store_path))
