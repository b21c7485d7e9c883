"""Interactive querying of ``results.zarr`` (``isyb query OUT_DIR ...``)."""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import dask
import numpy as np
import pandas as pd
import xarray as xr

from isyb_dask.errors import ConfigError, InputError
from isyb_dask.io.store import STORE_NAME, list_groups, open_group

FORMATS = ("table", "csv", "json")
MAX_COLWIDTH = 80  # characters per cell in the table format (long error messages)


def _store(out_dir: str | Path) -> Path:
    path = Path(out_dir)
    store = path if path.suffix == ".zarr" else path / STORE_NAME
    if not (store / "zarr.json").is_file():
        raise InputError(f"{store}: no results store (zarr.json missing); run the pipeline first")
    return store


def _strings(values) -> list[str]:
    return [str(v) for v in np.asarray(values).ravel()]


def _select(ds: xr.Dataset, dim: str, wanted: Sequence[str], what: str) -> xr.Dataset:
    if not wanted:
        return ds
    have = _strings(ds[dim].values)
    unknown = [w for w in wanted if w not in have]
    if unknown:
        raise ConfigError(f"unknown {what} {unknown}; available: {have[:20]}"
                          + (" ..." if len(have) > 20 else ""))
    return ds.isel({dim: [have.index(w) for w in wanted]})


def _overview(store: Path) -> list[tuple[str, pd.DataFrame]]:
    rows = []
    for name in list_groups(store):
        ds = open_group(store, name)
        rows.append({"group": name,
                     "dims": ", ".join(f"{d}={n}" for d, n in ds.sizes.items()),
                     "variables": ", ".join(map(str, ds.data_vars))})
    return [("groups", pd.DataFrame(rows, columns=["group", "dims", "variables"]))]


def _frames(ds: xr.Dataset) -> list[tuple[str, pd.DataFrame]]:
    """One table per set of dims; vertex dims are summarised."""
    blocks: dict[tuple[str, ...], list[str]] = {}
    for var in ds.data_vars:
        blocks.setdefault(tuple(ds[var].dims), []).append(str(var))
    out = []
    for dims, names in blocks.items():
        sub = ds[names]
        if "vertex" in dims:
            rest = [d for d in dims if d != "vertex"]
            stats = {}
            for n in names:
                arr = sub[n]
                if arr.dtype.kind not in "fiub":
                    continue
                stats.update({f"{n}_mean": arr.mean("vertex"), f"{n}_sd": arr.std("vertex"),
                              f"{n}_min": arr.min("vertex"), f"{n}_max": arr.max("vertex"),
                              f"{n}_n_finite": np.isfinite(arr).sum("vertex")})
            if not stats:
                continue
            with warnings.catch_warnings(), dask.config.set(scheduler="synchronous"):
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN medial wall
                sub = xr.Dataset(stats).compute()
            dims = tuple(rest) + ("summary over vertex",)
            if not rest:
                frame = pd.DataFrame({k: [float(v)] for k, v in sub.items()})
                out.append((" x ".join(dims), frame))
                continue
        sub = sub.compute()
        for var in sub.variables:
            if sub[var].dtype.kind in "OTU":
                sub[var] = sub[var].copy(data=np.array(_strings(sub[var].values),
                                                       dtype=object).reshape(sub[var].shape))
        frame = sub.drop_vars([c for c in sub.coords if c not in sub.dims]).to_dataframe() \
            if sub.dims else pd.DataFrame({k: [sub[k].item()] for k in sub.data_vars})
        out.append((" x ".join(dims) if dims else "scalars", frame))
    return out


def _render(blocks: list[tuple[str, pd.DataFrame]], fmt: str) -> str:
    if fmt == "json":
        payload = {title: json.loads(f.reset_index().to_json(orient="records"))
                   if not isinstance(f.index, pd.RangeIndex) else
                   json.loads(f.to_json(orient="records")) for title, f in blocks}
        return json.dumps(payload, indent=1)
    parts = []
    for title, frame in blocks:
        keep_index = not isinstance(frame.index, pd.RangeIndex)
        if fmt == "csv":
            body = frame.to_csv(index=keep_index).rstrip("\n")
            parts.append(body if len(blocks) == 1 else f"# {title}\n{body}")
        else:
            with pd.option_context("display.max_rows", 500, "display.width", 200):
                parts.append(f"== {title} ==\n"
                             + frame.to_string(index=keep_index, max_colwidth=MAX_COLWIDTH))
    return "\n\n".join(parts)


def _text_var(ds: xr.Dataset, name: str) -> list[str] | None:
    return _strings(ds[name].values) if name in ds else None


def failures_table(store: Path) -> pd.DataFrame:
    """One row per subject that is not plainly ``ok``, with every reason on record.

    Columns: ``status``, ``failed_stages``, ``error``, ``exclusion_reason``, ``repairs``,
    ``fallbacks`` (surface metrics from a fallback method, left out of the group maps by
    default) and ``statistics`` (dropped from the ANOVA for a missing NMI). A subject appears
    if its status is not ``ok`` or if any of these columns is non-empty.
    """
    from isyb_dask.outcome import is_fallback

    part = open_group(store, "participants").load()
    subs = _strings(part["subject"].values)
    cols = {c: (_text_var(part, c) or [""] * len(subs))
            for c in ("status", "failed_stages", "error", "exclusion_reason", "repairs")}
    frame = pd.DataFrame(cols, index=pd.Index(subs, name="subject"))
    frame["fallbacks"] = ""
    frame["statistics"] = ""
    groups = list_groups(store)
    if "surface" in groups:
        surf = open_group(store, "surface")
        if "provenance" in surf:
            prov = surf["provenance"].load()
            metrics = _strings(prov["metric"].values)
            for s, row in zip(_strings(prov["subject"].values), prov.values):
                used = [f"{m} ({p})" for m, p in zip(metrics, map(str, row)) if is_fallback(p)]
                if used and s in frame.index:
                    frame.loc[s, "fallbacks"] = "; ".join(used)
    if "stats" in groups:
        dropped = open_group(store, "stats").attrs.get("dropped_incomplete", [])
        if isinstance(dropped, str):
            dropped = json.loads(dropped) if dropped.startswith("[") else [dropped]
        for s in dropped:
            if s in frame.index:
                frame.loc[s, "statistics"] = "dropped: NMI missing for at least one template"
    flagged = (frame["status"] != "ok") | (frame.drop(columns="status") != "").any(axis=1)
    return frame[flagged]


def run_query(
    out_dir: str | Path,
    group: str | None = None,
    subjects: Sequence[str] = (),
    templates: Sequence[str] = (),
    metrics: Sequence[str] = (),
    fmt: str = "table",
    failures: bool = False,
) -> str:
    """Print a selection of the results store as a table, CSV or JSON.

    Parameters
    ----------
    out_dir
        Run output directory (or the ``results.zarr`` path itself).
    group
        Store group (``participants``, ``deface``, ``qc_anat``, ``qc_func``, ``surface``,
        ``group``, ``stats``); None lists the groups with their dims and variables.
    subjects
        Subjects to keep (``subject`` or ``analysed_subject`` dim).
    templates
        Templates to keep (``template`` dim).
    metrics
        Values of the ``metric`` dim, or variable names (e.g. IQMs) for groups without one.
    fmt
        ``table``, ``csv`` or ``json``.
    failures
        Print :func:`failures_table` (every failed, partial, excluded or internally erroring
        subject, repaired input, fallback value and statistical drop, with its reason)
        instead of a group; ``subjects`` still selects rows.

    Returns
    -------
    str
        The rendered selection.  Variables over ``vertex`` are summarised per remaining
        coordinate (mean, SD, min, max, finite count) instead of printing 64,984 rows.

    Raises
    ------
    InputError
        If there is no store.
    ConfigError
        For an unknown group, subject, template, metric or format.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}; choose from {FORMATS}")
    store = _store(out_dir)
    if failures:
        frame = failures_table(store)
        if subjects:
            frame = frame[frame.index.isin(list(subjects))]
        if frame.empty and fmt == "table":
            return "no failures, partial results, exclusions, repairs or fallbacks"
        return _render([("failures", frame)], fmt)
    if group is None:
        blocks = _overview(store)
        if fmt != "table":
            return _render(blocks, fmt)
        return "\n".join(f"{r.group} ({r.dims or 'no dims'})\n    {r.variables or '-'}"
                         for r in blocks[0][1].itertuples())
    groups = list_groups(store)
    if group not in groups:
        raise ConfigError(f"unknown group {group!r}; available: {groups}")
    ds = open_group(store, group)
    subject_dim = next((d for d in ("subject", "analysed_subject") if d in ds.dims), None)
    if subjects and subject_dim is None:
        raise ConfigError(f"group {group!r} has no subject dimension")
    if subject_dim:
        ds = _select(ds, subject_dim, list(subjects), "subject(s)")
    if templates:
        if "template" not in ds.dims:
            raise ConfigError(f"group {group!r} has no template dimension")
        ds = _select(ds, "template", list(templates), "template(s)")
    if metrics:
        if "metric" in ds.dims:
            ds = _select(ds, "metric", list(metrics), "metric(s)")
        else:
            unknown = [m for m in metrics if m not in ds.data_vars]
            if unknown:
                raise ConfigError(f"unknown variable(s) {unknown} in {group!r}; available: "
                                  f"{list(map(str, ds.data_vars))}")
            ds = ds[list(metrics)]
    return _render(_frames(ds), fmt)
