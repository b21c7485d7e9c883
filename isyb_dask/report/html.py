"""The study report: ``OUT_DIR/report.html`` plus one page per subject.

``write_report(out_dir, store_path)`` is what the group level calls. The group page holds
inline SVG plots and small tables, links every larger table as a TSV under
``OUT_DIR/report_tables/`` and links each subject's page ``sub-X/sub-X_report.html``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from isyb_dask.report.data import load_report_data
from isyb_dask.report.group_page import SECTION_IDS, group_page_html
from isyb_dask.report.page import esc, page
from isyb_dask.report.subject_page import subject_page_path, write_subject_page

log = logging.getLogger(__name__)

__all__ = ["SECTION_IDS", "write_report", "write_subject_pages"]


def _fd_threshold(attrs: dict) -> float:
    import json

    from isyb_dask.qc.config import QCConfig

    try:
        cfg = attrs.get("config")
        qc = (json.loads(cfg) if isinstance(cfg, str) else dict(cfg or {})).get("qc", {}) or {}
        return float(qc.get("fd_threshold", QCConfig().fd_threshold))
    except (ValueError, TypeError, AttributeError):
        return QCConfig().fd_threshold


def _page_or_note(data, sub: str, fd: float) -> str | None:
    """Write one subject page; on error write a page that says so and return the message."""
    try:
        write_subject_page(data, sub, fd_threshold=fd)
        return None
    except Exception as exc:  # noqa: BLE001 - one subject must not stop the report
        msg = f"{type(exc).__name__}: {exc}"
        path = subject_page_path(data.out_dir, sub)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page(f"{sub}: isyb-dask subject report",
                             [("../report.html#subjects", "group report")],
                             f'<p class="na">This page could not be built: {esc(msg)}</p>'),
                        encoding="utf-8")
        return msg


def write_subject_pages(data, subjects: list[str], *, fd_threshold: float = 0.2,
                        workers: int = 1) -> dict[str, str]:
    """Write the pages of ``subjects`` (in ``workers`` processes when > 1).

    Returns
    -------
    dict
        Subject -> error message of the pages that could not be completed.
    """
    errors: dict[str, str] = {}
    if workers > 1 and len(subjects) > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = pool.map(_page_or_note, [data] * len(subjects), subjects,
                               [fd_threshold] * len(subjects), chunksize=8)
            errors = {s: m for s, m in zip(subjects, results) if m}
    else:
        errors = {s: m for s in subjects if (m := _page_or_note(data, s, fd_threshold))}
    for sub, msg in errors.items():
        log.warning("report: page of %s incomplete: %s", sub, msg)
    return errors


def write_report(out_dir: str | Path, store_path: str | Path, *,
                 subject_pages: bool = True, workers: int = 1,
                 cache_dir: str | Path | None = None) -> Path:
    """Write ``OUT_DIR/report.html`` and (by default) every subject's page.

    Parameters
    ----------
    out_dir
        Run output directory (figures, TSVs and derivatives are read from it).
    store_path
        ``results.zarr``; missing groups or files are shown as "not available".
    subject_pages
        Also write ``sub-X/sub-X_report.html`` for every subject of the store (their
        pictures are redrawn only when older than their inputs; about 1-1.5 s of CPU per
        subject the first time, 0.01 s after).
    workers
        Processes drawing subject pages.
    cache_dir
        The run's cache directory (``--cache-dir``), where the cached bridge to
        MNI152NLin6Asym is found for the normalisation panel; None = the default cache.

    Returns
    -------
    Path
        The group page.
    """
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    data = load_report_data(out_dir, store_path, cache_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if subject_pages:
        write_subject_pages(data, data.subjects, fd_threshold=_fd_threshold(data.attrs),
                            workers=workers)
    out = out_dir / "report.html"
    out.write_text(group_page_html(data), encoding="utf-8")
    log.info("report: %s (%d subjects) in %.1f s", out, len(data.subjects),
             time.perf_counter() - t0)
    return out
