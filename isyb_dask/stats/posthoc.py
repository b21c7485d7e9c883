"""Post-hoc pairwise comparisons of template estimated marginal means (Table 1).

SPSS "Pairwise Comparisons" of a GLM Repeated Measures model, multivariate approach
(METHODS §14.2).  For templates j < l the per-subject difference ``d = y_j - y_l`` is
modelled with the between-subject factor; its pooled within-group variance ``MSE_d``
(df = N - G) gives the standard errors:

* per database g: difference = mean of d in g, SE = sqrt(MSE_d / n_g);
* over all databases: difference = unweighted mean of the group means,
  SE = sqrt(MSE_d * sum_g 1/n_g) / G;

t = difference / SE with df = N - G (N - 1 when fully within).  Adjustments: ``none``
(SPSS LSD), ``bonferroni`` (p times the number of template pairs, capped at 1) and
``sidak``; confidence intervals use the same adjustment.
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
    raise ConfigError(f"unknown p-value adjustment {method!r} (none, bonferroni, sidak)")


def _crit(df: float, m: int, method: str, alpha: float) -> float:
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
        ``none``, ``bonferroni`` or ``sidak``, applied within each database over the
        ``k (k - 1) / 2`` template pairs.
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
    tcrit = _crit(df, m, padjust, alpha)
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
    table["p_adj"] = adjust_p(table["p_unc"].to_numpy(), m, padjust)
    order = {g: i for i, g in enumerate([*map(str, glevels), ALL_LABEL])}
    table = table.sort_values("database", key=lambda s: s.map(order), kind="stable")
    return table[list(TABLE1_COLUMNS)].reset_index(drop=True)
