"""HTML fragments of the report sections (pure functions of loaded data)."""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

NOT_AVAILABLE = '<p class="na">not available</p>'


def esc(value: object) -> str:
    """HTML-escaped text of any value."""
    return html.escape(str(value))


def table_html(frame: pd.DataFrame | None, *, max_rows: int = 60, index: bool = False,
               css_class: str = "tab") -> str:
    """A DataFrame as an escaped HTML table (numbers with 4 significant digits).

    Parameters
    ----------
    frame
        Table, or None.
    max_rows
        Rows shown; a note gives the number left out.
    index
        Show the index as the first column.
    css_class
        CSS class of the table.

    Returns
    -------
    str
        HTML fragment (``not available`` for None or an empty table).
    """
    if frame is None or frame.empty:
        return NOT_AVAILABLE
    shown = frame.head(max_rows)
    if index:
        shown = shown.reset_index()

    def cell(v: object) -> str:
        if isinstance(v, (bool, np.bool_)):
            return f"<td>{v}</td>"
        if isinstance(v, (float, np.floating)):
            return f'<td class="num">{"" if np.isnan(v) else f"{v:.4g}"}</td>'
        if isinstance(v, (int, np.integer)):
            return f'<td class="num">{v}</td>'
        return f"<td>{esc(v)}</td>"

    head = "".join(f"<th>{esc(c)}</th>" for c in shown.columns)
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>"
                   for row in shown.itertuples(index=False))
    note = (f'<p class="note">{len(frame) - max_rows} more rows not shown</p>'
            if len(frame) > max_rows else "")
    return (f'<div class="wrap"><table class="{css_class}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{body}</tbody></table></div>{note}')


def section(sec_id: str, title: str, body: str) -> str:
    """A ``<section>`` with an id and a heading."""
    return f'<section id="{esc(sec_id)}"><h2>{esc(title)}</h2>{body}</section>'


def summary_body(part: pd.DataFrame | None) -> str:
    """Study summary: counts, exclusions with reasons, failures with messages, demographics.

    Parameters
    ----------
    part
        Participants table indexed by subject (``status``, ``error``, ``exclusion_reason``,
        demographics), or None.

    Returns
    -------
    str
        HTML fragment.
    """
    if part is None or part.empty:
        return NOT_AVAILABLE
    status = part.get("status", pd.Series("unknown", index=part.index)).astype(str)
    counts = status.value_counts()
    items = [("subjects", len(part))] + [(k, int(v)) for k, v in counts.items()]
    out = "<ul class=\"counts\">" + "".join(
        f"<li><b>{esc(k)}</b>: {v}</li>" for k, v in items) + "</ul>"
    excl = part[status == "excluded"]
    cols = [c for c in ("exclusion_reason", "exclusion_rule", "exclusion_metric") if c in part]
    out += "<h3>Excluded</h3>" + (table_html(excl[cols], index=True) if len(excl) and cols
                                  else "<p>none</p>")
    fail = part[status.isin(["failed", "partial", "error"])]
    fcols = [c for c in ("status", "failed_stages", "error") if c in part]
    out += "<h3>Failed and partial</h3>" + (table_html(fail[fcols], index=True)
                                            if len(fail) and "error" in part else "<p>none</p>")
    demo = []
    ok = part[status.isin(["ok", "partial"])]
    if ok.empty:
        return out + "<h3>Demographics</h3><p>no included subjects</p>"
    if "age" in part:
        age = pd.to_numeric(ok["age"], errors="coerce")
        demo.append(("age (included)", (f"mean {age.mean():.2f}, SD {age.std():.2f}, "
                                         f"range {age.min():.0f}-{age.max():.0f}")))
    for col in ("sex", "population", "database"):
        if col in part:
            vc = ok[col].astype(str).replace("", "n/a").value_counts()
            demo.append((f"{col} (included)", ", ".join(f"{k}: {v}" for k, v in vc.items())))
    if demo:
        out += "<h3>Demographics</h3><ul>" + "".join(
            f"<li><b>{esc(k)}</b>: {esc(v)}</li>" for k, v in demo) + "</ul>"
    return out


def describe(frame: pd.DataFrame | None) -> pd.DataFrame | None:
    """Mean, SD, min, max and n of every numeric column (rows = columns of ``frame``)."""
    if frame is None or frame.empty:
        return None
    num = frame.apply(pd.to_numeric, errors="coerce")
    return pd.DataFrame({"n": num.count(), "mean": num.mean(), "sd": num.std(),
                         "min": num.min(), "max": num.max()}).rename_axis("variable")


def provenance_body(attrs: Mapping[str, object]) -> str:
    """Run provenance from the store attributes (versions, config, timings, ...).

    Parameters
    ----------
    attrs
        Store-level attributes; JSON strings are pretty-printed.

    Returns
    -------
    str
        HTML fragment.
    """
    if not attrs:
        return NOT_AVAILABLE
    rows = []
    for key in sorted(attrs):
        val = attrs[key]
        if isinstance(val, str):
            try:
                val = json.loads(val)
            except (ValueError, TypeError):
                pass
        text = json.dumps(val, indent=1, sort_keys=True, default=str) if isinstance(
            val, (dict, list)) else str(val)
        rows.append(f"<dt>{esc(key)}</dt><dd><pre>{esc(text)}</pre></dd>")
    return "<dl class=\"prov\">" + "".join(rows) + "</dl>"


def figures_body(tags: Sequence[tuple[str, str]]) -> str:
    """Figures with captions: ``[(caption, <img> tag)]`` or not available."""
    if not tags:
        return NOT_AVAILABLE
    return "".join(f"<figure>{tag}<figcaption>{esc(cap)}</figcaption></figure>"
                   for cap, tag in tags)
