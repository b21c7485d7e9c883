"""What the report reads from the results store, loaded once into plain tables."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
import zarr

from isyb_dask.io.store import list_groups, open_group

log = logging.getLogger(__name__)

__all__ = ["ReportData", "load_report_data", "read_tsv", "subject_frame", "text_list"]


@dataclass
class ReportData:
    """Store content used by the group and subject pages.

    Attributes
    ----------
    out_dir, store
        Run output directory and ``results.zarr``.
    attrs
        Store-level attributes (provenance).
    groups
        Groups present in the store.
    participants, qc_anat, qc_func
        Per-subject tables indexed by subject (None when the group is absent).
    deface
        The loaded ``deface`` group (subject x template variables), or None.
    stats_attrs
        Attributes of the ``stats`` group (``dropped_incomplete``, ``skipped``...).
    deface_audit
        The stats ``deface_audit`` table when present (re-identification audit).
    cache_dir
        The run's cache directory (``--cache-dir``; None = the default cache), where the
        normalisation panel looks for the cached NLin6Asym bridge.
    """

    out_dir: Path
    store: Path
    attrs: dict[str, Any] = field(default_factory=dict)
    groups: list[str] = field(default_factory=list)
    participants: pd.DataFrame | None = None
    qc_anat: pd.DataFrame | None = None
    qc_func: pd.DataFrame | None = None
    deface: xr.Dataset | None = None
    stats_attrs: dict[str, Any] = field(default_factory=dict)
    deface_audit: pd.DataFrame | None = None
    cache_dir: Path | None = None

    @property
    def subjects(self) -> list[str]:
        """Subjects of the participants table (store order)."""
        return [] if self.participants is None else list(self.participants.index)

    @property
    def templates(self) -> list[str]:
        """Template names of the ``deface`` group."""
        return [] if self.deface is None else [str(t) for t in self.deface["template"].values]

    def status(self) -> pd.Series:
        """Status per subject (``unknown`` when the store has none)."""
        part = self.participants
        if part is None:
            return pd.Series(dtype=str)
        if "status" not in part:
            return pd.Series("unknown", index=part.index)
        return part["status"].astype(str)


def text_list(value: Any) -> list[str]:
    """A list of strings from a list, a JSON list, or a comma/semicolon separated string."""
    if value is None:
        return []
    if isinstance(value, (list, tuple, np.ndarray)):
        return [str(v) for v in value if str(v)]
    text = str(value).strip()
    if not text or text in ("nan", "None"):
        return []
    if text.startswith("["):
        try:
            return [str(v) for v in json.loads(text)]
        except ValueError:
            pass
    return [t.strip() for t in text.replace(";", ",").split(",") if t.strip()]


def subject_frame(ds: xr.Dataset) -> pd.DataFrame | None:
    """The ``(subject,)`` variables of a group as a table indexed by subject."""
    cols = [v for v in ds.data_vars if ds[v].dims == ("subject",)]
    if not cols:
        return None
    frame = pd.DataFrame({c: np.asarray(ds[c].values) for c in cols},
                         index=pd.Index([str(s) for s in ds["subject"].values], name="subject"))
    for c in frame.columns:
        if frame[c].dtype.kind not in "fiub":
            frame[c] = frame[c].map(lambda x: "" if x is None else str(x))
    return frame


def read_tsv(path: Path) -> pd.DataFrame | None:
    """A TSV file as a table, None when it is absent or unreadable (logged)."""
    try:
        return pd.read_csv(path, sep="\t") if path.is_file() else None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        log.warning("report: cannot read %s: %s", path, exc)
        return None


def _stats(store: Path) -> tuple[dict[str, Any], pd.DataFrame | None]:
    ds = open_group(store, "stats")
    attrs = dict(ds.attrs)
    audit = None
    # the re-identification table (deface/reid.audit_dataset): audit_<column> over audit_template
    audit_vars = [v for v in ds.data_vars
                  if str(v).startswith("audit_") and "audit_template" in ds[v].dims]
    if audit_vars:
        table = ds[audit_vars].load().to_dataframe().reset_index()
        audit = table.rename(columns={c: c[len("audit_"):] for c in table.columns
                                      if str(c).startswith("audit_")})
    return attrs, audit


def load_report_data(out_dir: str | Path, store_path: str | Path,
                     cache_dir: str | Path | None = None) -> ReportData:
    """Load everything the report needs from a results store (absent parts stay None).

    Parameters
    ----------
    out_dir
        Run output directory.
    store_path
        ``results.zarr`` (may be absent: an empty report is written).
    cache_dir
        The run's cache directory (None: the default cache).

    Returns
    -------
    ReportData
    """
    out_dir, store = Path(out_dir), Path(store_path)
    data = ReportData(out_dir=out_dir, store=store,
                      cache_dir=Path(cache_dir) if cache_dir is not None else None)
    if not store.exists():
        return data
    data.groups = list_groups(store)
    data.attrs = dict(zarr.open_group(str(store), mode="r").attrs)
    for name in ("participants", "qc_anat", "qc_func"):
        if name in data.groups:
            setattr(data, name, subject_frame(open_group(store, name).load()))
    if "deface" in data.groups:
        data.deface = open_group(store, "deface").load()
    if "stats" in data.groups:
        data.stats_attrs, data.deface_audit = _stats(store)
    return data
