"""Group QC step: IQM tables, exclusion of outlying subjects, Figures 1 and 2.

``run_qc_group(store_path, out_dir, cfg)`` (docs/dev-contracts.md):

1. reads ``participants``, ``qc_anat`` and ``qc_func`` from ``results.zarr``;
2. the analysed sample is every subject whose ``status`` is ``ok`` or ``partial`` (or
   ``excluded`` by an earlier group run, so that re-running with other settings is
   idempotent; a subject no longer excluded gets back ``partial`` if its ``failed_stages``
   is non-empty, else ``ok``); failed and pending subjects are left out;
3. applies :mod:`isyb_dask.group.exclusion` (SD rule per IQM and modality, motion rule) and
   records the result in ``participants`` with
   :func:`isyb_dask.io.store.update_participants` (``status``, ``exclusion_reason``,
   ``exclusion_rule``, ``exclusion_metric``; subjects no longer excluded go back to ``ok``);
4. writes ``group_T1w.tsv`` and ``group_bold.tsv`` (MRIQC layout: ``bids_name`` first, then
   the IQMs in alphabetical order), ``group_qc_exclusions.tsv`` (one row per trigger) and
   ``figures/qc_T1w.{png,svg}``, ``figures/qc_bold.{png,svg}``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from isyb_dask.io import store as st
from isyb_dask.qc.config import QCConfig
from isyb_dask.group.exclusion import exclusion_table, subject_exclusions
from isyb_dask.qc.figures import plot_qc_group

__all__ = ["iqm_table", "run_qc_group"]

_MODALITIES = (("T1w", "qc_anat", "T1w"), ("bold", "qc_func", "bold"))
#: T1w IQMs in harmonized intensity units (the others are ratios, invariant to the scaling).
HARMONIZED_IQMS = tuple(f"summary_{r}_{k}" for r in ("bg", "csf", "gm", "wm")
                        for k in ("mean", "median", "p05", "p95", "stdv", "mad"))


def _fallback_subjects(store_path: Path) -> set[str]:
    """Subjects whose T1w harmonization used the percentile fallback route."""
    frame = _group_frame(store_path, "qc_anat")
    if "harmonization_route" not in frame.columns:
        return set()
    route = frame["harmonization_route"].astype(str)
    return {s for s, r in route.items() if r.startswith("fallback")}


def _group_frame(store_path: Path, name: str) -> pd.DataFrame:
    try:
        ds = st.open_group(store_path, name)
    except (FileNotFoundError, KeyError, OSError, ValueError):
        return pd.DataFrame()
    frame = ds.to_dataframe() if ds.data_vars else pd.DataFrame(index=ds["subject"].values)
    frame.index = frame.index.astype(str)
    frame.index.name = "subject"
    return frame


def iqm_table(frame: pd.DataFrame, subjects: list[str], suffix: str) -> pd.DataFrame:
    """IQM table of the given subjects in MRIQC's ``group_<mod>.tsv`` layout.

    Parameters
    ----------
    frame
        Group variables indexed by subject.
    subjects
        Subjects to keep (in this order); rows whose IQMs are all missing are dropped.
    suffix
        BIDS suffix appended to the subject label in ``bids_name``.

    Returns
    -------
    pandas.DataFrame
        Indexed by subject, first column ``bids_name``, IQM columns sorted.
    """
    if frame.empty:
        return pd.DataFrame(columns=["bids_name"])
    numeric = frame.apply(pd.to_numeric, errors="coerce").reindex(subjects)
    cols = sorted(c for c in numeric.columns if numeric[c].notna().any())
    table = numeric[cols].copy()
    table = table[table.notna().any(axis=1)] if cols else table.iloc[0:0]
    table.insert(0, "bids_name", [f"{s}_{suffix}" for s in table.index])
    return table


def run_qc_group(
    store_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    cfg: QCConfig,
    *,
    figures: bool = True,
    exclude_fallback: bool = True,
) -> dict[str, Any]:
    """Group QC: exclusion, tables and figures (see module docstring).

    Parameters
    ----------
    store_path
        ``results.zarr``.
    out_dir
        Output directory of the run (tables at its top level, figures in ``figures/``).
    cfg
        QC settings (``sd_limit``, ``sd_ddof``, ``sd_iterate``, ``sd_direction``,
        ``fd_mean_max``, SD-rule metric lists).
    figures
        Draw Figures 1 and 2 (default); tables and exclusions are always written.
    exclude_fallback
        Treat the intensity-unit IQMs (:data:`HARMONIZED_IQMS`) of subjects harmonized by
        the 75-95th percentile fallback as missing in the exclusion rules (default True:
        their scale is not comparable with WM-harmonized subjects). The tables keep them.

    Returns
    -------
    dict
        ``n_sample``, ``excluded`` (subject -> participants fields), ``files`` (paths).
    """
    store_path = Path(store_path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    part = _group_frame(store_path, "participants")
    if part.empty or "status" not in part.columns:
        raise ValueError(f"{store_path.name}: no participants group with a status variable")
    status = part["status"].astype(str)
    sample = [s for s in part.index if status[s] in ("ok", "partial", "excluded")]
    failed_parts = (part["failed_stages"].astype(str) if "failed_stages" in part.columns
                    else pd.Series("", index=part.index))

    tables: dict[str, pd.DataFrame] = {}
    for modality, group, suffix in _MODALITIES:
        tables[modality] = iqm_table(_group_frame(store_path, group), sample, suffix)
    rule_tables = {m: t.drop(columns="bids_name") for m, t in tables.items()}
    fallback = _fallback_subjects(store_path) if exclude_fallback else set()
    if fallback and not rule_tables["T1w"].empty:
        t1 = rule_tables["T1w"]
        cols = [c for c in HARMONIZED_IQMS if c in t1.columns]
        t1.loc[t1.index.isin(list(fallback)), cols] = float("nan")
    triggers = exclusion_table(
        rule_tables,
        {"T1w": cfg.anat_sd_metrics, "bold": cfg.func_sd_metrics},
        limit=cfg.sd_limit,
        ddof=cfg.sd_ddof,
        iterate=cfg.sd_iterate,
        direction=cfg.sd_direction,
        fd_mean_max=cfg.fd_mean_max,
        motion_modality="bold",
    )
    excluded = subject_exclusions(triggers)
    updates: dict[str, dict[str, str]] = dict(excluded)
    for subj in sample:
        if subj not in excluded and status[subj] == "excluded":
            updates[subj] = {  # back to what the participant level recorded
                "status": "partial" if failed_parts[subj] not in ("", "nan") else "ok",
                "exclusion_reason": "",
                "exclusion_rule": "",
                "exclusion_metric": "",
            }
    if updates:
        st.update_participants(store_path, updates)

    files: list[Path] = []
    for modality, table in tables.items():
        path = out_dir / f"group_{modality}.tsv"
        table.to_csv(path, sep="\t", index=False, na_rep="n/a")
        files.append(path)
    trig_path = out_dir / "group_qc_exclusions.tsv"
    triggers.to_csv(trig_path, sep="\t", index=False, na_rep="n/a")
    files.append(trig_path)
    flags = pd.Series({s: s in excluded for s in sample}, dtype=bool)
    plots = (
        ("T1w", cfg.anat_sd_metrics, "qc_T1w"),
        ("bold", cfg.func_sd_metrics, "qc_bold"),
    )
    for modality, metrics, name in plots if figures else ():
        table = tables[modality]
        files += plot_qc_group(
            table.drop(columns="bids_name"),
            metrics,
            flags.reindex(table.index),
            out_dir / "figures" / name,
            title=f"{modality} image quality metrics",
            sd_limit=cfg.sd_limit,
            ddof=cfg.sd_ddof,
            thresholds={"fd_mean": cfg.fd_mean_max} if modality == "bold" else None,
            flagged={
                m: set(rows["subject"])
                for m, rows in triggers[triggers["modality"] == modality].groupby("metric")
            },
        )
    return {
        "n_sample": len(sample),
        "n_excluded": len(excluded),
        "harmonization_fallback": sorted(fallback),
        "excluded": excluded,
        "triggers": len(triggers),
        "files": [str(f) for f in files],
        "rows": {m: len(t) for m, t in tables.items()},
        "sd_limit": float(cfg.sd_limit),
    }
