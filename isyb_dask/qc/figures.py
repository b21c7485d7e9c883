"""Group QC figures (the paper's Figures 1 and 2): one row per IQM, two panels per row.

Left panel: histogram of the IQM over the sample (bars), with the mean and the +/- limit SD
lines. Right panel: strip plot over subjects (one point per subject, in subject order),
subjects excluded by that IQM drawn as red dots and subjects excluded by another IQM or
rule as red crosses, the mean (solid) and the +/- limit SD lines (dashed). Written with matplotlib's Agg canvas (no display needed) as PNG and
SVG.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["plot_qc_group"]


def plot_qc_group(
    table: pd.DataFrame,
    metrics: Sequence[str],
    excluded: pd.Series,
    out_base: str | os.PathLike[str],
    *,
    title: str = "",
    sd_limit: float = 3.0,
    ddof: int = 1,
    thresholds: Mapping[str, float] | None = None,
    flagged: Mapping[str, Iterable[str]] | None = None,
) -> list[Path]:
    """Draw histogram + strip panels for each IQM and save ``out_base`` .png and .svg.

    Parameters
    ----------
    table
        IQM table indexed by subject.
    metrics
        IQMs to draw (missing or all-NaN columns are skipped).
    excluded
        Boolean per subject (same index as ``table``): excluded by any rule.
    out_base
        Output path without extension (parents created).
    title
        Figure title.
    sd_limit, ddof
        SD lines drawn at mean +/- ``sd_limit`` SD (SD with ``ddof``).
    thresholds
        Absolute exclusion thresholds per IQM (e.g. ``{"fd_mean": 0.2}``), drawn in red.
    flagged
        IQM -> subjects excluded because of that IQM (drawn as red dots; subjects excluded
        for another reason are red crosses).

    Returns
    -------
    list of Path
        The PNG and SVG files.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = [
        m
        for m in metrics
        if m in table.columns and np.isfinite(pd.to_numeric(table[m], errors="coerce")).any()
    ]
    nrow = max(1, len(cols))
    fig = Figure(figsize=(9.0, 2.2 * nrow + 0.6))
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrow, 2, squeeze=False, gridspec_kw={"width_ratios": [1, 2]})
    excl = excluded.reindex(table.index).fillna(False).astype(bool).to_numpy()
    xpos = np.arange(len(table))
    for row, metric in enumerate(cols):
        vals = pd.to_numeric(table[metric], errors="coerce").to_numpy(dtype=float)
        ok = np.isfinite(vals)
        ax_h, ax_s = axes[row]
        ax_h.hist(
            vals[ok], bins=min(30, max(5, int(ok.sum() // 2))), color="#4c72b0", edgecolor="white"
        )
        mean = float(np.mean(vals[ok]))
        sd = float(np.std(vals[ok], ddof=ddof)) if ok.sum() > ddof else 0.0
        for ax, line in ((ax_h, ax_h.axvline), (ax_s, ax_s.axhline)):
            line(mean, color="k", lw=1)
            if sd > 0:
                line(mean - sd_limit * sd, color="grey", ls="--", lw=1)
                line(mean + sd_limit * sd, color="grey", ls="--", lw=1)
        limit = (thresholds or {}).get(metric)
        if limit is not None:
            ax_h.axvline(limit, color="#c44e52", lw=1)
            ax_s.axhline(limit, color="#c44e52", lw=1)
        ax_h.set_ylabel("subjects")
        ax_h.set_xlabel(metric)
        keep = ok & ~excl
        ax_s.scatter(xpos[keep], vals[keep], s=12, color="#4c72b0", label="included")
        own = np.isin(table.index.astype(str), list((flagged or {}).get(metric, ())))
        bad = ok & excl & ~own
        if bad.any():
            ax_s.scatter(
                xpos[bad],
                vals[bad],
                s=30,
                color="#c44e52",
                marker="x",
                label="excluded (other IQM or rule)",
            )
        hit = ok & own
        if hit.any():
            ax_s.scatter(
                xpos[hit],
                vals[hit],
                s=40,
                color="#c44e52",
                marker="o",
                label="excluded by this IQM",
            )
        ax_s.set_ylabel(metric)
        ax_s.set_xlim(-1, max(len(table), 1))
        if row == nrow - 1:
            ax_s.set_xlabel("subject")
        if bad.any() or hit.any():
            ax_s.legend(loc="best", fontsize="x-small", frameon=False)
    if not cols:
        axes[0, 0].text(0.5, 0.5, "no IQM values", ha="center", va="center")
    if title:
        fig.suptitle(f"{title} (n = {len(table)}, excluded = {int(excl.sum())})")
    fig.subplots_adjust(
        left=0.09,
        right=0.98,
        bottom=0.5 / fig.get_figheight() + 0.02,
        top=1.0 - 0.6 / fig.get_figheight(),
        wspace=0.28,
        hspace=0.55,
    )
    out_base = Path(out_base)
    out_base.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in (".png", ".svg"):
        path = out_base.with_name(out_base.name + ext)
        fig.savefig(path, dpi=80)
        paths.append(path)
    return paths
