"""Post-hoc pairwise comparisons of template estimated marginal means (Table 1).

SPSS "Pairwise Comparisons" of a GLM Repeated Measures model, multivariate approach
(METHODS §14.2).  For templates j < l the per-subject difference ``d = y_j - y_l`` is
modelled with the between-subject factor; its pooled within-group variance ``MSE_d``
(df = N - G) gives the standard errors:

* per database g: difference = mean of d in g, SE = sqrt(MSE_d / n_g);
* over all databases: difference = unweighted mean of the group means,
  SE = sqrt(MSE_d * sum_g 1/n_g) / G;

t = difference / SE with df = N - G (N - 1 when fully within).  Adjustments: ``none``
(SPSS LSD), ``bonferroni`` (p times the number of template pairs, capped at 1),
``sidak`` and ``tukey`` (Tukey's studentised range for ``k`` templates:
``p = P(Q_{k,df} > sqrt(2) |t|)``, :func:`tukey_p`); confidence intervals use the same
adjustment.  The paper's Table 1 p-values follow from its differences and SEs under Tukey
with a large error df (:func:`paper_table1`, docs/stats.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats

from isyb_dask.errors import ConfigError, InputError

#: Columns of the Table 1 layout.
TABLE1_COLUMNS: tuple[str, ...] = (
    "database", "template_1", "template_2", "difference", "se", "df", "t",
    "p_unc", "p_adj", "padjust", "ci_low", "ci_high",
)

ALL_LABEL = "all"

#: The paper's Table 1 (Gao et al. 2022, ISYB, METHODS §0a): (template 1, template 2,
#: difference, SE, p).
PAPER_TABLE1: tuple[tuple[str, str, float, float, float], ...] = (
    ("CN200", "Chinese2020", 1.48e-3, 5.03e-4, 9.11e-3),
    ("CN200", "MNI152", 3.41e-3, 3.59e-4, 9.56e-10),
    ("Chinese2020", "MNI152", 1.93e-3, 4.67e-4, 1.12e-4),
)
#: Order and signs of the paper's rows.
PAPER_PAIRS: tuple[tuple[str, str], ...] = tuple((a, b) for a, b, *_ in PAPER_TABLE1)


def tukey_p(t: np.ndarray, k: int, df: float) -> np.ndarray:
    """Tukey-adjusted p of pairwise t statistics among ``k`` means (error ``df``).

    ``p = P(Q > sqrt(2) |t|)`` with ``Q`` the studentised range of ``k`` means and ``df``
    error degrees of freedom (``numpy.inf`` = normal limit).
    """
    q = np.sqrt(2.0) * np.abs(np.asarray(t, dtype=float))
    return np.clip(stats.studentized_range.sf(q, k, df), 0.0, 1.0)


def paper_table1(df: float = np.inf) -> pd.DataFrame:
    """The paper's Table 1 rows with p recomputed under Tukey (k = 3) and under LSD/Bonferroni."""
    rows = []
    for a, b, diff, se, p in PAPER_TABLE1:
        t = diff / se
        rows.append({"template_1": a, "template_2": b, "difference": diff, "se": se,
                     "p_paper": p, "t": t, "p_tukey": float(tukey_p(t, 3, df)),
                     "p_lsd": float(2.0 * stats.norm.sf(abs(t)) if not np.isfinite(df)
                                    else 2.0 * stats.t.sf(abs(t), df)),
                     "p_bonferroni": float(min(1.0, 3 * 2.0 * stats.t.sf(abs(t), df)))})
    return pd.DataFrame(rows)


def table1_layout(table: pd.DataFrame, pairs: Sequence[tuple[str, str]] = PAPER_PAIRS,
                  rename: dict[str, str] | None = None) -> pd.DataFrame:
    """Post-hoc rows in the paper's order and signs (e.g. CN200 - Chinese2020, ...).

    Parameters
    ----------
    table
        Output of :func:`pairwise_emm` (any databases, e.g. ISYB-1, ISYB-2 and all).
    pairs
        ``(template_1, template_2)`` in the wanted order and sign.
    rename
        Our template names -> the paper's (e.g. ``{"CNsynth": "CN200"}``).

    Returns
    -------
    pandas.DataFrame
        One row per database and pair; a reversed pair gets its difference, t and CI
        negated (p and SE unchanged). Pairs absent from ``table`` are left out.
    """
    t = table.copy()
    if rename:
        t["template_1"] = t["template_1"].replace(rename)
        t["template_2"] = t["template_2"].replace(rename)
    out = []
    for db in dict.fromkeys(t["database"]):
        sub = t[t["database"] == db]
        for a, b in pairs:
            same = sub[(sub["template_1"] == a) & (sub["template_2"] == b)]
            rev = sub[(sub["template_1"] == b) & (sub["template_2"] == a)]
            if len(same):
                out.append(same.iloc[0].to_dict())
            elif len(rev):
                r = rev.iloc[0].to_dict()
                lo, hi = r["ci_low"], r["ci_high"]
                r.update(template_1=a, template_2=b, difference=-r["difference"], t=-r["t"],
                         ci_low=-hi, ci_high=-lo)
                out.append(r)
    return pd.DataFrame(out, columns=list(TABLE1_COLUMNS))


def adjust_p(p: np.ndarray, m: int, method: str) -> np.ndarray:
    """Adjust p-values for ``m`` comparisons.

    Parameters
    ----------
    p
        Unadjusted p-values.
    m
        Size of the family.
    method
        ``"none"``, ``"bonferroni"`` or ``"sidak"``.

    Returns
    -------
    numpy.ndarray
        Adjusted p-values in [0, 1].

    Raises
    ------
    ConfigError
        For an unknown method.
    """
    p = np.asarray(p, dtype=float)
    if method == "none":
        return p.copy()
    if method == "bonferroni":
        return np.minimum(p * m, 1.0)
    if method == "sidak":
        return 1.0 - (1.0 - p) ** m
    raise ConfigError(f"unknown p-value adjustment {method!r} (none, bonferroni, sidak, tukey)")


def _crit(df: float, m: int, method: str, alpha: float, k: int = 2) -> float:
    if method == "tukey":
        return float(stats.studentized_range.ppf(1.0 - alpha, k, df) / np.sqrt(2.0))
    if method == "bonferroni":
        a = alpha / m
    elif method == "sidak":
        a = 1.0 - (1.0 - alpha) ** (1.0 / m)
    else:
        a = alpha
    return float(stats.t.ppf(1.0 - a / 2.0, df))


def pairwise_emm(
    y: np.ndarray,
    levels: Sequence[str],
    groups: Sequence | None = None,
    *,
    padjust: str = "bonferroni",
    alpha: float = 0.05,
    include_all: bool = True,
) -> pd.DataFrame:
    """Pairwise comparisons of the within-factor EMMs per group and over all groups.

    Parameters
    ----------
    y
        ``(N, k)`` complete data (subjects x templates), or ``(N, k, b)`` in which case the
        last axis (another within factor) is averaged first.
    levels
        Names of the ``k`` templates.
    groups
        ``(N,)`` database labels, or None (one group: fully within).
    padjust
        ``none``, ``bonferroni``, ``sidak`` (within each database over the
        ``k (k - 1) / 2`` template pairs) or ``tukey`` (studentised range of ``k`` means).
    alpha
        Level of the (adjusted) confidence intervals.
    include_all
        Add the rows comparing the EMMs averaged over databases (label ``"all"``).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`TABLE1_COLUMNS`, one row per database (then ``all``) and pair.

    Raises
    ------
    InputError
        If the data are incomplete or a group has no error df.
    """
    y = np.asarray(y, dtype=float)
    if y.ndim == 3:
        y = y.mean(axis=2)
    if y.ndim != 2 or y.shape[1] != len(levels):
        raise InputError(f"post-hoc: data shape {y.shape} does not match {len(levels)} levels")
    if not np.all(np.isfinite(y)):
        raise InputError("post-hoc: data contain missing or non-finite values")
    n_sub = y.shape[0]
    if groups is None:
        labels = np.full(n_sub, ALL_LABEL)
    else:
        labels = np.asarray(groups).astype(str)
    glevels, codes = np.unique(labels, return_inverse=True)
    n_groups = len(glevels)
    n_per = np.bincount(codes, minlength=n_groups).astype(float)
    df = n_sub - n_groups
    if df < 1:
        raise InputError(f"post-hoc: {n_sub} subjects in {n_groups} groups leave no error df")
    pairs = list(combinations(range(len(levels)), 2))
    m = len(pairs)
    if padjust not in ("none", "bonferroni", "sidak", "tukey"):
        raise ConfigError(f"unknown p-value adjustment {padjust!r} (none, bonferroni, sidak, tukey)")
    tcrit = _crit(df, m, padjust, alpha, len(levels))
    rows: list[dict] = []
    for j, l in pairs:
        d = y[:, j] - y[:, l]
        gmeans = np.bincount(codes, weights=d, minlength=n_groups) / n_per
        mse = np.sum((d - gmeans[codes]) ** 2) / df
        entries = [(str(g), gmeans[i], np.sqrt(mse / n_per[i])) for i, g in enumerate(glevels)]
        if include_all and n_groups > 1:
            entries.append((ALL_LABEL, gmeans.mean(),
                            np.sqrt(mse * np.sum(1.0 / n_per)) / n_groups))
        for db, diff, se in entries:
            with np.errstate(divide="ignore", invalid="ignore"):
                t = diff / se
            rows.append({"database": db, "template_1": str(levels[j]),
                         "template_2": str(levels[l]), "difference": diff, "se": se,
                         "df": float(df), "t": t, "p_unc": 2.0 * stats.t.sf(abs(t), df),
                         "padjust": padjust, "ci_low": diff - tcrit * se,
                         "ci_high": diff + tcrit * se})
    table = pd.DataFrame(rows)
    if padjust == "tukey":
        table["p_adj"] = tukey_p(table["t"].to_numpy(), len(levels), df)
    else:
        table["p_adj"] = adjust_p(table["p_unc"].to_numpy(), m, padjust)
    order = {g: i for i, g in enumerate([*map(str, glevels), ALL_LABEL])}
    table = table.sort_values("database", key=lambda s: s.map(order), kind="stable")
    return table[list(TABLE1_COLUMNS)].reset_index(drop=True)
