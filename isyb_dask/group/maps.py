"""Group mean, SD and count maps of the surface metrics (Figures 3-4), from the store.

:func:`run_group_maps` reads the included subjects (``participants``), leaves out values
computed by a fallback method, reduces ``surface/value`` with
:func:`isyb_dask.group.moments.store_moments` (streaming, bounded memory) and writes the
store's ``group`` group and the figures.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import xarray as xr

from isyb_dask.group.moments import group_moments, moments_from_sums, store_moments
from isyb_dask.io.store import open_group, write_group
from isyb_dask.outcome import ANALYSED, is_fallback

__all__ = ["compute_group_maps", "fallback_mask", "included_subjects", "run_group_maps"]


def _open(store_path: str | os.PathLike[str], name: str) -> xr.Dataset:
    return open_group(store_path, name)


def included_subjects(store_path: str | os.PathLike[str], subjects: np.ndarray) -> np.ndarray:
    """Boolean mask of ``subjects`` whose participants ``status`` is ``"ok"`` or ``"partial"``
    (:data:`isyb_dask.outcome.ANALYSED`; the failed parts of a partial subject are NaN).

    Parameters
    ----------
    store_path
        ``results.zarr``.
    subjects
        Subject labels of the ``surface`` group.

    Returns
    -------
    np.ndarray
        ``(n_subjects,) bool``. Subjects absent from ``participants`` are excluded; when the
        store has no ``participants`` group (or no ``status``), every subject is included.
    """
    try:
        part = _open(store_path, "participants")
    except (FileNotFoundError, KeyError, OSError, ValueError):
        return np.ones(len(subjects), dtype=bool)
    if "status" not in part:
        return np.ones(len(subjects), dtype=bool)
    status = part["status"].load()
    ok = {str(s) for s, v in zip(status["subject"].values, status.values) if str(v) in ANALYSED}
    return np.array([str(s) in ok for s in subjects], dtype=bool)


def fallback_mask(surface: xr.Dataset) -> np.ndarray:
    """``(subject, metric)`` bool: values computed by a fallback method (``provenance``
    starting with ``"fallback:"``, e.g. GMV from the atlas GM prior); all False when the
    store has no ``provenance``."""
    shape = (surface.sizes["subject"], surface.sizes["metric"])
    if "provenance" not in surface:
        return np.zeros(shape, bool)
    prov = np.asarray(surface["provenance"].transpose("subject", "metric").values)
    return np.vectorize(lambda p: is_fallback(str(p)), otypes=[bool])(prov).reshape(shape)


def _present(surface: xr.Dataset) -> np.ndarray:
    """``(subject, metric)`` bool: a value was computed (empty ``missing`` reason)."""
    shape = (surface.sizes["subject"], surface.sizes["metric"])
    if "missing" not in surface:
        return np.ones(shape, bool)
    miss = np.asarray(surface["missing"].transpose("subject", "metric").values)
    return np.vectorize(lambda m: str(m) == "", otypes=[bool])(miss).reshape(shape)


def compute_group_maps(
    surface: xr.Dataset,
    include: np.ndarray,
    *,
    store_path: str | os.PathLike[str] | None = None,
    subjects_per_task: int = 32,
    drop: np.ndarray | None = None,
) -> xr.Dataset:
    """Group mean, SD (ddof 1), count and group masks from a lazy ``surface`` dataset.

    Parameters
    ----------
    surface
        Dataset with ``value`` over ``(subject, metric, vertex)`` (Dask-backed).
    include
        Boolean mask over ``subject``.
    store_path
        When given, the sums are streamed from ``store_path/surface/value`` by
        :func:`store_moments` (fast path); otherwise ``surface["value"]`` (any Dask or
        numpy array) is reduced by :func:`group_moments`.
    subjects_per_task
        Subjects per leaf task.
    drop
        ``(subject, metric)`` bool of values to leave out (e.g. :func:`fallback_mask`).

    Returns
    -------
    xr.Dataset
        ``mean``, ``sd`` (float32, NaN where ``n < 1`` / ``n < 2``), ``n`` (int32) over
        ``(metric, vertex)``; ``metric_mask`` (metric, vertex): every included subject that
        has the metric (empty ``missing`` reason, value not dropped) has a finite value;
        ``mask`` (vertex): ``metric_mask`` for every metric that has data in at least one
        subject (the paper's group surface mask); ``n_dropped`` (metric): values left out by
        ``drop``. Attribute ``n_included``.
    """
    rows = np.flatnonzero(include)
    value = surface["value"].isel(subject=rows)
    n_inc = int(value.sizes["subject"])
    n_metric, n_vertex = value.sizes["metric"], value.sizes["vertex"]
    dropped = (np.zeros((surface.sizes["subject"], n_metric), bool) if drop is None
               else np.asarray(drop, bool))[rows]
    expected = (_present(surface)[rows] & ~dropped).sum(axis=0)
    if n_inc == 0:
        n = dmean = m2 = shift = np.zeros((n_metric, n_vertex))
    elif store_path is not None:
        sums, shift = store_moments(
            store_path, rows, subjects_per_task=subjects_per_task,
            drop={int(r): d for r, d in zip(rows, dropped) if d.any()},
        )
        n, dmean, m2 = moments_from_sums(sums)
    else:
        data = value.data
        if not isinstance(data, da.Array):
            data = da.from_array(np.asarray(data), chunks=(1, -1, -1))
        if dropped.any():
            data = da.where(da.from_array(dropped[:, :, None]), np.nan, data)
        sums, shift = dask.compute(*group_moments(data))
        n, dmean, m2 = moments_from_sums(sums)
    mean = np.asarray(shift, dtype=np.float64) + dmean
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.where(n >= 1, mean, np.nan)
        sd = np.where(n >= 2, np.sqrt(m2 / (n - 1)), np.nan)
    metric_mask = (n == expected[:, None]) & (expected[:, None] > 0)
    has_data = n.max(axis=1) > 0
    mask = metric_mask[has_data].all(axis=0) if has_data.any() else np.zeros(n_vertex, bool)
    coords = {"metric": value["metric"].values, "vertex": value["vertex"].values}
    dims = ("metric", "vertex")
    ds = xr.Dataset(
        {
            "mean": (dims, mean.astype(np.float32)),
            "sd": (dims, sd.astype(np.float32)),
            "n": (dims, n.astype(np.int32)),
            "metric_mask": (dims, metric_mask),
            "mask": (("vertex",), mask),
            "n_dropped": (("metric",), dropped.sum(axis=0).astype(np.int32)),
        },
        coords=coords,
        attrs={
            "n_included": n_inc,
            "sd_ddof": 1,
            "method": "one-pass Dask tree reduction of shifted sums (n, S1, S2)",
        },
    )
    return ds


def _write(store_path: str | os.PathLike[str], ds: xr.Dataset) -> None:
    write_group(store_path, "group", ds)


def run_group_maps(
    store_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    figures: bool = True,
    exclude_fallback: bool = True,
) -> dict:
    """Compute the group maps from the store, write group ``group`` and Figures 3-4.

    Parameters
    ----------
    store_path
        ``results.zarr`` with group ``surface`` (and ``participants`` with ``status``).
    out_dir
        Output directory; figures go to ``out_dir/figures/group_{mean,sd}_maps.png``.
    figures
        Also draw the PNG figures.
    exclude_fallback
        Leave out values computed by a fallback method (default True; ``provenance``
        starting with ``"fallback:"``, e.g. GMV from the atlas GM prior): they describe
        the atlas, not the subject. Their number per metric is ``group/n_dropped``.

    Returns
    -------
    dict
        ``{"n_included": int, "n_mask_vertices": int, "figures": {name: Path}}``.
    """
    surface = _open(store_path, "surface")
    include = included_subjects(store_path, surface["subject"].values)
    drop = fallback_mask(surface) if exclude_fallback else None
    ds = compute_group_maps(surface, include, store_path=store_path, drop=drop)
    ds.attrs["exclude_fallback"] = int(bool(exclude_fallback))
    _write(store_path, ds)
    paths: dict[str, Path] = {}
    if figures:
        from isyb_dask.metrics.figures import plot_group_maps

        missing = (surface["missing"].isel(subject=np.flatnonzero(include)).load()
                   if "missing" in surface else None)
        paths = plot_group_maps(ds, Path(out_dir) / "figures", missing=missing)
    return {
        "n_included": int(ds.attrs["n_included"]),
        "n_mask_vertices": int(ds["mask"].sum()),
        "n_dropped": {str(m): int(v) for m, v in zip(ds["metric"].values, ds["n_dropped"].values)},
        "figures": paths,
    }
