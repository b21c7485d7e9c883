"""Group statistics stage: split, ANOVAs, Table 1, vertex-wise maps and Figure 6."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from isyb_dask.errors import InputError
from isyb_dask.io.store import list_groups, open_group, update_participants, write_group
from isyb_dask.stats.anova import ANOVA_COLUMNS, split_plot_anova, stack_overlapping
from isyb_dask.stats.config import StatsConfig
from isyb_dask.stats.figures import plot_nmi_templates
from isyb_dask.stats.posthoc import ALL_LABEL, TABLE1_COLUMNS, pairwise_emm
from isyb_dask.stats.split import assign_split, is_missing
from isyb_dask.stats.vertexwise import vertexwise_between

log = logging.getLogger(__name__)

DESIGNS = ("mixed", "overlapping", "within")


def _text(values) -> np.ndarray:
    """Object array of Python strings (store strings may load as numpy StringDType)."""
    arr = np.asarray(values)
    return np.array([str(v) for v in arr.ravel()], dtype=object).reshape(arr.shape)


def _included(part: xr.Dataset) -> list[str]:
    status = _text(part["status"].values)
    return [str(s) for s, st in zip(part["subject"].values, status) if st in ("ok", "partial")]


def _anova_dataset(tables: dict[str, pd.DataFrame]) -> xr.Dataset:
    effects: list[str] = []
    for tab in tables.values():
        effects += [e for e in tab["effect"] if e not in effects]
    designs = list(tables)
    data = {}
    for col in ANOVA_COLUMNS[1:]:
        arr = np.full((len(designs), len(effects)), np.nan)
        for i, d in enumerate(designs):
            t = tables[d].set_index("effect")
            for j, e in enumerate(effects):
                if e in t.index:
                    arr[i, j] = t.loc[e, col]
        data[f"anova_{col}"] = (("design", "effect"), arr)
    return xr.Dataset(data, coords={"design": _text(designs), "effect": _text(effects)})


def _posthoc_dataset(tables: dict[str, pd.DataFrame]) -> xr.Dataset:
    first = next(iter(tables.values()))
    comps = list(dict.fromkeys(f"{a} - {b}" for a, b in zip(first.template_1, first.template_2)))
    t1 = [c.split(" - ")[0] for c in comps]
    t2 = [c.split(" - ")[1] for c in comps]
    dbs: list[str] = []
    for tab in tables.values():
        dbs += [d for d in tab["database"] if d not in dbs]
    designs = list(tables)
    cols = ("difference", "se", "df", "t", "p_unc", "p_adj", "ci_low", "ci_high")
    data = {}
    for col in cols:
        arr = np.full((len(designs), len(dbs), len(comps)), np.nan)
        for i, d in enumerate(designs):
            for r in tables[d].itertuples():
                arr[i, dbs.index(r.database), comps.index(f"{r.template_1} - {r.template_2}")] = (
                    getattr(r, col))
        data[f"posthoc_{col}"] = (("design", "database", "comparison"), arr)
    return xr.Dataset(data, coords={"design": _text(designs), "database": _text(dbs),
                                    "comparison": _text(comps),
                                    "template_1": ("comparison", _text(t1)),
                                    "template_2": ("comparison", _text(t2))})


def _vertex_maps(store_path: Path, part: xr.Dataset, included: list[str],
                 split: dict[str, str], cfg: StatsConfig) -> tuple[xr.Dataset | None, str]:
    if "surface" not in list_groups(store_path):
        return None, "no surface group"
    surf = open_group(store_path, "surface")
    subs = [s for s in included if s in set(_text(surf["subject"].values))]
    factor, labels = "database", [split[s] for s in subs]
    if cfg.vertex_factor in part:
        vals = _text(part[cfg.vertex_factor].sel(subject=subs).values)
        ok = [v.strip().lower() not in ("", "nan", "n/a") for v in vals]
        if all(ok) and len(set(vals)) >= 2:
            factor, labels = cfg.vertex_factor, list(vals)
    if len(set(labels)) < 2 or len(subs) - len(set(labels)) < 1:
        return None, f"fewer than two {factor} groups among surface subjects"
    value = surf["value"].sel(subject=subs)
    if "missing" in surf:  # a metric flagged missing for a subject is left out there
        value = value.where(surf["missing"].sel(subject=subs) == "")
    maps = vertexwise_between(value, labels, vertex_chunk=cfg.vertex_chunk).compute()
    out = xr.Dataset({f"vertex_{k}": maps[k] for k in ("F", "p", "np2", "diff", "n")})
    out = out.assign_coords(metric=_text(out["metric"].values))
    levels = sorted(set(labels))
    out.attrs.update(vertex_factor=factor, vertex_levels=levels,
                     vertex_diff=f"mean({levels[-1]}) - mean({levels[0]})")
    return out, factor


def run_stats(store_path: str | Path, out_dir: str | Path, cfg: StatsConfig) -> dict:
    """Run the template-effect statistics and write the ``stats`` group and files.

    Parameters
    ----------
    store_path
        ``OUT_DIR/results.zarr`` with ``participants`` and ``deface`` (``surface`` optional).
    out_dir
        Output directory: ``anova_mixed.tsv``, ``anova_overlapping.tsv``,
        ``anova_within.tsv``, ``table1.tsv`` and ``figures/nmi_templates.{png,svg}``.
    cfg
        Stats settings.

    Returns
    -------
    dict
        ``{"files": [Path], "n_analysed": int, "split_source": str, "skipped": str|None}``.
    """
    store_path, out_dir = Path(store_path), Path(out_dir)
    present = list_groups(store_path) if store_path.exists() else []
    missing = [g for g in ("participants", "deface") if g not in present]
    if missing:
        raise InputError(f"{store_path}: group(s) {missing} missing; run the participant level")
    out_dir.mkdir(parents=True, exist_ok=True)
    part = open_group(store_path, "participants").load()
    included = _included(part)
    existing = (_text(part[cfg.split_column].sel(subject=included).values)
                if cfg.split_column in part and included else None)
    if existing is not None and "stats" in list_groups(store_path):
        # values that an earlier run drew at random are drawn again (same seed and subjects
        # give the same split; a new seed or a new set of included subjects re-splits)
        drawn = set(open_group(store_path, "stats").attrs.get("split_random_subjects", []))
        existing = np.array(["" if s in drawn else v for s, v in zip(included, existing)],
                            dtype=object)
    random_subjects = [s for i, s in enumerate(included)
                       if existing is None or is_missing(existing[i])]
    split, source = assign_split(included, existing, seed=cfg.split_seed,
                                 fraction=cfg.split_fraction, labels=cfg.split_labels)
    if split and "database" in part:
        current = dict(zip(_text(part["subject"].values), _text(part["database"].values)))
        changed = {s: {"database": d} for s, d in split.items() if current.get(s) != d}
        if changed:  # one region write per subject: only where the value changes
            update_participants(store_path, changed)

    deface = open_group(store_path, "deface")
    templates = list(_text(deface["template"].values))
    nmi = deface["nmi"].sel(subject=included).transpose("subject", "template").values
    complete = np.all(np.isfinite(nmi), axis=1) if included else np.zeros(0, bool)
    subs = [s for s, c in zip(included, complete) if c]
    y = nmi[complete] if included else np.zeros((0, len(templates)))
    groups = np.array([split[s] for s in subs], dtype=str)
    attrs = {"n_included": len(included), "n_analysed": len(subs), "split_source": source,
             "split_seed": cfg.split_seed, "split_random_subjects": random_subjects,
             "dropped_incomplete": [s for s, c in zip(included, complete) if not c],
             "templates": templates, "padjust": cfg.padjust, "table1_design": cfg.design,
             "method": "split-plot ANOVA, Type III, SPSS multivariate-to-univariate route; "
                       "GG epsilon from pooled within-group covariance (docs/stats.md)"}
    for lev in sorted(set(groups)):
        attrs[f"n_{lev}"] = int(np.sum(groups == lev))
    files: list[Path] = []
    levels = sorted(set(groups))
    if len(templates) < 2 or len(subs) < 3:
        reason = f"{len(subs)} complete subjects and {len(templates)} templates: no ANOVA"
        log.warning("stats: %s", reason)
        maps, _ = _vertex_maps(store_path, part, included, split, cfg)
        ds = maps if maps is not None else xr.Dataset()
        ds.attrs.update({**attrs, "skipped": reason})
        write_group(store_path, "stats", ds)
        return {"files": files, "n_analysed": len(subs), "split_source": source,
                "skipped": reason}

    tables: dict[str, pd.DataFrame] = {}
    posthoc: dict[str, pd.DataFrame] = {}
    two = len(levels) >= 2 and len(subs) - len(levels) >= 1
    tables["mixed"] = split_plot_anova(y, groups if two else None)
    posthoc["mixed"] = pairwise_emm(y, templates, groups if two else None,
                                    padjust=cfg.padjust, alpha=cfg.alpha)
    if two:
        y_st, g_st = stack_overlapping(y, groups, cfg.combined_label)
        tables["overlapping"] = split_plot_anova(y_st, g_st)
        posthoc["overlapping"] = pairwise_emm(y_st, templates, g_st, padjust=cfg.padjust,
                                              alpha=cfg.alpha, include_all=False)
    tables["within"] = split_plot_anova(y)
    posthoc["within"] = pairwise_emm(y, templates, None, padjust=cfg.padjust, alpha=cfg.alpha)

    for design, tab in tables.items():
        path = out_dir / f"anova_{design}.tsv"
        tab.to_csv(path, sep="\t", index=False, float_format="%.6g")
        files.append(path)
    design = cfg.design if cfg.design in posthoc else "mixed"
    t1 = posthoc[design].assign(design=design)[["design", *TABLE1_COLUMNS]]
    files.append(out_dir / "table1.tsv")
    t1.to_csv(files[-1], sep="\t", index=False, float_format="%.6g")

    ds = xr.merge([_anova_dataset(tables), _posthoc_dataset(posthoc)])
    maps, factor = _vertex_maps(store_path, part, included, split, cfg)
    if maps is not None:
        ds = xr.merge([ds, maps], combine_attrs="no_conflicts")
    else:
        attrs["vertex_maps"] = f"not computed: {factor}"
    ds["nmi_analysed"] = (("analysed_subject", "template"), y)
    ds = ds.assign_coords(analysed_subject=_text(subs), analysed_database=(
        "analysed_subject", _text(groups)), template=_text(templates))
    ds.attrs.update(attrs)
    write_group(store_path, "stats", ds)

    if design == "overlapping":
        panels = [(lev, y[groups == lev]) for lev in levels] + [(cfg.combined_label, y)]
    elif two:
        panels = [(lev, y[groups == lev]) for lev in levels] + [(ALL_LABEL, y)]
    else:
        panels = [(ALL_LABEL, y)]
    files += plot_nmi_templates(panels, templates, posthoc[design],
                                out_dir / "figures" / "nmi_templates", alpha=cfg.alpha)
    return {"files": files, "n_analysed": len(subs), "split_source": source, "skipped": None}
