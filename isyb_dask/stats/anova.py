"""Repeated-measures and split-plot (mixed) ANOVA on NMI, vectorised over trailing axes.

The engine follows the multivariate-to-univariate route of SPSS GLM Repeated Measures
(METHODS §14.1): every within-subject effect is expressed with an orthonormal contrast
matrix ``C`` (rows orthogonal to the unit vector), the transformed scores ``Z = Y Cᵀ`` are
analysed with a one-way between-subjects model, and the univariate sums of squares are
the traces of the hypothesis and error SSCP matrices.  Between-subjects hypotheses are
Type III (unweighted means of the group cell means), so unbalanced groups give the SPSS /
``afex`` answer, and sphericity (Mauchly's W, Greenhouse–Geisser epsilon) is computed from
the pooled within-group covariance of ``Z``.  With a single group this is exactly the
classical fully within RM-ANOVA (equal to ``statsmodels`` ``AnovaRM``).

All array work accepts a trailing axis of independent problems (e.g. vertices), so the
same code serves one NMI table and 64,984 vertex-wise fits.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from isyb_dask.errors import InputError

#: Columns of every ANOVA table returned by this module, in order.
ANOVA_COLUMNS: tuple[str, ...] = (
    "effect", "ss", "df1", "df2", "ms", "ss_error", "F", "p", "np2",
    "mauchly_W", "mauchly_chi2", "mauchly_df", "mauchly_p",
    "eps_gg", "df1_gg", "df2_gg", "p_gg", "eps_hf", "p_hf",
)


def orthonormal_contrasts(k: int) -> np.ndarray:
    """Normalised Helmert contrasts.

    Parameters
    ----------
    k
        Number of levels (>= 1).

    Returns
    -------
    numpy.ndarray
        ``(k - 1, k)`` matrix with orthonormal rows, each orthogonal to ``ones(k)``.
    """
    c = np.zeros((k - 1, k))
    for i in range(1, k):
        c[i - 1, :i] = 1.0
        c[i - 1, i] = -float(i)
        c[i - 1] /= np.sqrt(i * (i + 1.0))
    return c


def _within_effects(within: Sequence[str], shape: Sequence[int]) -> list[tuple[str, np.ndarray]]:
    """Contrast matrices (over the flattened within cells) of every within effect."""
    if len(within) != len(shape):
        raise ValueError(f"{len(within)} within factor names for {len(shape)} within axes")
    if len(shape) == 1:
        return [(within[0], orthonormal_contrasts(shape[0]))]
    if len(shape) == 2:
        a, b = shape
        ca, cb = orthonormal_contrasts(a), orthonormal_contrasts(b)
        ua, ub = np.full((1, a), 1 / np.sqrt(a)), np.full((1, b), 1 / np.sqrt(b))
        return [
            (within[0], np.kron(ca, ub)),
            (within[1], np.kron(ua, cb)),
            (f"{within[0]}:{within[1]}", np.kron(ca, cb)),
        ]
    raise ValueError("at most two within-subject factors are supported")


def sphericity_arrays(
    error_sscp: np.ndarray, df_error: float, n_groups: int = 1
) -> dict[str, np.ndarray]:
    """Mauchly's test and Greenhouse–Geisser epsilon from error SSCP matrices.

    Parameters
    ----------
    error_sscp
        ``(p, p, ...)`` error sums of squares and cross-products of orthonormal contrast
        scores (pooled within groups); trailing axes are independent problems.
    df_error
        Error degrees of freedom of the covariance (``N - G``).
    n_groups
        Number of between-subject groups ``G`` (for the Huynh-Feldt epsilon).

    Returns
    -------
    dict
        ``W``, ``chi2``, ``df`` (scalar), ``p``, ``eps_gg`` and ``eps_hf`` arrays over the
        trailing axes.  With ``p == 1`` sphericity holds trivially: W = 1, chi2 = 0, df = 0,
        p = NaN, both epsilons 1.  ``eps_hf`` is the original Huynh-Feldt estimate
        (N(p)ε - 2) / (p (N - G - p ε)) as in SPSS, capped at 1.
    """
    p = error_sscp.shape[0]
    trailing = error_sscp.shape[2:]
    if p == 1:
        ones = np.ones(trailing)
        return {"W": ones, "chi2": np.zeros(trailing), "df": 0.0,
                "p": np.full(trailing, np.nan), "eps_gg": ones, "eps_hf": ones}
    s = np.moveaxis(error_sscp, (0, 1), (-2, -1)) / df_error
    tr = np.trace(s, axis1=-2, axis2=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.linalg.det(s) / (tr / p) ** p
        eps = tr**2 / (p * np.sum(s * s, axis=(-2, -1)))
        w = np.clip(w, 0.0, 1.0)
        chi2 = -(df_error - (2 * p**2 + p + 2) / (6 * p)) * np.log(w)
    dof = p * (p + 1) / 2 - 1
    eps = np.clip(eps, 1.0 / p, 1.0)
    n_sub = df_error + n_groups
    with np.errstate(divide="ignore", invalid="ignore"):
        hf = (n_sub * p * eps - 2.0) / (p * (df_error - p * eps))
    return {"W": w, "chi2": chi2, "df": float(dof), "p": stats.chi2.sf(chi2, dof),
            "eps_gg": eps, "eps_hf": np.minimum(hf, 1.0)}


def split_plot_arrays(
    y: np.ndarray,
    codes: np.ndarray,
    n_groups: int,
    within_shape: Sequence[int],
    within: Sequence[str],
    between: str = "database",
) -> list[dict]:
    """Split-plot ANOVA for many independent problems at once.

    Parameters
    ----------
    y
        ``(N, cells, ...)`` scores; ``cells = prod(within_shape)`` in row-major order of the
        within factors; trailing axes (e.g. vertices) are independent problems.
    codes
        ``(N,)`` integer group codes in ``0 .. n_groups - 1`` (all zeros: fully within).
    n_groups
        Number of between-subject groups (1 = fully within RM-ANOVA).
    within_shape
        Levels of each within factor.
    within
        Names of the within factors.
    between
        Name of the between factor.

    Returns
    -------
    list of dict
        One dict per effect with keys of :data:`ANOVA_COLUMNS` (arrays over trailing axes).

    Raises
    ------
    InputError
        If a group is empty or there are too few subjects for an error term.
    """
    y = np.ascontiguousarray(y, dtype=float)  # C order: vertex axis fastest
    codes = np.asarray(codes, dtype=int)
    n_sub = y.shape[0]
    n_per = np.bincount(codes, minlength=n_groups).astype(float)
    if np.any(n_per == 0):
        raise InputError(f"ANOVA: empty group(s) {np.flatnonzero(n_per == 0).tolist()}")
    df_err_sub = n_sub - n_groups
    if df_err_sub < 1:
        raise InputError(f"ANOVA: {n_sub} subjects in {n_groups} groups leave no error df")
    members = [codes == g for g in range(n_groups)]

    def group_means(a: np.ndarray) -> np.ndarray:
        return np.stack([a[m].mean(axis=0) for m in members])

    trailing = y.shape[2:]
    out: list[dict] = []

    def _row(name, ss, df1, sse, df2, sph=None):
        with np.errstate(divide="ignore", invalid="ignore"):
            ms = ss / df1
            f = ms / (sse / df2)
            np2 = ss / (ss + sse)
        row = {"effect": name, "ss": ss, "df1": float(df1), "df2": float(df2), "ms": ms,
               "ss_error": sse, "F": f, "p": stats.f.sf(f, df1, df2), "np2": np2}
        if sph is None:
            nan = np.full(trailing, np.nan)
            row.update(mauchly_W=nan, mauchly_chi2=nan, mauchly_df=np.nan, mauchly_p=nan,
                       eps_gg=nan, df1_gg=nan, df2_gg=nan, p_gg=nan, eps_hf=nan, p_hf=nan)
        else:
            eps = sph["eps_gg"]
            row.update(mauchly_W=sph["W"], mauchly_chi2=sph["chi2"], mauchly_df=sph["df"],
                       mauchly_p=sph["p"], eps_gg=eps, df1_gg=df1 * eps, df2_gg=df2 * eps,
                       p_gg=stats.f.sf(f, df1 * eps, df2 * eps), eps_hf=sph["eps_hf"],
                       p_hf=stats.f.sf(f, df1 * sph["eps_hf"], df2 * sph["eps_hf"]))
        return row

    if n_groups > 1:
        s = y.sum(axis=1) / np.sqrt(y.shape[1])
        means = group_means(s)
        grand = s.mean(axis=0)
        ss_b = np.tensordot(n_per, (means - grand) ** 2, axes=1)
        sse_b = ((s - means[codes]) ** 2).sum(axis=0)
        out.append(_row(between, ss_b, n_groups - 1, sse_b, df_err_sub))

    harmonic = np.sum(1.0 / n_per) / n_groups**2
    effects = _within_effects(within, within_shape) if int(np.prod(within_shape)) > 1 else []
    for name, c in effects:
        p = c.shape[0]
        z = np.stack([sum(w * y[:, j] for j, w in enumerate(row) if w != 0.0)
                      for row in c], axis=1)  # (N, p, ...)
        means = group_means(z)
        resid = z - means[codes]
        sscp = np.empty((p, p) + trailing)
        for i in range(p):
            for j in range(i, p):
                sscp[i, j] = sscp[j, i] = np.einsum("n...,n...->...", resid[:, i], resid[:, j])
        sse = np.trace(sscp, axis1=0, axis2=1) if p > 1 else sscp[0, 0]
        sph = sphericity_arrays(sscp, df_err_sub, n_groups)
        psi = means.mean(axis=0)
        ss_w = (psi**2).sum(axis=0) / harmonic
        out.append(_row(name, ss_w, p, sse, p * df_err_sub, sph))
        if n_groups > 1:
            grand = z.mean(axis=0)
            dev = (means - grand) ** 2
            ss_gw = np.tensordot(n_per, dev.sum(axis=1), axes=1)
            out.append(_row(f"{between}:{name}", ss_gw, p * (n_groups - 1), sse,
                            p * df_err_sub, sph))
    return out


def _encode(groups: Sequence | None, n_sub: int) -> tuple[np.ndarray, list[str]]:
    if groups is None:
        return np.zeros(n_sub, dtype=int), []
    labels = np.asarray(groups).astype(str)
    if labels.shape != (n_sub,):
        raise InputError(f"ANOVA: {labels.size} group labels for {n_sub} subjects")
    levels, codes = np.unique(labels, return_inverse=True)
    return codes, [str(v) for v in levels]


def split_plot_anova(
    y: np.ndarray,
    groups: Sequence | None = None,
    *,
    within: Sequence[str] = ("template",),
    between: str = "database",
) -> pd.DataFrame:
    """Mixed (split-plot) or fully within repeated-measures ANOVA table.

    Parameters
    ----------
    y
        ``(N, a)`` or ``(N, a, b)`` complete data, one row per subject (no NaN).
    groups
        ``(N,)`` between-subject labels, or None for a fully within RM-ANOVA.  With a
        single distinct label the design is also fully within.
    within
        Names of the within factors (one per within axis of ``y``).
    between
        Name of the between factor.

    Returns
    -------
    pandas.DataFrame
        One row per effect with the columns :data:`ANOVA_COLUMNS`; ``p_gg`` etc. are NaN
        for the between-subjects effect.

    Raises
    ------
    InputError
        If ``y`` holds non-finite values or the design has no error df.
    """
    y = np.asarray(y, dtype=float)
    if y.ndim not in (2, 3):
        raise InputError(f"ANOVA: expected (subjects, levels[, levels]) data, got {y.shape}")
    if not np.all(np.isfinite(y)):
        raise InputError("ANOVA: data contain missing or non-finite values")
    codes, levels = _encode(groups, y.shape[0])
    n_groups = max(len(levels), 1)
    flat = y.reshape(y.shape[0], -1)
    rows = split_plot_arrays(flat, codes, n_groups, y.shape[1:], within, between)
    table = pd.DataFrame([{k: (v.item() if isinstance(v, np.ndarray) else v)
                           for k, v in r.items()} for r in rows])
    return table[list(ANOVA_COLUMNS)]


def overlapping_anova(
    y: np.ndarray,
    groups: Sequence,
    *,
    combined_label: str = "ISYB",
    within: str = "template",
    between: str = "database",
) -> pd.DataFrame:
    """The paper's overlapping three-database layout (ISYB-1, ISYB-2 and ISYB = both).

    The halves and the whole sample are stacked as if they were independent groups
    (every subject appears twice: once in its half and once in ``combined_label``) and
    analysed with :func:`split_plot_anova`.  This is the only layout that yields the
    reported interaction df of (3 - 1)(3 - 1) = 4; because subjects are duplicated, the
    error df is inflated and p-values are anti-conservative (documented in docs/stats.md).

    Parameters
    ----------
    y
        ``(N, k)`` NMI, one row per subject, one column per template.
    groups
        ``(N,)`` half labels (e.g. ISYB-1 / ISYB-2).
    combined_label
        Label of the stacked whole sample.
    within, between
        Factor names.

    Returns
    -------
    pandas.DataFrame
        As :func:`split_plot_anova`.
    """
    y_st, g_st = stack_overlapping(y, groups, combined_label)
    return split_plot_anova(y_st, g_st, within=(within,), between=between)


def stack_overlapping(
    y: np.ndarray, groups: Sequence, combined_label: str = "ISYB"
) -> tuple[np.ndarray, np.ndarray]:
    """Stack data for the overlapping layout: the halves followed by all subjects.

    Parameters
    ----------
    y
        ``(N, ...)`` data.
    groups
        ``(N,)`` half labels.
    combined_label
        Label given to the copy of all subjects.

    Returns
    -------
    tuple
        ``(2N, ...)`` data and ``(2N,)`` labels.
    """
    y = np.asarray(y, dtype=float)
    g = np.asarray(groups).astype(str)
    if combined_label in set(g):
        raise InputError(f"ANOVA: group label {combined_label!r} clashes with the combined level")
    width = max(len(combined_label), g.dtype.itemsize // 4, 1)
    g_all = np.full(g.shape, combined_label, dtype=f"<U{width}")
    return np.concatenate([y, y]), np.concatenate([g.astype(g_all.dtype), g_all])
