"""Population x template tests of a crossed defacing experiment (demo, generated data).

Subjects of several populations are defaced with templates built from each population.
For a per-subject score (NMI, true-face coverage) this gives

* the split-plot ANOVA population (between) x template (within): the interaction says
  whether the best template depends on the population;
* per population, paired differences matched template - every other template, with the
  mean difference and its 95 % confidence interval (t, n - 1 df), Cohen's d_z (mean / SD of
  the differences) with an approximate 95 % interval (SE = sqrt(1/n + d_z^2 / (2 n))), t and
  two-sided p;
* Tukey pairwise comparisons of the template means per population and over both
  populations (:func:`isyb_dask.stats.posthoc.pairwise_emm` with the population as the
  between factor, studentised range for the number of templates, simultaneous 95 % CIs);
* per population, database (between) x template when database labels are given (the
  paper's design inside one population).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from isyb_dask.stats.anova import split_plot_anova
from isyb_dask.stats.posthoc import pairwise_emm

__all__ = ["crossed_tests", "paired_matched"]


def paired_matched(y: np.ndarray, templates: Sequence[str], matched: str,
                   alpha: float = 0.05) -> pd.DataFrame:
    """Paired ``matched - other`` differences of ``y`` ``(n, k)`` for every other template.

    Columns: ``difference`` (mean) with ``ci_low``/``ci_high`` (t interval, ``n - 1`` df),
    ``sd``, ``dz`` (Cohen's d_z) with ``dz_low``/``dz_high`` (normal approximation,
    SE = sqrt(1/n + d_z^2 / (2 n))), ``t`` and two-sided ``p``.
    """
    y = np.asarray(y, dtype=float)
    j = list(templates).index(matched)
    rows = []
    for l, other in enumerate(templates):
        if l == j:
            continue
        d = y[:, j] - y[:, l]
        n = d.size
        sd = float(d.std(ddof=1)) if n > 1 else float("nan")
        mean = float(d.mean())
        t = mean / (sd / np.sqrt(n)) if n > 1 and sd > 0 else float("nan")
        p = float(2.0 * stats.t.sf(abs(t), n - 1)) if np.isfinite(t) else float("nan")
        half = float(stats.t.ppf(1 - alpha / 2, n - 1) * sd / np.sqrt(n)) if n > 1 else np.nan
        dz = mean / sd if sd > 0 else float("nan")
        dz_half = float(stats.norm.ppf(1 - alpha / 2) * np.sqrt(1 / n + dz**2 / (2 * n)))
        rows.append({"matched": matched, "other": other, "n": n, "difference": mean,
                     "ci_low": mean - half, "ci_high": mean + half, "sd": sd, "dz": dz,
                     "dz_low": dz - dz_half, "dz_high": dz + dz_half, "t": t, "p": p})
    return pd.DataFrame(rows)


def crossed_tests(
    y: np.ndarray,
    templates: Sequence[str],
    population: Sequence[str],
    matched: Mapping[str, str],
    database: Sequence[str] | None = None,
) -> dict[str, pd.DataFrame]:
    """All tests of the crossed design for one score.

    Parameters
    ----------
    y
        ``(n_subjects, n_templates)`` complete scores.
    templates
        Template names (columns of ``y``).
    population
        Population label per subject.
    matched
        Population -> name of the template built from that population.
    database
        Optional database label per subject (for database x template within a population).

    Returns
    -------
    dict
        ``"anova"`` (population x template), ``"paired"`` (matched - other per population),
        ``"database"`` (database x template per population; may be empty), ``"tukey"``
        (template pairs per population and over both, Tukey-adjusted p and CIs).
    """
    y = np.asarray(y, dtype=float)
    pop = np.asarray(population).astype(str)
    ok = np.all(np.isfinite(y), axis=1)
    y, pop = y[ok], pop[ok]
    db = None if database is None else np.asarray(database).astype(str)[ok]
    anova = split_plot_anova(y, pop, between="population")
    paired = []
    dbrows = []
    for p in sorted(set(pop)):
        sel = pop == p
        if p in matched and sel.sum() > 1:
            paired.append(paired_matched(y[sel], templates, matched[p]).assign(population=p))
        if db is not None and len(set(db[sel])) > 1 and sel.sum() - len(set(db[sel])) >= 1:
            dbrows.append(split_plot_anova(y[sel], db[sel]).assign(population=p))
    tukey = pairwise_emm(y, list(templates), pop, padjust="tukey") if len(templates) > 1 \
        else pd.DataFrame()
    return {"anova": anova, "tukey": tukey,
            "paired": pd.concat(paired, ignore_index=True) if paired else pd.DataFrame(),
            "database": pd.concat(dbrows, ignore_index=True) if dbrows else pd.DataFrame()}
