"""Tables of the report: built from the store, written as TSVs the page links to."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from isyb_dask.report.data import ReportData, text_list

__all__ = ["TABLE_DIR", "exclusion_table", "failure_table", "subject_table", "iqm_summary",
           "nmi_summary", "write_tsv", "subject_page_href"]

#: Folder (under OUT_DIR) of the TSVs written for the report.
TABLE_DIR = "report_tables"
_FAILED = ("failed", "partial")


def subject_page_href(subject: str) -> str:
    """Relative URL of a subject's page from ``OUT_DIR/report.html``."""
    return f"{subject}/{subject}_report.html"


def _col(part: pd.DataFrame, name: str) -> pd.Series:
    if name in part:
        return part[name].fillna("").astype(str).replace("nan", "")
    return pd.Series("", index=part.index, dtype=object)


def failure_table(data: ReportData) -> pd.DataFrame:
    """Every subject that failed, partly failed, was excluded or dropped from the statistics.

    Columns ``subject``, ``kind`` (``failed``, ``partial``, ``excluded``,
    ``dropped from statistics``), ``stage`` and ``message``. ``participants.failed_stages``
    and the ``partial`` status are used when present; a failed subject without them gets
    the stage named at the start of its error message when it has one (``qc_func: ...``).
    """
    rows: list[dict[str, str]] = []
    part = data.participants
    if part is not None:
        status = data.status()
        error, stages = _col(part, "error"), _col(part, "failed_stages")
        reason, rule = _col(part, "exclusion_reason"), _col(part, "exclusion_rule")
        for sub in part.index:
            st = status[sub]
            if st in _FAILED:
                names = text_list(stages[sub])
                msg = error[sub]
                if not names and ":" in msg and msg.split(":", 1)[0].isidentifier() \
                        and msg.split(":", 1)[0].islower():
                    names = [msg.split(":", 1)[0]]
                rows.append({"subject": sub, "kind": st,
                             "stage": ", ".join(names) or "not recorded", "message": msg})
            elif st == "excluded":
                rows.append({"subject": sub, "kind": "excluded",
                             "stage": "qc exclusion" + (f" ({rule[sub]})" if rule[sub] else ""),
                             "message": reason[sub]})
    for sub in text_list(data.stats_attrs.get("dropped_incomplete")):
        rows.append({"subject": sub, "kind": "dropped from statistics", "stage": "stats",
                     "message": "incomplete NMI (a template gave no value)"})
    return pd.DataFrame(rows, columns=["subject", "kind", "stage", "message"])


def exclusion_table(data: ReportData) -> pd.DataFrame:
    """Excluded subjects with their reason, rule and metric."""
    part = data.participants
    cols = ["subject", "exclusion_reason", "exclusion_rule", "exclusion_metric"]
    if part is None:
        return pd.DataFrame(columns=cols)
    ex = part[data.status() == "excluded"]
    return pd.DataFrame({c: _col(ex, c) for c in cols[1:]}, index=ex.index).rename_axis(
        "subject").reset_index()


def subject_table(data: ReportData) -> pd.DataFrame:
    """One row per subject: status, database, exclusion reason or error, page link."""
    part = data.participants
    if part is None:
        return pd.DataFrame(columns=["subject", "status", "database", "note", "page"])
    status = data.status()
    note = _col(part, "exclusion_reason").where(status == "excluded", _col(part, "error"))
    return pd.DataFrame({"subject": part.index, "status": status.values,
                         "database": _col(part, "database").values, "note": note.values,
                         "page": [subject_page_href(s) for s in part.index]})


def iqm_summary(frame: pd.DataFrame | None, subjects: list[str]) -> pd.DataFrame | None:
    """n, mean, SD, min, median, max of every IQM over ``subjects``."""
    if frame is None or frame.empty:
        return None
    num = frame.reindex(subjects).apply(pd.to_numeric, errors="coerce")
    # text variables of the QC groups (e.g. qc_anat.harmonization_route) are not IQMs
    num = num.loc[:, [c for c in num.columns if frame[c].dtype.kind in "fiub"]]
    return pd.DataFrame({"n": num.count(), "mean": num.mean(), "sd": num.std(),
                         "min": num.min(), "median": num.median(),
                         "max": num.max()}).rename_axis("iqm").reset_index()


def nmi_summary(data: ReportData, subjects: list[str]) -> pd.DataFrame | None:
    """NMI per template over ``subjects``: n, mean, SD, min, max and mean seconds."""
    ds = data.deface
    if ds is None or "nmi" not in ds:
        return None
    sub = [s for s in subjects if s in set(map(str, ds["subject"].values))]
    nmi = ds["nmi"].sel(subject=sub).transpose("subject", "template").values
    out = pd.DataFrame({"template": data.templates,
                        "n": np.isfinite(nmi).sum(0),
                        "mean": np.nanmean(nmi, 0) if len(sub) else np.nan,
                        "sd": pd.DataFrame(nmi).std().values if len(sub) else np.nan,
                        "min": np.nanmin(nmi, 0) if np.isfinite(nmi).any() else np.nan,
                        "max": np.nanmax(nmi, 0) if np.isfinite(nmi).any() else np.nan})
    if "seconds" in ds:
        out["mean_seconds"] = ds["seconds"].sel(subject=sub).mean("subject").values
    return out


def write_tsv(frame: pd.DataFrame, out_dir: Path, name: str) -> Path:
    """Write ``OUT_DIR/report_tables/<name>`` and return its path."""
    path = out_dir / TABLE_DIR / name
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, sep="\t", index=False, na_rep="n/a", float_format="%.6g")
    return path
