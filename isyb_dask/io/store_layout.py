"""Layout of the results store: group and variable names, and the store's creation.

:func:`init_store` creates every per-subject group once, before any task runs (metadata,
coordinates and fill values only); :func:`store_matches` says whether an existing store can
be resumed. Writing and reading are in :mod:`isyb_dask.io.store`, which re-exports these.
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
    "DEFACE_VARIABLES",
    "PARTICIPANT_STATUS_VARIABLES",
    "STORE_NAME",
    "SUBJECT_GROUPS",
    "init_store",
    "silence",
    "store_matches",
    "surface_compressors",
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
    "face_score_deep",
    "original_face_score",
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
    "face_detected": ("1 if dlib's HOG detector finds a face on a render of the defaced head "
                      "(skin level or the Otsu level)", "1"),
    "face_score_deep": ("best HOG score on renders at the Otsu threshold, twice the skin level "
                        "(> 0: face)", "1"),
    "face_score": ("best HOG face-detector score over the render views (> 0: face)", "1"),
    "original_face_score": ("the same score on the original's renders (<= 0: the audit cannot judge)", "1"),
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
def silence():
    """Hide zarr's notes that consolidated metadata is an extension of the v3 format."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification.*")
        yield


def surface_compressors() -> tuple:
    """Chunk compressors of ``surface/value``: none (zarr's ``bytes`` codec only).

    Chosen for read speed (``benchmarks/results_store.md``, 400 subjects x 12 x 64,984
    float32 with a NaN medial wall, 2026-12-07, idle machine, 3 repeats): reading the whole
    variable costs 0.42-0.53 CPU s uncompressed against 0.86-1.01 s with blosc-lz4 + byte
    shuffle and 1.20-1.59 s with zarr's default zstd, and the group step is 11.2-12.9x a
    nibabel loop over GIFTI files (lz4 9.2x, zstd 6.7-7.8x). Metric values use the whole
    float32 mantissa, so the best codec saves only 28 % of the bytes (0.89 against 1.25 GB
    at 400 subjects; 0.19 GB for the 215 subjects of ISYB), which is not worth the CPU of
    every interactive read.

    Returns
    -------
    tuple
        Zarr v3 compressor codecs for the ``compressors=`` argument (empty: uncompressed).
    """
    return ()


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
    with silence():
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
            encoding={"value": {"fill_value": np.nan, "compressors": surface_compressors()},
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
        with silence():
            part = xr.open_zarr(path, group="participants", consolidated=False)
            deface = xr.open_zarr(path, group="deface", consolidated=False)
            for g in SUBJECT_GROUPS:
                xr.open_zarr(path, group=g, consolidated=False)
    except Exception:
        return False
    return list(part["subject"].values) == list(subjects) and list(deface["template"].values) == list(templates)
