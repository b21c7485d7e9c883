"""Small hand-written SVG plots for the report (no plotting library, no JavaScript).

Every builder returns an ``<svg>`` element as a string. Marks carry a ``<title>`` child, so
a browser shows the subject label and value on hover; the SVG is inline in the page, so it
needs no file, no network and no script. Numbers are rounded to 0.1 px to keep pages light
(about 60 bytes per point).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["nice_ticks", "strip_plot", "position_plot", "bar_plot", "fmt"]

_BLUE, _RED, _GREY, _ORANGE = "#4c72b0", "#c44e52", "#888", "#dd8452"


def fmt(value: float) -> str:
    """A number with 4 significant digits (``n/a`` for non-finite values)."""
    return f"{value:.4g}" if np.isfinite(value) else "n/a"


def nice_ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    """About ``n`` round tick values covering ``[lo, hi]``.

    Parameters
    ----------
    lo, hi
        Data range (``hi`` may equal ``lo``).
    n
        Wanted number of ticks.

    Returns
    -------
    list of float
        Ticks ``t`` with ``lo <= t <= hi`` at a step of 1, 2 or 5 times a power of ten.
    """
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return []
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(n, 1)
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    t = first
    while t <= hi + 1e-9 * step:
        ticks.append(0.0 if abs(t) < step * 1e-9 else t)
        t += step
    return ticks


def _jitter(n: int) -> np.ndarray:
    """Deterministic jitter in [-0.5, 0.5): the golden-ratio sequence (evenly spread)."""
    return ((np.arange(n) * 0.6180339887498949) % 1.0) - 0.5


def _range(values: np.ndarray, extra: Sequence[float]) -> tuple[float, float]:
    pts = np.concatenate([values[np.isfinite(values)],
                          np.asarray([e for e in extra if np.isfinite(e)], float)])
    if pts.size == 0:
        return 0.0, 1.0
    lo, hi = float(pts.min()), float(pts.max())
    pad = (hi - lo) * 0.05 or (abs(hi) * 0.05 or 1.0)
    return lo - pad, hi + pad


def _axis(y_of, ticks: Sequence[float], x0: float, x1: float) -> str:
    out = [f'<line x1="{x0}" y1="{y_of(ticks[0]) if ticks else 0:.1f}" x2="{x0}" '
           f'y2="{y_of(ticks[-1]) if ticks else 0:.1f}" stroke="#999"/>'] if ticks else []
    for t in ticks:
        y = y_of(t)
        out.append(f'<line x1="{x0 - 3}" y1="{y:.1f}" x2="{x1}" y2="{y:.1f}" stroke="#eee"/>'
                   f'<text x="{x0 - 5}" y="{y + 3:.1f}" text-anchor="end">{fmt(t)}</text>')
    return "".join(out)


def strip_plot(
    values: Mapping[str, float],
    title: str,
    *,
    excluded: Mapping[str, str] | None = None,
    by_this: Sequence[str] = (),
    links: Mapping[str, str] | None = None,
    sd_limit: float | None = 3.0,
    threshold: float | None = None,
    width: int = 230,
    height: int = 150,
) -> str:
    """One IQM over subjects: every subject a jittered point, value on the vertical axis.

    Parameters
    ----------
    values
        Subject -> value (non-finite values are left out and counted in the caption).
    title
        Plot title (the IQM name).
    excluded
        Subject -> exclusion reason; these points are drawn in red, with the reason in their
        hover text.
    by_this
        Excluded subjects whose exclusion was triggered by this IQM: filled red dots; other
        excluded subjects are red rings.
    links
        Subject -> relative URL; the points of these subjects become links.
    sd_limit
        Mean +/- ``sd_limit`` SD lines (dashed); None draws none.
    threshold
        An absolute exclusion threshold (red line), e.g. mean FD.
    width, height
        Size in px.

    Returns
    -------
    str
        ``<svg class="iqm" data-points="N">``: one ``class="pt"`` mark per finite value.
    """
    excluded = excluded or {}
    links = links or {}
    own = set(by_this)
    subs = list(values)
    v = np.array([values[s] for s in subs], dtype=float)
    ok = np.isfinite(v)
    fin = v[ok]
    mean = float(fin.mean()) if fin.size else float("nan")
    sd = float(fin.std(ddof=1)) if fin.size > 1 else 0.0
    lines = [mean]
    if sd_limit and sd > 0:
        lines += [mean - sd_limit * sd, mean + sd_limit * sd]
    extra = lines + ([threshold] if threshold is not None else [])
    lo, hi = _range(v, extra)
    top, bottom, left, right = 18, 14, 46, 6

    def y_of(val: float) -> float:
        return top + (hi - val) / (hi - lo) * (height - top - bottom)

    cx, band = (left + width - right) / 2, (width - left - right) * 0.8
    parts = [f'<svg class="iqm" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" data-points="{int(ok.sum())}" '
             f'font-size="9" font-family="sans-serif" role="img" '
             f'aria-label="{html.escape(title)}">',
             f'<text x="{width / 2:.0f}" y="11" text-anchor="middle" font-weight="bold" '
             f'font-size="10">{html.escape(title)}</text>',
             _axis(y_of, nice_ticks(lo, hi), left, width - right)]
    if np.isfinite(mean):
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y_of(mean):.1f}" '
                     f'y2="{y_of(mean):.1f}" stroke="#333"><title>mean {fmt(mean)}</title></line>')
    for val in lines[1:]:
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y_of(val):.1f}" '
                     f'y2="{y_of(val):.1f}" stroke="{_GREY}" stroke-dasharray="3 2">'
                     f'<title>mean {"+" if val > mean else "-"} {sd_limit:g} SD = {fmt(val)}'
                     f'</title></line>')
    if threshold is not None:
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y_of(threshold):.1f}" '
                     f'y2="{y_of(threshold):.1f}" stroke="{_RED}"><title>threshold '
                     f'{fmt(threshold)}</title></line>')
    jit = _jitter(len(subs))
    pts_ok, pts_ex = [], []
    for i, sub in enumerate(subs):
        if not ok[i]:
            continue
        x, y = cx + jit[i] * band, y_of(v[i])
        label = f"{sub} {fmt(v[i])}"
        if sub in excluded:
            fill = _RED if sub in own else "none"
            mark = (f'<circle class="pt ex" cx="{x:.1f}" cy="{y:.1f}" r="3.2" fill="{fill}" '
                    f'stroke="{_RED}"><title>{html.escape(label)}; excluded: '
                    f'{html.escape(excluded[sub])}</title></circle>')
        else:
            mark = (f'<circle class="pt" cx="{x:.1f}" cy="{y:.1f}" r="2">'
                    f'<title>{html.escape(label)}</title></circle>')
        if sub in links:
            mark = f'<a href="{html.escape(links[sub])}">{mark}</a>'
        (pts_ex if sub in excluded else pts_ok).append(mark)
    # included points first (semi-transparent blue), excluded on top
    parts.append(f'<g fill="{_BLUE}" fill-opacity="0.6">{"".join(pts_ok)}</g>')
    parts.append(f'<g>{"".join(pts_ex)}</g>')
    n_missing = int((~ok).sum())
    note = f"n={int(ok.sum())}" + (f", {n_missing} n/a" if n_missing else "")
    parts.append(f'<text x="{width - right}" y="{height - 3}" text-anchor="end" '
                 f'fill="#666">{note}</text></svg>')
    return "".join(parts)


def position_plot(
    values: np.ndarray,
    subject_value: float,
    title: str,
    *,
    width: int = 260,
    height: int = 34,
) -> str:
    """Where one subject lies in the group: quantile box plus a marker.

    Parameters
    ----------
    values
        Group values (non-finite values ignored).
    subject_value
        The subject's value (NaN: no marker, "n/a" label).
    title
        IQM name (hover text of the whole plot).
    width, height
        Size in px.

    Returns
    -------
    str
        ``<svg class="pos">``: whiskers at the 5th and 95th percentiles, box at the quartiles,
        median line, grey range line from min to max, red marker at the subject's value.
    """
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    left, right = 4, 4
    head = (f'<svg class="pos" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="{html.escape(title)}"><title>{html.escape(title)}</title>')
    if v.size == 0:
        return (head + f'<text x="{left}" y="{height / 2 + 3}" font-size="9">no group data'
                       "</text></svg>")
    lo, hi = _range(v, [subject_value])

    def x_of(val: float) -> float:
        return left + (val - lo) / (hi - lo) * (width - left - right)

    q = np.percentile(v, [0, 5, 25, 50, 75, 95, 100])
    mid = height / 2
    parts = [head,
             f'<line x1="{x_of(q[0]):.1f}" x2="{x_of(q[6]):.1f}" y1="{mid}" y2="{mid}" '
             f'stroke="#ccc"/>',
             f'<line x1="{x_of(q[1]):.1f}" x2="{x_of(q[5]):.1f}" y1="{mid}" y2="{mid}" '
             f'stroke="{_GREY}"/>',
             f'<rect x="{x_of(q[2]):.1f}" y="{mid - 7}" '
             f'width="{max(x_of(q[4]) - x_of(q[2]), 1):.1f}" height="14" fill="#dde4f0" '
             f'stroke="{_BLUE}"><title>quartiles {fmt(q[2])} - {fmt(q[4])} (n={v.size})'
             f"</title></rect>",
             f'<line x1="{x_of(q[3]):.1f}" x2="{x_of(q[3]):.1f}" y1="{mid - 7}" y2="{mid + 7}" '
             f'stroke="{_BLUE}" stroke-width="2"><title>median {fmt(q[3])}</title></line>']
    if np.isfinite(subject_value):
        x = x_of(subject_value)
        parts.append(f'<path class="me" d="M{x:.1f} {mid - 9}l-4 -6h8z" fill="{_RED}"/>'
                     f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{mid - 9}" y2="{mid + 9}" '
                     f'stroke="{_RED}" stroke-width="2"><title>this subject '
                     f'{fmt(subject_value)}</title></line>')
    parts.append("</svg>")
    return "".join(parts)


def bar_plot(
    bars: Sequence[tuple[str, float]],
    title: str,
    *,
    vmax: float = 1.0,
    percent: bool = True,
    width: int = 300,
    bar_height: int = 16,
) -> str:
    """Horizontal bars with value labels (rates per template in the defacing audit).

    Parameters
    ----------
    bars
        ``[(label, value)]``; NaN values are drawn as "n/a".
    title
        Title above the bars.
    vmax
        Value of a full-width bar.
    percent
        Label values as percentages.
    width, bar_height
        Size in px.

    Returns
    -------
    str
        ``<svg class="bars">``.
    """
    label_w, top = 90, 16
    height = top + len(bars) * (bar_height + 4) + 4
    span = width - label_w - 50
    parts = [f'<svg class="bars" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" font-size="10" '
             f'font-family="sans-serif" role="img" aria-label="{html.escape(title)}">',
             f'<text x="0" y="11" font-weight="bold">{html.escape(title)}</text>']
    for i, (label, val) in enumerate(bars):
        y = top + i * (bar_height + 4)
        text = (f"{100 * val:.1f}%" if percent else fmt(val)) if np.isfinite(val) else "n/a"
        w = max(0.0, min(1.0, val / vmax)) * span if np.isfinite(val) and vmax > 0 else 0.0
        parts.append(f'<text x="{label_w - 4}" y="{y + bar_height - 4}" text-anchor="end">'
                     f'{html.escape(label)}</text>'
                     f'<rect x="{label_w}" y="{y}" width="{span}" height="{bar_height}" '
                     f'fill="#f2f2f2"/>'
                     f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_height}" '
                     f'fill="{_ORANGE}"><title>{html.escape(label)}: {text}</title></rect>'
                     f'<text x="{label_w + span + 4}" y="{y + bar_height - 4}">{text}</text>')
    parts.append("</svg>")
    return "".join(parts)
