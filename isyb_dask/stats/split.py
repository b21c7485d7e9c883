"""Discovery / validation halves of the cohort (ISYB-1 n=89, ISYB-2 n=126 of 215)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_MISSING = {"", "nan", "none", "n/a", "na"}


def is_missing(value: object) -> bool:
    """True for None, NaN and empty / 'n/a'-like split values."""
    if value is None:
        return True
    if isinstance(value, float) and np.isnan(value):
        return True
    return str(value).strip().lower() in _MISSING


def assign_split(
    subjects: Sequence[str],
    existing: Sequence | None = None,
    *,
    seed: int,
    fraction: float = 89 / 215,
    labels: tuple[str, str] = ("ISYB-1", "ISYB-2"),
) -> tuple[dict[str, str], str]:
    """Assign every subject to one of two databases.

    Subjects with a value in ``existing`` (the participants column) keep it.  The others
    are split at random with ``numpy.random.default_rng(seed)``: among them,
    ``round(fraction * n)`` (at least 1 and at most n - 1 when n >= 2) go to ``labels[0]``
    and the rest to ``labels[1]``.  The draw depends only on the sorted subject IDs, not on
    their order.

    Parameters
    ----------
    subjects
        Subject IDs to assign (typically the included ones).
    existing
        Values of the split column per subject (same order), or None.
    seed
        Seed of the random split.
    fraction
        Proportion of the first database.
    labels
        Names of the two databases.

    Returns
    -------
    tuple
        ``({subject: database}, source)`` with source ``"column"``, ``"random"`` or
        ``"column+random"``.
    """
    subjects = [str(s) for s in subjects]
    given: dict[str, str] = {}
    if existing is not None:
        for sub, val in zip(subjects, existing, strict=True):
            if not is_missing(val):
                given[sub] = str(val).strip()
    todo = sorted(s for s in subjects if s not in given)
    out = dict(given)
    if todo:
        n = len(todo)
        n1 = round(fraction * n)
        if n >= 2:
            n1 = min(max(n1, 1), n - 1)
        order = np.random.default_rng(seed).permutation(n)
        for rank, idx in enumerate(order):
            out[todo[idx]] = labels[0] if rank < n1 else labels[1]
    if given and todo:
        source = "column+random"
    elif given:
        source = "column"
    else:
        source = "random"
    return {s: out[s] for s in subjects}, source
