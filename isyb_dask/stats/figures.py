"""Figure 6: NMI per template, per database (violins, paired lines, post-hoc stars)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd


def stars(p: float, alpha: float = 0.05) -> str:
    """Significance label of an (adjusted) p-value.

    Parameters
    ----------
    p
        p-value.
    alpha
        Level for a single star.

    Returns
    -------
    str
        ``***`` (< .001), ``**`` (< .01), ``*`` (< alpha) or ``n.s.``.
    """
    if not np.isfinite(p):
        return "n.a."
    if p < 0.001:
        return "***"
    if p < 0.01:
        return "**"
    if p < alpha:
        return "*"
    return "n.s."


def plot_nmi_templates(
    panels: Sequence[tuple[str, np.ndarray]],
    templates: Sequence[str],
    posthoc: pd.DataFrame,
    out_base: Path,
    *,
    alpha: float = 0.05,
) -> list[Path]:
    """Draw Figure 6 and save it as PNG and SVG.

    Parameters
    ----------
    panels
        ``[(database label, (n, k) NMI array)]``, one panel each.
    templates
        Names of the ``k`` templates (column order).
    posthoc
        Table 1 rows (:func:`isyb_dask.stats.posthoc.pairwise_emm`); rows whose ``database``
        equals a panel label give that panel's stars (from ``p_adj``).
    out_base
        Output path without extension (``.../figures/nmi_templates``).
    alpha
        Level of a single star.

    Returns
    -------
    list of Path
        The PNG and SVG files.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    k = len(templates)
    x = np.arange(k)
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 4.2), squeeze=False,
                             sharey=True)
    limits: list[tuple[float, float]] = []
    for ax, (label, y) in zip(axes[0], panels):
        y = np.asarray(y, dtype=float)
        for row in y:
            ax.plot(x, row, color="0.55", alpha=min(0.6, 8.0 / max(len(y), 1)), lw=0.6,
                    zorder=1)
        if len(y) >= 2:
            parts = ax.violinplot([y[:, j] for j in range(k)], positions=x, widths=0.8,
                                  showmeans=True, showextrema=False)
            for body in parts["bodies"]:
                body.set_alpha(0.35)
        ax.scatter(np.repeat(x[None, :], len(y), 0).ravel(), y.ravel(), s=6, color="k",
                   zorder=2)
        rows = posthoc[posthoc["database"] == label]
        top = np.nanmax(y) if y.size else 1.0
        span = (np.nanmax(y) - np.nanmin(y)) if y.size else 1.0
        span = span if span > 0 else 1.0
        pairs = sorted(((templates.index(r.template_1), templates.index(r.template_2), r.p_adj)
                        for r in rows.itertuples()), key=lambda t: (abs(t[1] - t[0]), t[0]))
        h = top
        for i, (j, l, p_adj) in enumerate(pairs):  # short brackets low, long ones high
            h = top + span * (0.06 + 0.1 * i)
            ax.plot([j, j, l, l], [h - span * 0.02, h, h, h - span * 0.02], color="k", lw=0.8)
            ax.text((j + l) / 2, h, stars(p_adj, alpha), ha="center", va="bottom", fontsize=9)
        limits.append((np.nanmin(y) - span * 0.05 if y.size else 0.0, h + span * 0.1))
        ax.set_xticks(x, templates, rotation=20)
        ax.set_title(f"{label} (n={len(y)})")
    if limits:  # shared y axis: room for every panel's data and brackets
        axes[0, 0].set_ylim(min(lo for lo, _ in limits), max(hi for _, hi in limits))
    axes[0, 0].set_ylabel("NMI (original vs removed face)")
    fig.suptitle("NMI of the removed face per template")
    fig.tight_layout()
    out_base = Path(out_base)
    out_base.parent.mkdir(parents=True, exist_ok=True)
    paths = [out_base.with_suffix(".png"), out_base.with_suffix(".svg")]
    fig.savefig(paths[0], dpi=110)
    fig.savefig(paths[1])
    plt.close(fig)
    return paths
