"""Group-level re-identification test from face descriptors of renders.

For every defaced render (subject s, template T) the originals of all N subjects are ranked
by the distance of their descriptors to the defaced one (:func:`isyb_dask.deface.audit.
head_distance`, mean over views); ``reid_rank`` is the rank of subject s (1 = the true
subject is the closest; ties count against the true subject). Per template the rank-1 rate
k/n is reported with its exact (Clopper-Pearson) 95 % confidence interval and the one-sided
binomial test against chance 1/N (``scipy.stats.binomtest``): a rate compatible with chance
means the defaced faces cannot be matched back to their owners better than by guessing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from scipy import stats

from isyb_dask.deface.audit import embeddings_path, head_distance

__all__ = [
    "AUDIT_COLUMNS",
    "load_embeddings",
    "reidentification_table",
    "rank1_summary",
    "audit_dataset",
    "run_reid_audit",
]

AUDIT_COLUMNS = ("template", "n", "n_detected", "detection_rate", "rank1", "rank1_rate",
                 "ci_low", "ci_high", "chance", "p_value", "median_reid_distance", "n_judged")


def load_embeddings(
    out_dir: str | os.PathLike[str], subjects: Sequence[str]
) -> tuple[dict[str, np.ndarray], dict[tuple[str, str], np.ndarray]]:
    """Read the per-subject descriptor files written by :func:`audit_defaced`.

    Returns
    -------
    originals, defaced
        ``{subject: (n_views, 128)}`` and ``{(subject, template): (n_views, 128)}``;
        subjects without a file are left out.
    """
    originals: dict[str, np.ndarray] = {}
    defaced: dict[tuple[str, str], np.ndarray] = {}
    for s in subjects:
        path = embeddings_path(out_dir, s)
        if not path.is_file():
            continue
        with np.load(path) as z:
            for key in z.files:
                if key == "original":
                    originals[s] = np.asarray(z[key], dtype=np.float64)
                elif key.startswith("defaced"):
                    defaced[(s, key[len("defaced"):])] = np.asarray(z[key], dtype=np.float64)
    return originals, defaced


def reidentification_table(
    originals: Mapping[str, np.ndarray], defaced: Mapping[tuple[str, str], np.ndarray]
) -> pd.DataFrame:
    """Rank of the true subject among all originals for every defaced render.

    Parameters
    ----------
    originals
        ``{subject: descriptors (n_views, 128)}`` of the original renders (the gallery).
    defaced
        ``{(subject, template): descriptors}`` of the defaced renders (the probes); a probe
        whose subject has no original is skipped.

    Returns
    -------
    pandas.DataFrame
        Columns ``subject``, ``template``, ``reid_distance`` (to its own original),
        ``reid_rank`` (1..N), ``n_candidates`` (N), ``nearest`` (closest original).
    """
    names = list(originals)
    rows = []
    for (subj, tpl), probe in defaced.items():
        if subj not in originals:
            continue
        dist = np.array([head_distance(probe, originals[n]) for n in names])
        own = dist[names.index(subj)]
        others = np.delete(dist, names.index(subj))
        rows.append({"subject": subj, "template": tpl, "reid_distance": float(own),
                     "reid_rank": int(1 + np.sum(others <= own)), "n_candidates": len(names),
                     "nearest": names[int(np.argmin(dist))]})
    cols = ["subject", "template", "reid_distance", "reid_rank", "n_candidates", "nearest"]
    return pd.DataFrame(rows, columns=cols)


def rank1_summary(
    table: pd.DataFrame, detected: Mapping[tuple[str, str], bool] | None = None,
    confidence: float = 0.95,
    judged: Mapping[tuple[str, str], bool] | None = None,
) -> pd.DataFrame:
    """Per template: rank-1 rate with its Clopper-Pearson interval and test against chance.

    Parameters
    ----------
    table
        :func:`reidentification_table` output.
    detected
        Optional ``{(subject, template): face_detected}`` for the detection rate.
    confidence
        Confidence level of the interval.
    judged
        Optional ``{(subject, template): the original's render shows a face}``. The
        detection rate counts only those pairs (``n_judged`` of them): where the original
        shows no face either, "no face after defacing" says nothing. Default: all judged.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`AUDIT_COLUMNS`; ``chance`` = 1/N, ``p_value`` one-sided (rate > chance).
    """
    rows = []
    for tpl, grp in table.groupby("template", sort=False):
        n = len(grp)
        k = int((grp["reid_rank"] == 1).sum())
        chance = 1.0 / float(grp["n_candidates"].max())
        res = stats.binomtest(k, n, chance, alternative="greater")
        ci = stats.binomtest(k, n, chance).proportion_ci(confidence, method="exact")
        det = [bool(detected[(s, tpl)]) for s in grp["subject"] if (s, tpl) in detected
               and (judged is None or judged.get((s, tpl), True))] \
            if detected is not None else []
        rows.append({"template": tpl, "n": n, "n_judged": len(det),
                     "n_detected": int(sum(det)) if det else 0,
                     "detection_rate": float(np.mean(det)) if det else float("nan"),
                     "rank1": k, "rank1_rate": k / n, "ci_low": float(ci.low),
                     "ci_high": float(ci.high), "chance": chance, "p_value": float(res.pvalue),
                     "median_reid_distance": float(grp["reid_distance"].median())})
    return pd.DataFrame(rows, columns=list(AUDIT_COLUMNS))


def audit_dataset(summary: pd.DataFrame) -> xr.Dataset:
    """The ``deface_audit`` table as variables ``audit_<column>`` over ``audit_template``."""
    coords = {"audit_template": np.array([str(t) for t in summary["template"]], dtype=object)}
    data = {f"audit_{c}": ("audit_template", summary[c].to_numpy(dtype=float))
            for c in AUDIT_COLUMNS[1:]}
    ds = xr.Dataset(data, coords=coords)
    ds.attrs["deface_audit"] = ("re-identification of defaced renders: rank-1 rate among all "
                                "original renders, Clopper-Pearson 95% CI, one-sided binomial "
                                "test against chance 1/N (docs/deface.md)")
    return ds


def run_reid_audit(store_path: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> dict:
    """Group step: ranks, ``reid_rank`` in ``deface``, ``deface_audit`` in ``stats`` and TSV.

    Reads the descriptor files of the store's subjects, writes ``reid_rank`` (per subject and
    template) into the ``deface`` group, merges the ``audit_*`` variables into the ``stats``
    group (run it after the statistics step, which rewrites that group) and writes
    ``OUT/deface_audit.tsv`` and ``OUT/deface_reid.tsv``.

    Returns
    -------
    dict
        ``{"files": [Path], "n_subjects": int}`` (no files when no descriptors exist).
    """
    from isyb_dask.io.store import list_groups, open_group, update_subjects, write_group

    store_path, out_dir = Path(store_path), Path(out_dir)
    deface = open_group(store_path, "deface")
    subjects = [str(s) for s in deface["subject"].values]
    templates = [str(t) for t in deface["template"].values]
    originals, probes = load_embeddings(out_dir, subjects)
    table = reidentification_table(originals, probes)
    if table.empty:
        return {"files": [], "n_subjects": 0}
    detected, judged = {}, {}
    if "face_detected" in deface:
        fd = deface["face_detected"].load()
        of = deface["original_face_score"].load() if "original_face_score" in deface else None
        for s, t in zip(table["subject"], table["template"]):
            if t in templates:
                detected[(s, t)] = bool(fd.sel(subject=s, template=t).values > 0.5)
                if of is not None:  # NaN (older stores): judged; <= 0: no face to hide
                    score = float(of.sel(subject=s, template=t).values)
                    judged[(s, t)] = not score <= 0.0
    summary = rank1_summary(table, detected or None, judged=judged or None)
    rank_rows = {}
    for subj, grp in table.groupby("subject"):
        ranks = np.full(len(templates), np.nan)
        for t, r in zip(grp["template"], grp["reid_rank"]):
            if t in templates:
                ranks[templates.index(t)] = r
        rank_rows[str(subj)] = {"reid_rank": ranks}
    update_subjects(store_path, "deface", rank_rows)  # one open for all subjects (O(N))
    ds = audit_dataset(summary)
    if "stats" in list_groups(store_path):
        current = open_group(store_path, "stats").load()
        current = current.drop_vars([v for v in current.variables if str(v).startswith("audit_")])
        attrs = {**current.attrs, **ds.attrs}
        ds = xr.merge([current, ds], combine_attrs="drop")
        ds.attrs.update(attrs)
    write_group(store_path, "stats", ds)
    files = [out_dir / "deface_audit.tsv", out_dir / "deface_reid.tsv"]
    summary.to_csv(files[0], sep="\t", index=False, float_format="%.6g")
    table.drop(columns=["nearest"]).to_csv(files[1], sep="\t", index=False, float_format="%.6g")
    return {"files": files, "n_subjects": len(originals)}
