"""The study report: one self-contained ``OUT_DIR/report.html``."""

from __future__ import annotations

import html
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import zarr

from isyb_dask.io.store import list_groups, open_group
from isyb_dask.report import images
from isyb_dask.report.sections import (
    NOT_AVAILABLE,
    describe,
    figures_body,
    provenance_body,
    section,
    summary_body,
    table_html,
)

log = logging.getLogger(__name__)

SECTION_IDS = ("summary", "qc", "defacing", "surface", "provenance")
N_BEFORE_AFTER = 3

_CSS = """
body{font-family:system-ui,sans-serif;margin:0 auto;max-width:1200px;padding:1em;color:#222}
h1{border-bottom:2px solid #446}h2{color:#335;border-bottom:1px solid #ccd;margin-top:1.6em}
table.tab{border-collapse:collapse;font-size:0.85em;margin:0.5em 0}
table.tab td,table.tab th{border:1px solid #ccd;padding:2px 6px;text-align:left}
table.tab td.num{text-align:right}
table.tab th{background:#eef}img.fig{max-width:100%;border:1px solid #ddd}
.na{color:#a33;font-style:italic}pre{white-space:pre-wrap;font-size:0.8em;margin:0}
nav a{margin-right:1em}.wrap{overflow-x:auto}figure{margin:0.8em 0}
figcaption{font-size:0.85em;color:#555}
"""

# Records script errors and image decoding in body data attributes (checked by the tests).
_JS = """
window.__errors=[];
window.addEventListener('error',function(e){window.__errors.push(String(e.message||e));});
window.addEventListener('load',function(){
 var imgs=document.images,ok=0;
 for(var i=0;i<imgs.length;i++){if(imgs[i].complete&&imgs[i].naturalWidth>0){ok++;}}
 document.body.setAttribute('data-images',String(imgs.length));
 document.body.setAttribute('data-images-ok',String(ok));
 document.body.setAttribute('data-sections',String(document.querySelectorAll('section').length));
 document.body.setAttribute('data-js-errors',String(window.__errors.length));
 document.body.setAttribute('data-rendered','1');
});
"""


def _frame(store: Path, name: str, groups: list[str]) -> pd.DataFrame | None:
    if name not in groups:
        return None
    ds = open_group(store, name).load()
    cols = [v for v in ds.data_vars if ds[v].dims == ("subject",)]
    if not cols:
        return None
    frame = pd.DataFrame({c: ds[c].values for c in cols},
                         index=pd.Index([str(s) for s in ds["subject"].values], name="subject"))
    for c in frame.columns:
        if frame[c].dtype.kind not in "fiub":
            frame[c] = frame[c].map(str)
    return frame


def _tsv(path: Path) -> pd.DataFrame | None:
    try:
        return pd.read_csv(path, sep="\t") if path.is_file() else None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        log.warning("report: cannot read %s: %s", path, exc)
        return None


def _qc_body(out_dir: Path, store: Path, groups: list[str], used: set[Path]) -> str:
    parts = []
    for name, title in (("qc_anat", "T1w IQMs"), ("qc_func", "BOLD IQMs")):
        parts.append(f"<h3>{title} (all subjects)</h3>"
                     + table_html(describe(_frame(store, name, groups)), index=True))
    for tsv in sorted(out_dir.glob("group_*.tsv")):
        parts.append(f"<h3>{html.escape(tsv.name)}</h3>" + table_html(_tsv(tsv), max_rows=30))
    figs = sorted(p for p in (out_dir / "figures").glob("*.png") if p not in used)
    parts.append("<h3>QC figures</h3>" + figures_body(
        [(p.stem, images.img_tag(p, p.stem)) for p in figs]))
    return "".join(parts)


def _nmi_summary(store: Path, groups: list[str], part: pd.DataFrame | None) -> str:
    if "deface" not in groups:
        return NOT_AVAILABLE
    ds = open_group(store, "deface")
    if "nmi" not in ds:
        return NOT_AVAILABLE
    nmi = ds["nmi"].transpose("subject", "template").values
    subs = [str(s) for s in ds["subject"].values]
    if part is not None and "status" in part:
        keep = np.array([part["status"].get(s, "") == "ok" for s in subs])
        nmi = nmi[keep]
    frame = pd.DataFrame(nmi, columns=[str(t) for t in ds["template"].values])
    extra = ""
    if "seconds" in ds:
        secs = ds["seconds"].mean("subject").to_pandas()
        extra = table_html(pd.DataFrame({"mean seconds": secs}), index=True)
    return "<h3>NMI per template (included subjects)</h3>" + table_html(
        describe(frame), index=True) + extra


def _before_after(out_dir: Path, store: Path, groups: list[str],
                  part: pd.DataFrame | None, attrs: dict) -> str:
    bids = attrs.get("bids_dir")
    if not bids or "deface" not in groups or part is None:
        return NOT_AVAILABLE
    templates = [str(t) for t in open_group(store, "deface")["template"].values]
    ok = [s for s in part.index if part["status"].get(s) == "ok"] if "status" in part else []
    tags = []
    for sub in ok:
        if len(tags) >= N_BEFORE_AFTER:
            break
        t1 = images.find_t1w(Path(str(bids)), sub)
        defaced = [(t, images.find_defaced(out_dir, sub, t)) for t in templates]
        defaced = [(t, p) for t, p in defaced if p is not None]
        if t1 is None or not defaced:
            continue
        try:
            png = images.render_before_after(t1, defaced)
        except Exception as exc:  # noqa: BLE001 - any unreadable image: report still renders
            log.warning("report: no before/after picture for %s: %s", sub, exc)
            continue
        tags.append((f"{sub}: mid-sagittal slice before and after face masking",
                     f'<img class="fig" alt="{sub} before/after" src="{images.data_uri(png)}">'))
    return figures_body(tags)


def write_report(out_dir: str | Path, store_path: str | Path) -> Path:
    """Write ``OUT_DIR/report.html``, a single self-contained page.

    Parameters
    ----------
    out_dir
        Run output directory (figures, TSVs and defaced derivatives are read from it).
    store_path
        ``results.zarr``.  Missing groups or files are shown as "not available".

    Returns
    -------
    Path
        The report file.
    """
    out_dir, store = Path(out_dir), Path(store_path)
    groups = list_groups(store) if store.exists() else []
    attrs = dict(zarr.open_group(str(store), mode="r").attrs) if store.exists() else {}
    part = _frame(store, "participants", groups)
    figdir = out_dir / "figures"
    fig6 = figdir / "nmi_templates.png"
    maps = sorted(figdir.glob("group_*_maps.png"))
    used = {fig6, *maps}

    defacing = _nmi_summary(store, groups, part)
    for name, title in (("anova_mixed.tsv", "ANOVA, mixed design (database between)"),
                        ("anova_overlapping.tsv", "ANOVA, overlapping ISYB-1/ISYB-2/ISYB"),
                        ("anova_within.tsv", "RM-ANOVA, template only")):
        defacing += f"<h3>{title}</h3>" + table_html(_tsv(out_dir / name))
    defacing += "<h3>Table 1: pairwise comparisons of template EMMs</h3>" + table_html(
        _tsv(out_dir / "table1.tsv"))
    defacing += "<h3>Figure 6</h3>" + figures_body(
        [("NMI per template and database", images.img_tag(fig6, "Figure 6"))]
        if fig6.is_file() else [])
    defacing += "<h3>Before / after</h3>" + _before_after(out_dir, store, groups, part, attrs)
    from isyb_dask.deface.reid import audit_html

    audit = audit_html(out_dir)
    if audit:
        defacing += "<h3>Face audit: renders, detection and re-identification</h3>" + audit

    surface = figures_body([(p.stem, images.img_tag(p, p.stem)) for p in maps])
    if "stats" in groups:
        st = open_group(store, "stats")
        if "vertex_p" in st:
            frac = (st["vertex_p"] < 0.05).mean("vertex").to_pandas()
            surface += "<h3>Vertex-wise group comparison</h3>" + table_html(
                pd.DataFrame({"fraction of vertices p < 0.05": frac}), index=True)
            surface += f"<p>factor: {html.escape(str(st.attrs.get('vertex_factor', '')))}</p>"

    body = "".join([
        section("summary", "Study summary", summary_body(part)),
        section("qc", "Quality control", _qc_body(out_dir, store, groups, used)),
        section("defacing", "Defacing results", defacing),
        section("surface", "Surface group maps", surface),
        section("provenance", "Run provenance", provenance_body(attrs)),
    ])
    nav = "".join(f'<a href="#{s}">{s}</a>' for s in SECTION_IDS)
    page = (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>isyb-dask report</title><style>{_CSS}</style>"
            f"<script>{_JS}</script></head><body><h1>isyb-dask study report</h1>"
            f"<nav>{nav}</nav>{body}</body></html>")
    out = out_dir / "report.html"
    out.write_text(page, encoding="utf-8")
    return out
