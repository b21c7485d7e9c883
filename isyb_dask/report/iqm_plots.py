"""The group page's IQM plots: one small SVG strip plot per IQM, grouped T1w / BOLD."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from isyb_dask.qc.config import QCConfig
from isyb_dask.report.data import ReportData
from isyb_dask.report.svg import strip_plot
from isyb_dask.report.tables import subject_page_href

__all__ = ["IqmPlotSettings", "plot_settings", "iqm_plots", "plotted_iqms", "qc_sample"]

#: IQMs plotted besides the ones screened by the SD rule (when the store has them); the
#: rest are in the linked TSVs.
EXTRA_T1W = ("cjv", "snr_csf", "snr_gm", "snr_wm", "wm2max", "qi_1", "inu_med")
EXTRA_BOLD = ("fd_perc", "tsnr", "dvars_nstd", "gsr_x", "gsr_y")


@dataclass(frozen=True)
class IqmPlotSettings:
    """Exclusion settings drawn on the plots (from the run's QC configuration)."""

    anat_sd_metrics: tuple[str, ...]
    func_sd_metrics: tuple[str, ...]
    sd_limit: float
    fd_mean_max: float


def plot_settings(attrs: dict) -> IqmPlotSettings:
    """Settings from the store's ``config`` attribute, QC defaults where it has none."""
    default = QCConfig()
    qc: dict = {}
    try:
        cfg = attrs.get("config")
        qc = (json.loads(cfg) if isinstance(cfg, str) else dict(cfg or {})).get("qc", {}) or {}
    except (ValueError, TypeError, AttributeError):
        qc = {}
    return IqmPlotSettings(
        anat_sd_metrics=tuple(qc.get("anat_sd_metrics", default.anat_sd_metrics)),
        func_sd_metrics=tuple(qc.get("func_sd_metrics", default.func_sd_metrics)),
        sd_limit=float(qc.get("sd_limit", default.sd_limit)),
        fd_mean_max=float(qc.get("fd_mean_max", default.fd_mean_max)),
    )


def plotted_iqms(frame: pd.DataFrame | None, screened: Sequence[str],
                 extra: Sequence[str]) -> list[str]:
    """Screened IQMs first, then the extras, keeping those the table has with data."""
    if frame is None:
        return []
    names = list(dict.fromkeys([*screened, *extra]))
    return [n for n in names if n in frame.columns
            and np.isfinite(pd.to_numeric(frame[n], errors="coerce")).any()]


#: Statuses of the subjects drawn on the IQM plots (a ``partial`` subject failed a later
#: stage but may have its IQMs).
PLOT_STATUSES = ("ok", "excluded", "partial")


def qc_sample(data: ReportData) -> list[str]:
    """Subjects drawn on the IQM plots and in the group distributions (:data:`PLOT_STATUSES`)."""
    status = data.status()
    return [s for s in data.subjects if status.get(s, "") in PLOT_STATUSES]


def iqm_plots(data: ReportData, modality: str, settings: IqmPlotSettings) -> list[str]:
    """SVG strip plots of one modality's IQMs over the QC sample.

    Parameters
    ----------
    data
        Loaded store.
    modality
        ``"T1w"`` or ``"bold"``.
    settings
        Exclusion settings (SD limit, motion threshold, screened IQMs).

    Returns
    -------
    list of str
        One ``<svg>`` per plotted IQM (empty when the modality has no data).
    """
    frame = data.qc_anat if modality == "T1w" else data.qc_func
    screened = settings.anat_sd_metrics if modality == "T1w" else settings.func_sd_metrics
    names = plotted_iqms(frame, screened, EXTRA_T1W if modality == "T1w" else EXTRA_BOLD)
    if not names or frame is None:
        return []
    sample = [s for s in qc_sample(data) if s in frame.index]
    part = data.participants
    status = data.status()
    excluded, metric_of = {}, {}
    if part is not None:
        reason = part.get("exclusion_reason", pd.Series("", index=part.index)).astype(str)
        metric = part.get("exclusion_metric", pd.Series("", index=part.index)).astype(str)
        for s in sample:
            if status[s] == "excluded":
                excluded[s] = reason[s] or "excluded"
                metric_of[s] = metric[s]
    links = {s: subject_page_href(s) for s in excluded}
    plots = []
    for name in names:
        vals = pd.to_numeric(frame.loc[sample, name], errors="coerce")
        keys = {name, f"{modality}:{name}"}
        by_this = [s for s, m in metric_of.items()
                   if keys & {t.strip() for t in m.replace(",", ";").split(";")}]
        screened_here = name in screened
        plots.append(strip_plot(
            dict(zip(sample, vals.to_numpy(dtype=float))), name, excluded=excluded,
            by_this=by_this, links=links,
            sd_limit=settings.sd_limit if screened_here else None,
            threshold=settings.fd_mean_max if name == "fd_mean" and modality == "bold" else None))
    return plots
