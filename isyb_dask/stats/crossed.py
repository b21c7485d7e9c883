"""Population x template tests of a crossed defacing experiment (demo, generated data).

Subjects of several populations are defaced with templates built from each population.
For a per-subject score (NMI, true-face coverage) this gives

* the split-plot ANOVA population (between) x template (within): the interaction says
  whether the best template depends on the population;
* per population, paired differences matched template - every other template, with the
  mean difference, Cohen's d_z (mean / SD of the differences), t and two-sided p;
* per population, database (between) x template when database labels are given (the
  paper's design inside one population).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from isyb_dask.stats.anova import split_plot_anova

__all__ = ["crossed_tests", "paired_matched"]


def paired_matched(y: np.ndarray, templates: Sequence[str], matched: str) -> pd.DataFrame:
    """Paired ``matched - other`` differences of ``y`` ``(n, k)`` for every other template."""
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
        rows.append({"matched": matched, "other": other, "n": n, "difference": mean,
                     "sd": sd, "dz": mean / sd if sd > 0 else float("nan"), "t": t, "p": p})
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
        ``"database"`` (database x template per population; may be empty).
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
    return {"anova": anova,
            "paired": pd.concat(paired, ignore_index=True) if paired else pd.DataFrame(),
            "database": pd.concat(dbrows, ignore_index=True) if dbrows else pd.DataFrame()}
