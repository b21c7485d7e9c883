"""The group page ``OUT_DIR/report.html``: plots inline, tables as linked TSVs."""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from isyb_dask.report import images
from isyb_dask.report.data import ReportData
from isyb_dask.report.iqm_plots import iqm_plots, plot_settings, qc_sample
from isyb_dask.report.page import NOT_AVAILABLE, esc, page, section, table_html, tsv_link
from isyb_dask.report.svg import bar_plot
from isyb_dask.report.tables import (exclusion_table, failure_table, iqm_summary, nmi_summary,
                                     subject_page_href, subject_table, write_tsv)

__all__ = ["SECTION_IDS", "group_page_html"]

SECTION_IDS = ("summary", "qc", "failures", "defacing", "surface", "subjects", "provenance")
AUDIT_VARIABLES = ("face_detected", "face_score", "reid_distance", "reid_rank")


def _links(out: Path, items: list[tuple[Path | None, str]]) -> str:
    return '<p class="dl">Download: ' + "".join(tsv_link(p, out, lab) for p, lab in items) + "</p>"


def _summary(data: ReportData) -> str:
    part = data.participants
    if part is None or part.empty:
        return NOT_AVAILABLE
    counts = data.status().value_counts()
    items = [("subjects", len(part))] + [(k, int(v)) for k, v in counts.items()]
    out = '<ul class="counts">' + "".join(
        f"<li><b>{esc(k)}</b>: {v}</li>" for k, v in items) + "</ul>"
    ok = part[data.status() == "ok"]
    demo = []
    if "age" in part and len(ok):
        age = pd.to_numeric(ok["age"], errors="coerce")
        demo.append(("age (included)", f"mean {age.mean():.2f}, SD {age.std():.2f}, "
                                       f"range {age.min():.0f}-{age.max():.0f}"))
    for col in ("sex", "population", "database"):
        if col in part and len(ok):
            vc = ok[col].astype(str).replace("", "n/a").value_counts()
            demo.append((f"{col} (included)", ", ".join(f"{k}: {v}" for k, v in vc.items())))
    if demo:
        out += "<ul>" + "".join(f"<li><b>{esc(k)}</b>: {esc(v)}</li>" for k, v in demo) + "</ul>"
    return out


def _qc(data: ReportData) -> str:
    out, settings = data.out_dir, plot_settings(data.attrs)
    sample = qc_sample(data)
    parts = [f"<p>Each point is one subject with IQMs (status ok, partial or excluded), "
             f"spread sideways at random; hover a point for its label. Solid line: mean; dashed: "
             f"mean &plusmn; {settings.sd_limit:g} SD (IQMs screened by the SD rule); red line: "
             f"mean-FD limit. Red: excluded (filled: by this IQM; ring: by another rule), a "
             f"click opens the subject's page.</p>"]
    for modality, frame, title in (("T1w", data.qc_anat, "T1w"), ("bold", data.qc_func, "BOLD")):
        plots = iqm_plots(data, modality, settings)
        summary = iqm_summary(frame, sample)
        spath = write_tsv(summary, out, f"iqm_summary_{modality}.tsv") if summary is not None \
            else None
        parts.append(f"<h3>{title} IQMs</h3>")
        parts.append(f'<div class="plots">{"".join(plots)}</div>' if plots else NOT_AVAILABLE)
        full = out / f"group_{modality}.tsv"
        parts.append(_links(out, [(full, f"{full.name} (all IQMs)"),
                                  (spath, f"IQM summary ({title})")]))
    figs = [out / "figures" / f"qc_{m}.png" for m in ("T1w", "bold")]
    parts.append('<p class="dl">Static figures: ' + " ".join(
        f'<a href="{html.escape("figures/" + p.name)}">{esc(p.name)}</a>'
        for p in figs if p.is_file()) + "</p>")
    return "".join(parts)


def _failures(data: ReportData, links: Mapping[str, str]) -> str:
    out = data.out_dir
    fails = failure_table(data)
    excl = exclusion_table(data)
    fpath = write_tsv(fails, out, "failures.tsv")
    epath = write_tsv(excl, out, "exclusions.tsv")
    trig = out / "group_qc_exclusions.tsv"
    return ("<h3>Failed, partial, excluded and dropped subjects</h3>"
            + table_html(fails, links=dict(links), row_class="kind", max_rows=40)
            + "<h3>Exclusions</h3>" + table_html(excl, links=dict(links), max_rows=40)
            + _links(out, [(fpath, "failures.tsv"), (epath, "exclusions.tsv"),
                           (trig if trig.is_file() else None, "group_qc_exclusions.tsv "
                            "(one row per trigger)")]))


def _audit(data: ReportData) -> str:
    ds = data.deface
    if ds is None or not any(v in ds for v in AUDIT_VARIABLES):
        return ("<p>Face detection and re-identification audit: not available (the store has "
                "no <code>face_detected</code> / <code>reid_rank</code> variables).</p>")
    parts = []
    for var, title, fn in (("face_detected", "Face detected after defacing",
                            lambda a: a > 0.5),
                           ("reid_rank", "Rank-1 re-identification", lambda a: a == 1)):
        if var not in ds:
            continue
        arr = ds[var].transpose("subject", "template").values.astype(float)
        rates = [(t, float(np.mean(fn(col[np.isfinite(col)]))) if np.isfinite(col).any()
                  else float("nan")) for t, col in zip(data.templates, arr.T)]
        suffix = " (rate per template)"
        if var == "reid_rank":
            rates, suffix = _against_chance(rates, arr)
        parts.append(bar_plot(rates, title + suffix))
    extra = ""
    if data.deface_audit is not None:
        path = write_tsv(data.deface_audit, data.out_dir, "deface_audit.tsv")
        extra = table_html(data.deface_audit, max_rows=20) + _links(
            data.out_dir, [(path, "deface_audit.tsv")])
    return ('<h3>Defacing audit</h3><div class="plots">' + "".join(parts) + "</div>" + extra)


def _against_chance(rates: list[tuple[str, float]], ranks: np.ndarray
                    ) -> tuple[list[tuple[str, float]], str]:
    """Rank-1 rates with the chance level in the title; no rate from fewer than 2 subjects.

    Each subject is ranked among the N subjects ranked for the template, so chance is 1/N:
    with one subject every rank is 1 and a "100 %" bar would say nothing.
    """
    counts = np.isfinite(ranks).sum(axis=0)
    rates = [(t, r if n >= 2 else float("nan")) for (t, r), n in zip(rates, counts)]
    sizes = sorted({int(n) for n in counts if n >= 2})
    # short enough for the plot's 300 px title line
    if not sizes:
        return rates, " (needs >= 2 subjects)"
    if len(sizes) == 1:
        return rates, f" (chance 1/{sizes[0]} = {100.0 / sizes[0]:.1f}%)"
    return rates, f" (chance 1/{sizes[-1]} to 1/{sizes[0]})"


def _defacing(data: ReportData) -> str:
    out = data.out_dir
    ok = [s for s in data.subjects if data.status().get(s) == "ok"]
    nmi = nmi_summary(data, ok)
    npath = write_tsv(nmi, out, "nmi_summary.tsv") if nmi is not None else None
    body = ["<h3>NMI per template (included subjects)</h3>", table_html(nmi),
            _links(out, [(npath, "nmi_summary.tsv")] + [
                (out / f, f) for f in ("anova_mixed.tsv", "anova_overlapping.tsv",
                                       "anova_within.tsv", "table1.tsv")])]
    fig6 = out / "figures" / "nmi_templates.png"
    body.append("<h3>Figure 6</h3>" + (
        f'<figure>{images.img_tag(fig6, "Figure 6")}<figcaption>NMI of the removed face per '
        f"template and database; brackets give the Table 1 comparisons.</figcaption></figure>"
        if fig6.is_file() else NOT_AVAILABLE))
    skipped = data.stats_attrs.get("skipped")
    if skipped:
        body.append(f"<p>Statistics skipped: {esc(skipped)}</p>")
    body.append(_audit(data))
    return "".join(body)


def _omitted(data: ReportData) -> dict[str, str]:
    if "group" not in data.groups:
        return {}
    from isyb_dask.io.store import open_group
    from isyb_dask.metrics.figures import omitted_metrics

    group = open_group(data.store, "group")[["mean"]].load()
    missing = None
    if "surface" in data.groups and data.participants is not None:
        surf = open_group(data.store, "surface")
        if "missing" in surf:
            ok = [s for s in data.subjects if data.status().get(s) == "ok"]
            missing = surf["missing"].sel(subject=ok).load() if ok else None
    return omitted_metrics(group, missing)


def _surface(data: ReportData) -> str:
    figdir = data.out_dir / "figures"
    omitted = _omitted(data)
    note = ("<p>No row for: " + "; ".join(f"<b>{esc(m)}</b> ({esc(r)})"
                                         for m, r in omitted.items()) + ".</p>") if omitted else ""
    body = []
    for name, label in (("group_mean_maps", "Figure 3: group mean"),
                        ("group_sd_maps", "Figure 4: group SD")):
        p = figdir / f"{name}.png"
        body.append(f'<figure><a href="figures/{esc(p.name)}">{images.img_tag(p, label)}</a>'
                    f"<figcaption>{esc(label)} of each metric on the inflated fsLR 32k surface; "
                    f"one colour scale per row (2nd-98th percentile), units on the colour bar; "
                    f"click for the full-resolution PNG.</figcaption>{note}</figure>"
                    if p.is_file() else f"<h3>{esc(label)}</h3>{NOT_AVAILABLE}")
    if "stats" in data.groups:
        from isyb_dask.io.store import open_group

        st = open_group(data.store, "stats")
        if "vertex_p" in st:
            frac = (st["vertex_p"] < 0.05).mean("vertex").to_pandas()
            body.append("<h3>Vertex-wise group comparison</h3>" + table_html(pd.DataFrame(
                {"metric": frac.index.astype(str), "fraction of vertices p < 0.05": frac.values}))
                + f"<p>factor: {esc(st.attrs.get('vertex_factor', ''))}</p>")
    return "".join(body)


def _subjects(data: ReportData) -> str:
    table = subject_table(data)
    path = write_tsv(table, data.out_dir, "subjects.tsv")
    shown = table.drop(columns="page")
    links = {s: subject_page_href(s) for s in table["subject"]}
    return ('<p>One page per subject (images, carpet plot, maps, IQMs against the group).</p>'
            '<div class="scroll">' + table_html(shown, links=links, row_class="status",
                                                max_rows=len(shown) or 1)
            + "</div>" + _links(data.out_dir, [(path, "subjects.tsv")]))


def _provenance(attrs: Mapping[str, object]) -> str:
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
    return '<dl class="prov">' + "".join(rows) + "</dl>"


def group_page_html(data: ReportData) -> str:
    """The group page as one HTML string (writes its TSVs under ``report_tables/``).

    Parameters
    ----------
    data
        Loaded store (:func:`isyb_dask.report.data.load_report_data`).

    Returns
    -------
    str
        Complete HTML document with the sections :data:`SECTION_IDS`.
    """
    links = {s: subject_page_href(s) for s in data.subjects}
    body = "".join([
        section("summary", "Study summary", _summary(data)),
        section("qc", "Image quality metrics", _qc(data)),
        section("failures", "Failures and exclusions", _failures(data, links)),
        section("defacing", "Defacing results", _defacing(data)),
        section("surface", "Surface group maps (Figures 3-4)", _surface(data)),
        section("subjects", "Subjects", _subjects(data)),
        section("provenance", "Run provenance", _provenance(data.attrs)),
    ])
    return page("isyb-dask study report", [(f"#{s}", s) for s in SECTION_IDS], body)

