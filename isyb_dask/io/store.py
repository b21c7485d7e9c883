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
which suits both per-subject writes and group reductions that stream subjects, compressed
with blosc-lz4 + shuffle (:func:`surface_codec`, chosen for read speed).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
import zarr

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
    "open_group",
    "write_group",
    "update_participants",
    "consolidate",
    "list_groups",
]

STORE_NAME = "results.zarr"
SUBJECT_GROUPS = ("participants", "deface", "qc_anat", "qc_func", "surface")
DEFACE_VARIABLES = (
    "nmi",
    "face_voxels_changed",
    "brain_voxels_changed",
    "registration_metric",
    "seconds",
    "transform_plausible",
    "face_detected",
    "face_score",
    "reid_distance",
    "reid_rank",
    "surface_depth_change_mm",
    "face_coverage",
    "face_relief_mm",
)
PARTICIPANT_STATUS_VARIABLES = (
    "status",
    "error",
    "failed_stages",
    "repairs",
    "exclusion_reason",
    "exclusion_rule",
    "exclusion_metric",
    "database",
)

_ATTRS = {
    "nmi": ("normalized mutual information of original and removed face", "1"),
    "face_voxels_changed": ("voxels changed by face masking", "voxels"),
    "brain_voxels_changed": ("voxels inside the dilated brain mask changed (must be 0)", "voxels"),
    "registration_metric": ("final Mattes mutual information of template-to-subject registration", "1"),
    "seconds": ("wall time of registration, masking and NMI", "s"),
    "transform_plausible": ("1 if the affine passed the scale/shear plausibility check", "1"),
    "face_detected": ("1 if dlib's HOG detector finds a face on a render of the defaced head", "1"),
    "face_score": ("best HOG face-detector score over the render views (> 0: face)", "1"),
    "reid_distance": ("face-descriptor distance, defaced vs original render (mean of views)", "1"),
    "reid_rank": ("rank of the true subject among all original renders (group step)", "1"),
    "surface_depth_change_mm": ("median move of the facial skin along the face normal", "mm"),
    "face_coverage": ("fraction of the true face region obscured (generated data only)", "1"),
    "face_relief_mm": ("RMS of the original facial relief left (generated data only)", "mm"),
}


def _obj(values: Sequence[str]) -> np.ndarray:
    """String array as object dtype (zarr v3 variable-length UTF-8, no unstable dtype)."""
    return np.array([str(v) for v in values], dtype=object)


@contextlib.contextmanager
def _silence():
    """Hide zarr's notes that consolidated metadata is an extension of the v3 format."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification.*")
        yield


def surface_codec():
    """Chunk compressor of ``surface/value``: blosc-lz4 with byte shuffle.

    Chosen for read speed (``benchmarks/results_surface_codec.md``, 400 subjects x 12 x
    64,984 float32 with NaN medial wall): it decompresses in half the CPU time of zarr's
    default zstd (0.84 vs 1.65 s for the whole store) and is 8 % smaller (0.89 vs 0.97 GB).
    """
    from zarr.codecs import BloscCodec, BloscShuffle

    return BloscCodec(cname="lz4", clevel=5, shuffle=BloscShuffle.shuffle, typesize=4)


def _scalar_block(subjects: np.ndarray, variables: Sequence[str], extra_dims=None) -> xr.Dataset:
    import dask.array as da

    n = len(subjects)
    data_vars = {}
    for var in variables:
        if extra_dims is None:
            arr = da.full((n,), np.nan, dtype=np.float64, chunks=(1,))
            dims: tuple[str, ...] = ("subject",)
        else:
            dim, size = extra_dims
            arr = da.full((n, size), np.nan, dtype=np.float64, chunks=(1, size))
            dims = ("subject", dim)
        long_name, units = _ATTRS.get(var, (var, ""))
        data_vars[var] = xr.Variable(dims, arr, attrs={"long_name": long_name, "units": units})
    return xr.Dataset(data_vars, coords={"subject": _obj(subjects)})


def init_store(
    store_path: str | os.PathLike[str],
    subjects: Sequence[str],
    *,
    templates: Sequence[str],
    anat_iqms: Sequence[str],
    func_iqms: Sequence[str],
    surface_metrics: Sequence[str],
    hemi: Sequence[str],
    participants: pd.DataFrame | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> Path:
    """Create the per-subject groups of a new store (metadata and fill values only).

    Parameters
    ----------
    store_path
        Path of ``results.zarr`` (must not exist yet).
    subjects
        Subject labels (``sub-0001``...), the ``subject`` coordinate of every group.
    templates, anat_iqms, func_iqms, surface_metrics
        Coordinates / variable names of the ``deface``, ``qc_anat``, ``qc_func`` and
        ``surface`` groups.
    hemi
        ``"L"``/``"R"`` label of every surface vertex (its length is the vertex count).
    participants
        Demographics indexed by subject; numeric columns are stored as float, others as text.
    attrs
        Store-level attributes (software version, config, BIDS dataset), kept on every group.
    """
    import dask.array as da

    path = Path(store_path)
    subj = np.asarray(list(subjects))
    n = len(subj)
    common = {k: (v if isinstance(v, (str, int, float)) else str(v)) for k, v in (attrs or {}).items()}
    with _silence():
        zarr.open_group(str(path), mode="w", zarr_format=3, attributes=common)
        # participants
        pvars: dict[str, xr.Variable] = {}
        given = participants.reindex(subj) if participants is not None else None
        for var in PARTICIPANT_STATUS_VARIABLES:
            fill = "pending" if var == "status" else ""
            if var == "database" and given is not None and "database" in given.columns:
                # a split given in participants.tsv is kept (the statistics read it)
                values = given["database"].fillna("").astype(str)
            else:
                values = [fill] * n
            pvars[var] = xr.Variable(("subject",), _obj(values))
        if participants is not None and len(participants.columns):
            frame = participants.reindex(subj)
            for col in frame.columns:
                if col in pvars:
                    continue
                numeric = pd.to_numeric(frame[col], errors="coerce")
                if numeric.notna().sum() == frame[col].replace("", np.nan).notna().sum() and numeric.notna().any():
                    pvars[col] = xr.Variable(("subject",), numeric.to_numpy(dtype=float))
                else:
                    pvars[col] = xr.Variable(("subject",), _obj(frame[col].fillna("").astype(str)))
        part = xr.Dataset(pvars, coords={"subject": _obj(subj)}, attrs=common)
        enc = {v: {"chunks": (1,)} for v in part.data_vars}
        part.to_zarr(path, group="participants", mode="w", zarr_format=3, consolidated=False, encoding=enc)

        deface = _scalar_block(subj, DEFACE_VARIABLES, ("template", len(templates)))
        deface = deface.assign_coords(template=_obj(templates))
        deface["error"] = xr.Variable(
            ("subject", "template"), np.full((n, len(templates)), "", dtype=object),
            attrs={"long_name": "why the template failed for the subject (empty: it did not)"})
        deface.attrs.update(common)
        deface.to_zarr(path, group="deface", mode="w", zarr_format=3, consolidated=False, compute=False,
                       encoding={"error": {"chunks": (1, max(len(templates), 1))}})

        for group, names in (("qc_anat", anat_iqms), ("qc_func", func_iqms)):
            ds = _scalar_block(subj, names)
            ds.attrs.update(common)
            enc = {}
            if group == "qc_anat":
                ds["harmonization_route"] = xr.Variable(
                    ("subject",), np.full(n, "", dtype=object),
                    attrs={"long_name": "reference region of the intensity harmonization"})
                enc = {"harmonization_route": {"chunks": (1,)}}
            ds.to_zarr(path, group=group, mode="w", zarr_format=3, consolidated=False, compute=False,
                       encoding=enc)

        n_metrics, n_vertex = len(surface_metrics), len(hemi)
        value = da.full((n, n_metrics, n_vertex), np.nan, dtype=np.float32, chunks=(1, n_metrics, n_vertex))
        surf = xr.Dataset(
            {
                "value": xr.Variable(
                    ("subject", "metric", "vertex"),
                    value,
                    attrs={"long_name": "per-subject vertex-wise metric on fsLR 32k"},
                ),
                "missing": xr.Variable(
                    ("subject", "metric"), np.full((n, n_metrics), "", dtype=object)
                ),
                "provenance": xr.Variable(
                    ("subject", "metric"), np.full((n, n_metrics), "", dtype=object)
                ),
            },
            coords={
                "subject": _obj(subj),
                "metric": _obj(surface_metrics),
                "vertex": np.arange(n_vertex, dtype=np.int32),
                "hemi": ("vertex", _obj(hemi)),
            },
            attrs=common,
        )
        surf.to_zarr(
            path,
            group="surface",
            mode="w",
            zarr_format=3,
            consolidated=False,
            compute=False,
            encoding={"value": {"fill_value": np.nan, "compressors": (surface_codec(),)},
                      "missing": {"chunks": (1, n_metrics)},
                      "provenance": {"chunks": (1, n_metrics)}},
        )
    return path


def store_matches(
    store_path: str | os.PathLike[str], subjects: Sequence[str], templates: Sequence[str]
) -> bool:
    """True if an existing store has exactly these subjects and templates (resumable)."""
    path = Path(store_path)
    if not path.exists():
        return False
    try:
        with _silence():
            part = xr.open_zarr(path, group="participants", consolidated=False)
            deface = xr.open_zarr(path, group="deface", consolidated=False)
            for g in SUBJECT_GROUPS:
                xr.open_zarr(path, group=g, consolidated=False)
    except Exception:
        return False
    return list(part["subject"].values) == list(subjects) and list(deface["template"].values) == list(templates)


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
