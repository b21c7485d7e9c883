"""HTML building blocks shared by the group and subject pages."""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["NOT_AVAILABLE", "esc", "page", "section", "table_html", "tsv_link", "rel"]

NOT_AVAILABLE = '<p class="na">not available</p>'

CSS = """
body{font-family:system-ui,sans-serif;margin:0 auto;max-width:1200px;padding:1em;color:#222}
h1{border-bottom:2px solid #446}h2{color:#335;border-bottom:1px solid #ccd;margin-top:1.6em}
table.tab{border-collapse:collapse;font-size:0.85em;margin:0.5em 0}
table.tab td,table.tab th{border:1px solid #ccd;padding:2px 6px;text-align:left}
table.tab td.num{text-align:right}table.tab th{background:#eef}
img.fig{max-width:100%;border:1px solid #ddd}.na{color:#a33;font-style:italic}
pre{white-space:pre-wrap;font-size:0.8em;margin:0}nav a{margin-right:1em}
figure{margin:0.8em 0}figcaption{font-size:0.85em;color:#555;max-width:900px}
.plots{display:flex;flex-wrap:wrap;gap:6px}.plots svg{border:1px solid #eee}
svg .pt:hover{stroke:#000;stroke-width:1.5}.st-failed,.st-partial{color:#a33}
.st-excluded{color:#a60}.scroll{max-height:26em;overflow-y:auto;display:inline-block}
.dl{font-size:0.85em}.dl a,.dl .na{margin-right:1em}.fail{border:2px solid #c44e52;padding:0.5em}
"""

# Records script errors and image decoding in body data attributes (read by the tests).
# The pages do not need it: every plot is inline SVG and every link is a plain <a>.
JS = """
window.__errors=[];
window.addEventListener('error',function(e){window.__errors.push(String(e.message||e));});
window.addEventListener('load',function(){
 var imgs=document.images,ok=0;
 for(var i=0;i<imgs.length;i++){if(imgs[i].complete&&imgs[i].naturalWidth>0){ok++;}}
 var b=document.body;
 b.setAttribute('data-images',String(imgs.length));
 b.setAttribute('data-images-ok',String(ok));
 b.setAttribute('data-sections',String(document.querySelectorAll('section').length));
 b.setAttribute('data-js-errors',String(window.__errors.length));
 b.setAttribute('data-rendered','1');
});
"""


def esc(value: object) -> str:
    """HTML-escaped text of any value."""
    return html.escape(str(value))


def rel(path: Path, start: Path) -> str:
    """URL of ``path`` relative to the folder ``start`` (forward slashes, escaped)."""
    return html.escape(Path(os.path.relpath(path, start)).as_posix())


def page(title: str, nav: Sequence[tuple[str, str]], body: str) -> str:
    """A complete HTML document with the shared style.

    Parameters
    ----------
    title
        Title and first heading.
    nav
        ``[(href, label)]`` navigation links.
    body
        Page content.
    """
    links = "".join(f'<a href="{h}">{esc(t)}</a>' for h, t in nav)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style><script>{JS}</script></head>"
            f"<body><h1>{esc(title)}</h1><nav>{links}</nav>{body}</body></html>")


def section(sec_id: str, title: str, body: str) -> str:
    """A ``<section>`` with an id and a heading."""
    return f'<section id="{esc(sec_id)}"><h2>{esc(title)}</h2>{body}</section>'


def tsv_link(path: Path | None, start: Path, label: str | None = None) -> str:
    """A download link to a TSV (``not available`` when it is absent)."""
    if path is None or not path.is_file():
        return f'<span class="na">{esc(label or "table")}: not available</span>'
    return f'<a href="{rel(path, start)}" download>{esc(label or path.name)}</a>'


def _cell(v: object, link: str | None = None) -> str:
    if isinstance(v, (float, np.floating)):
        return f'<td class="num">{"" if np.isnan(v) else f"{v:.4g}"}</td>'
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return f'<td class="num">{v}</td>'
    text = esc(v)
    return f'<td><a href="{esc(link)}">{text}</a></td>' if link else f"<td>{text}</td>"


def table_html(frame: pd.DataFrame | None, *, max_rows: int = 50,
               links: dict[str, str] | None = None, link_col: str = "subject",
               row_class: str | None = None) -> str:
    """A small table as escaped HTML (numbers with 4 significant digits).

    Parameters
    ----------
    frame
        Table (index not shown), or None.
    max_rows
        Rows shown; a note gives the number left out (the TSV has them all).
    links
        Value of ``link_col`` -> URL: those cells become links.
    link_col
        Column whose cells get ``links``.
    row_class
        Column whose value (prefixed ``st-``) becomes the row's CSS class.

    Returns
    -------
    str
        HTML fragment, ``not available`` for None, ``none`` for an empty table.
    """
    if frame is None:
        return NOT_AVAILABLE
    if frame.empty:
        return "<p>none</p>"
    shown = frame.head(max_rows)
    links = links or {}
    cols = list(shown.columns)
    head = "".join(f"<th>{esc(c)}</th>" for c in cols)
    rows = []
    for rec in shown.itertuples(index=False):
        cells = "".join(_cell(v, links.get(str(v)) if c == link_col else None)
                        for c, v in zip(cols, rec))
        cls = f' class="st-{esc(getattr(rec, row_class))}"' if row_class in cols else ""
        rows.append(f"<tr{cls}>{cells}</tr>")
    note = (f'<p class="note">{len(frame) - max_rows} more rows in the TSV</p>'
            if len(frame) > max_rows else "")
    return (f'<table class="tab"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}'
            f"</tbody></table>{note}")
