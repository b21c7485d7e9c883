"""Per-subject pages ``OUT_DIR/sub-X/sub-X_report.html``.

A page shows, when the files exist: the defaced renders per template, brain mask and tissue
contours on the T1w, the template-to-subject registration check, the T1w-to-MNI
normalisation check, the BOLD carpet plot, the FA/MD/CBF/ALFF/fALFF/ReHo maps and the
subject's IQMs against the group. Pictures are PNGs in ``sub-X/figures/`` (Agg, 72 dpi),
redrawn only when older than their inputs. A failed or partial subject's page starts with
what failed.
"""

from __future__ import annotations

import functools
import html
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from isyb_dask.report import subject_figures as sf
from isyb_dask.report.data import ReportData, text_list
from isyb_dask.report.page import NOT_AVAILABLE, esc, page, rel, section
from isyb_dask.report.paths import SubjectFiles, subject_files, template_head
from isyb_dask.report.svg import fmt, position_plot

log = logging.getLogger(__name__)

__all__ = ["SUBJECT_SECTIONS", "write_subject_page", "subject_page_path"]

SUBJECT_SECTIONS = ("status", "defacing", "anatomy", "registration", "bold", "maps", "iqms")
_MAP_UNITS = {"FA": "1", "MD": "mm2/s", "CBF": "ml/100g/min", "ALFF": "a.u.",
              "fALFF": "1", "ReHo": "Kendall's W"}


def subject_page_path(out_dir: Path, subject: str) -> Path:
    """``OUT_DIR/sub-X/sub-X_report.html``."""
    return Path(out_dir) / subject / f"{subject}_report.html"


def _fresh(out: Path, sources: Sequence[Path]) -> bool:
    if not out.is_file():
        return False
    mtime = out.stat().st_mtime
    return all(p.stat().st_mtime <= mtime for p in sources if p.is_file())


def _picture(out: Path, sources: Sequence[Path], draw: Callable[[Path], Path], alt: str,
             page_dir: Path) -> str:
    """Draw (unless up to date) and return an ``<img>``; a drawing error is shown, not raised."""
    try:
        if not _fresh(out, sources):
            draw(out)
    except Exception as exc:  # noqa: BLE001 - one bad image must not stop the report
        log.warning("report: %s: %s", out.name, exc)
        return f'<p class="na">{esc(alt)}: could not be drawn ({esc(type(exc).__name__)}: ' \
               f"{esc(exc)})</p>"
    return f'<img class="fig" alt="{esc(alt)}" src="{rel(out, page_dir)}">'


MNI_T1 = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"


@functools.lru_cache(maxsize=1)
def _mni_template():
    """The MNI152 2009a T1 shipped with nilearn (the atlas's MNI space), without importing
    nilearn (its import costs seconds)."""
    import importlib.util

    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("nilearn (MNI152 template) is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / MNI_T1
    return sf.load_ras(path)


@functools.lru_cache(maxsize=2)
def _nlin6_template(cache_dir: Path | None = None):
    """The 2009aSym T1 carried into MNI152NLin6Asym through the cached bridge (2 mm FSL box).

    The subjects' standard-space maps live in NLin6Asym (the S1200 surfaces' space), which is
    reached from the 2009aSym T1 by the bridge of :mod:`isyb_dask.anat.bridge`; the FSL T1
    itself is not shipped. ``None`` when the bridge is not in ``cache_dir`` (the run's
    cache; None = the default cache): the report never computes it.
    """
    import nibabel as nib

    from isyb_dask.anat.bridge import NLIN6_GRID, cached_bridge, sample_volume, template_maps
    from isyb_dask.anat.warpfield import grid_points

    bridge = cached_bridge(cache_dir)
    if bridge is None:
        return None
    shape, affine = NLIN6_GRID
    pts = grid_points(shape, affine).reshape(-1, 3)
    t1, t1_affine = template_maps(1.0)["t1"]
    values = sample_volume(t1, t1_affine, bridge.to_2009a(pts))
    return nib.Nifti1Image(values.reshape(shape).astype(np.float32), affine)


def _status(data: ReportData, subject: str, files: SubjectFiles, page_dir: Path) -> str:
    part = data.participants
    row = part.loc[subject] if part is not None and subject in part.index else pd.Series()
    status = str(row.get("status", "unknown"))
    out = [f'<p>Status: <b class="st-{esc(status)}">{esc(status)}</b></p>']
    error = str(row.get("error", "") or "")
    stages = text_list(row.get("failed_stages", ""))
    if status in ("failed", "partial") or error:
        stage = ", ".join(stages) or "not recorded"
        out.append(f'<div class="fail"><p><b>What failed</b>: stage {esc(stage)}</p>'
                   f"<pre>{esc(error or 'no message recorded')}</pre></div>")
    if status == "excluded":
        out.append(f"<p>Excluded from the group analyses: "
                   f"{esc(row.get('exclusion_reason', ''))} "
                   f"(rule {esc(row.get('exclusion_rule', ''))})</p>")
    if subject in text_list(data.stats_attrs.get("dropped_incomplete")):
        out.append("<p>Dropped from the NMI statistics: a template gave no NMI value.</p>")
    if files.log is not None:
        out.append(f'<p><a href="{rel(files.log, page_dir)}">processing log</a></p>')
    return "".join(out)


def _defacing(data: ReportData, subject: str, files: SubjectFiles, page_dir: Path) -> str:
    if not data.templates:
        return NOT_AVAILABLE
    rows = []
    ds = data.deface
    for t in data.templates:
        vals = []
        if ds is not None and subject in set(map(str, ds["subject"].values)):
            for var in ("nmi", "face_detected", "face_score", "face_score_deep", "reid_distance",
                        "reid_rank"):
                if var in ds:
                    vals.append(f"{var} {fmt(float(ds[var].sel(subject=subject, template=t)))}")
        img = (f'<img class="fig" alt="{esc(t)} render" src="{rel(files.renders[t], page_dir)}">'
               if t in files.renders else '<p class="na">render not available</p>')
        rows.append(f"<figure>{img}<figcaption>{esc(t)}: {esc(', '.join(vals))}"
                    f"</figcaption></figure>")
    return "".join(rows)


def _anatomy(files: SubjectFiles, figdir: Path, page_dir: Path, subject: str) -> str:
    if files.t1w is None or (files.brain_mask is None and not files.probseg):
        return NOT_AVAILABLE
    maps = {k: v for k, v in (*((f"{t} > 0.5", p) for t, p in files.probseg.items()),
                              ("brain mask", files.brain_mask))  # mask drawn last, on top
            if v is not None}

    def draw(out: Path) -> Path:
        t1 = sf.load_ras(files.t1w)
        arrays = {k: np.asarray(sf.load_ras(p).dataobj, dtype=np.float32)
                  for k, p in maps.items()}
        arrays = {k: a for k, a in arrays.items() if a.shape == t1.shape[:3]}
        return sf.contour_mosaic(t1, arrays, out, title="T1w: brain mask and tissue classes")

    return _picture(figdir / f"{subject}_desc-segmentation_report.png",
                    [files.t1w, *maps.values()], draw, "segmentation mosaic", page_dir)


def _registration(data: ReportData, files: SubjectFiles, figdir: Path, page_dir: Path,
                  subject: str) -> str:
    parts = ["<h3>Template to subject</h3>"]
    found = False
    for t, defaced in files.defaced.items():
        head = template_head(defaced)
        if head is None or files.t1w is None:
            continue
        found = True
        head_path, matrix = head

        def draw(out: Path, head_path=head_path, matrix=matrix) -> Path:
            return sf.edge_check(sf.load_ras(files.t1w), sf.load_ras(head_path), out,
                                 matrix=np.asarray(matrix),
                                 title=f"template {t} edges (red) over the T1w")

        label = "".join(c for c in t if c.isalnum())
        parts.append(_picture(figdir / f"{subject}_desc-reg{label}_report.png",
                              [files.t1w, defaced, head_path], draw, f"registration {t}",
                              page_dir))
    if not found:
        parts.append(NOT_AVAILABLE)
    parts.append("<h3>T1w to MNI152 (normalisation)</h3>")
    moving = files.mni_t1w or files.mni_gm
    if moving is None:
        parts.append(NOT_AVAILABLE)
        return "".join(parts)

    def draw_mni(out: Path) -> Path:
        what = "T1w" if files.mni_t1w else "GM probability"
        space = files.mni_space or "MNI"
        reference = _nlin6_template(data.cache_dir) if space == "MNI152NLin6Asym" else None
        if reference is not None:  # edges of the space the map is in
            return sf.edge_check(sf.load_ras(moving), reference, out,
                                 title=f"subject {what} in {space}, template T1 edges (red; "
                                       "2009aSym T1 through the bridge)")
        return sf.edge_check(sf.load_ras(moving), _mni_template(), out,
                             title=f"subject {what} in {space}, MNI152NLin2009aSym T1 "
                                   "edges (red)")

    parts.append(_picture(figdir / f"{subject}_desc-normalisation_report.png", [moving],
                          draw_mni, "normalisation check", page_dir))
    return "".join(parts)


def _bold(files: SubjectFiles, figdir: Path, page_dir: Path, subject: str,
          fd_threshold: float) -> str:
    if files.bold is None or files.confounds is None or files.bold_mask is None:
        return NOT_AVAILABLE

    def draw(out: Path) -> Path:
        import nibabel as nib

        bold = np.asarray(nib.load(str(files.bold)).dataobj, dtype=np.float32)
        mask = np.asarray(nib.load(str(files.bold_mask)).dataobj) > 0
        conf = pd.read_csv(files.confounds, sep="\t", na_values="n/a")
        return sf.carpet_plot(bold, mask, conf, out, fd_threshold=fd_threshold)

    return _picture(figdir / f"{subject}_desc-carpet_report.png",
                    [files.bold, files.bold_mask, files.confounds], draw, "carpet plot",
                    page_dir) + ('<p class="dl"><a href="' + rel(files.confounds, page_dir)
                                 + '" download>confounds TSV</a></p>')


def _maps(files: SubjectFiles, figdir: Path, page_dir: Path, subject: str) -> str:
    if not files.maps:
        return NOT_AVAILABLE
    absent = [m for m in _MAP_UNITS if m not in files.maps]

    def draw(out: Path) -> Path:
        return sf.maps_mosaic([(m, sf.load_ras(p), _MAP_UNITS[m]) for m, p in files.maps.items()],
                              out)

    note = f"<p>Not available: {esc(', '.join(absent))}</p>" if absent else ""
    return _picture(figdir / f"{subject}_desc-maps_report.png", list(files.maps.values()), draw,
                    "metric maps", page_dir) + note


def _iqms(data: ReportData, subject: str) -> str:
    from isyb_dask.report.iqm_plots import (EXTRA_BOLD, EXTRA_T1W, plot_settings, plotted_iqms,
                                            qc_sample)

    settings = plot_settings(data.attrs)
    sample = qc_sample(data)
    out = []
    for title, frame, names in (
            ("T1w", data.qc_anat, plotted_iqms(data.qc_anat, settings.anat_sd_metrics, EXTRA_T1W)),
            ("BOLD", data.qc_func, plotted_iqms(data.qc_func, settings.func_sd_metrics,
                                                EXTRA_BOLD))):
        if frame is None or not names or subject not in frame.index:
            out.append(f"<h3>{title}</h3>{NOT_AVAILABLE}")
            continue
        group = frame.reindex(sample)
        rows = []
        for n in names:
            val = float(pd.to_numeric(pd.Series([frame.at[subject, n]]), errors="coerce")[0])
            rows.append(f"<tr><td>{esc(n)}</td><td class=\"num\">{fmt(val)}</td><td>"
                        + position_plot(pd.to_numeric(group[n], errors="coerce").to_numpy(float),
                                        val, n) + "</td></tr>")
        out.append(f"<h3>{title}</h3><table class=\"tab\"><thead><tr><th>IQM</th><th>value</th>"
                   f"<th>group (box: quartiles, whiskers: 5-95%, red: this subject)</th></tr>"
                   f"</thead><tbody>{''.join(rows)}</tbody></table>")
    return "".join(out)


def write_subject_page(data: ReportData, subject: str, *, fd_threshold: float = 0.2) -> Path:
    """Draw a subject's pictures (when out of date) and write its page.

    Parameters
    ----------
    data
        Loaded store.
    subject
        ``sub-X``.
    fd_threshold
        FD (mm) marking spikes on the carpet plot.

    Returns
    -------
    Path
        ``OUT_DIR/sub-X/sub-X_report.html``.
    """
    out_dir = data.out_dir
    path = subject_page_path(out_dir, subject)
    page_dir = path.parent
    figdir = page_dir / "figures"
    bids = data.attrs.get("bids_dir")
    files = subject_files(out_dir, subject, data.templates, Path(str(bids)) if bids else None)
    body = "".join([
        section("status", "Processing status", _status(data, subject, files, page_dir)),
        section("defacing", "Defaced renders per template",
                _defacing(data, subject, files, page_dir)),
        section("anatomy", "Brain mask and tissue segmentation",
                _anatomy(files, figdir, page_dir, subject)),
        section("registration", "Registration checks",
                _registration(data, files, figdir, page_dir, subject)),
        section("bold", "BOLD carpet plot (FD, DVARS, spikes)",
                _bold(files, figdir, page_dir, subject, fd_threshold)),
        section("maps", "FA, MD, CBF, ALFF, fALFF and ReHo maps",
                _maps(files, figdir, page_dir, subject)),
        section("iqms", "IQMs against the group", _iqms(data, subject)),
    ])
    nav = [(html.escape("../report.html#subjects"), "group report")] + [
        (f"#{s}", s) for s in SUBJECT_SECTIONS]
    page_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(page(f"{subject}: isyb-dask subject report", nav, body), encoding="utf-8")
    return path
