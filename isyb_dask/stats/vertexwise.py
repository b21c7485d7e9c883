"""Vertex-wise ANOVA maps: the split-plot engine vectorised over vertices, chunked by Dask.

Every vertex is an independent problem.  :func:`isyb_dask.stats.anova.split_plot_arrays`
already works on a trailing axis, so a Dask chunk of vertices is one numpy call, and
``xarray.apply_ufunc(..., dask="parallelized")`` maps it over the chunks (no Python loop
over the 64,984 fsLR vertices).  The between-subjects map uses, at each vertex, the subjects
with a finite value there; the split-plot map gives NaN where any subject is NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr
from scipy import stats

from isyb_dask.errors import InputError
from isyb_dask.stats.anova import split_plot_arrays


def _encode(groups: Sequence) -> tuple[np.ndarray, list[str]]:
    labels = np.asarray(groups).astype(str)
    levels, codes = np.unique(labels, return_inverse=True)
    return codes, [str(v) for v in levels]


def between_block(values: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """One-way between-subjects ANOVA at every vertex of a block, NaN-aware.

    The one-way special case of the split-plot engine (one within cell), written with
    per-vertex weights so that each vertex uses the subjects with a finite value there
    (missing metrics, partial coverage).  Without NaN it equals
    :func:`isyb_dask.stats.anova.split_plot_arrays` exactly.

    Parameters
    ----------
    values
        ``(..., N)`` values with subjects on the last axis (the apply_ufunc core dim).
    codes
        ``(N,)`` group codes.
    n_groups
        Number of groups.

    Returns
    -------
    numpy.ndarray
        ``(..., 5)``: F, p, partial eta squared, the difference of the last and first group
        means (``levels[-1] - levels[0]``) and the number of subjects used, per vertex.
        NaN where a group has no finite value or there are no error df.
    """
    lead = values.shape[:-1]
    y = np.ascontiguousarray(np.moveaxis(values.reshape(-1, values.shape[-1]), -1, 0),
                             dtype=float)  # (N, V)
    w = np.isfinite(y)
    y = np.where(w, y, 0.0)
    n_g = np.stack([w[codes == g].sum(axis=0) for g in range(n_groups)]).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        m_g = np.stack([y[codes == g].sum(axis=0) for g in range(n_groups)]) / n_g
        n = n_g.sum(axis=0)
        grand = (n_g * np.nan_to_num(m_g)).sum(axis=0) / n
        ss_b = (n_g * (np.nan_to_num(m_g) - grand) ** 2).sum(axis=0)
        ss_w = (w * (y - np.nan_to_num(m_g)[codes]) ** 2).sum(axis=0)
        df1, df2 = n_groups - 1, n - n_groups
        f = (ss_b / df1) / (ss_w / df2)
        np2 = ss_b / (ss_b + ss_w)
    p = stats.f.sf(f, df1, np.where(df2 >= 1, df2, np.nan))
    bad = np.any(n_g == 0, axis=0) | (df2 < 1)
    out = np.stack([f, p, np2, m_g[-1] - m_g[0], n], axis=-1)
    out[bad, :4] = np.nan
    return out.reshape(*lead, 5).astype(np.float32)


def split_plot_block(
    values: np.ndarray, codes: np.ndarray, n_groups: int, effect: int
) -> np.ndarray:
    """Split-plot ANOVA (within factor on the second-to-last axis) at every vertex.

    Parameters
    ----------
    values
        ``(..., N, k)`` values; subjects and within levels are the core dims.
    codes
        ``(N,)`` group codes (all zero: fully within).
    n_groups
        Number of groups.
    effect
        Index of the effect row to return (0 = first effect of the table).

    Returns
    -------
    numpy.ndarray
        ``(..., 3)``: F, p and GG-corrected p of that effect.
    """
    lead = values.shape[:-2]
    n, k = values.shape[-2:]
    y = np.moveaxis(values.reshape(-1, n, k), 0, -1)  # (N, k, V)
    bad = ~np.all(np.isfinite(y), axis=(0, 1))
    y = np.where(np.isfinite(y), y, 0.0)
    row = split_plot_arrays(y, codes, n_groups, (k,), ("level",), "group")[effect]
    p_gg = row["p_gg"] if np.ndim(row["p_gg"]) else np.full(y.shape[-1], np.nan)
    out = np.stack([row["F"], row["p"], p_gg], axis=-1)
    out[bad] = np.nan
    return out.reshape(*lead, 3).astype(np.float32)


def vertexwise_between(
    values: xr.DataArray,
    groups: Sequence,
    *,
    subject_dim: str = "subject",
    vertex_chunk: int = 8192,
) -> xr.Dataset:
    """F, p, partial eta squared, mean difference and n maps of a between-subject factor.

    Parameters
    ----------
    values
        DataArray with a ``subject`` dim (any other dims, e.g. metric x vertex), numpy- or
        dask-backed.
    groups
        Group label per subject (same order as ``values[subject_dim]``), >= 2 levels.
    subject_dim
        Name of the subject dimension.
    vertex_chunk
        Chunk size along ``vertex`` when that dim exists.

    Returns
    -------
    xarray.Dataset
        Lazy (dask) variables ``F``, ``p``, ``np2``, ``diff`` and ``n`` (subjects with a
        finite value; error df = n - groups) over the other dims, with attrs ``levels``,
        ``df1`` and ``df2`` (the latter for complete data).

    Raises
    ------
    InputError
        With fewer than two groups or no error df.
    """
    codes, levels = _encode(groups)
    if len(levels) < 2 or codes.size - len(levels) < 1:
        raise InputError(f"vertex-wise ANOVA needs >= 2 groups and error df, got {levels}")
    chunks = {subject_dim: -1}
    if "vertex" in values.dims:
        chunks["vertex"] = vertex_chunk
    data = values.chunk(chunks)
    res = xr.apply_ufunc(
        between_block, data, kwargs={"codes": codes, "n_groups": len(levels)},
        input_core_dims=[[subject_dim]], output_core_dims=[["stat"]],
        dask="parallelized", output_dtypes=[np.float32],
        dask_gufunc_kwargs={"output_sizes": {"stat": 5}},
    )
    ds = xr.Dataset({name: res.isel(stat=i, drop=True)
                     for i, name in enumerate(("F", "p", "np2", "diff", "n"))})
    ds.attrs.update(levels=levels, df1=len(levels) - 1, df2=int(codes.size - len(levels)))
    ds["diff"].attrs["description"] = f"mean({levels[-1]}) - mean({levels[0]})"
    return ds


def vertexwise_split_plot(
    values: xr.DataArray,
    within_dim: str,
    groups: Sequence | None = None,
    *,
    effect: str = "within",
    subject_dim: str = "subject",
    vertex_chunk: int = 8192,
) -> xr.Dataset:
    """Repeated-measures (or split-plot) ANOVA at every vertex.

    Parameters
    ----------
    values
        DataArray with ``subject``, ``within_dim`` and e.g. ``vertex`` dims.
    within_dim
        Dimension holding the repeated measures (>= 2 levels).
    groups
        Between-subject labels, or None for a one-way RM-ANOVA.
    effect
        ``"within"``, ``"between"`` or ``"interaction"``.
    subject_dim
        Name of the subject dimension.
    vertex_chunk
        Chunk size along ``vertex`` when that dim exists.

    Returns
    -------
    xarray.Dataset
        Lazy ``F``, ``p`` and ``p_gg`` maps.

    Raises
    ------
    InputError
        For an effect that the design does not have.
    """
    n = values.sizes[subject_dim]
    if groups is None:
        codes, levels = np.zeros(n, dtype=int), ["all"]
    else:
        codes, levels = _encode(groups)
    g = len(levels)
    index = {"between": 0, "within": 1 if g > 1 else 0, "interaction": 2}
    if effect not in index or (g == 1 and effect != "within"):
        raise InputError(f"vertex-wise ANOVA: effect {effect!r} not in this design")
    chunks = {subject_dim: -1, within_dim: -1}
    if "vertex" in values.dims:
        chunks["vertex"] = vertex_chunk
    res = xr.apply_ufunc(
        split_plot_block, values.chunk(chunks),
        kwargs={"codes": codes, "n_groups": g, "effect": index[effect]},
        input_core_dims=[[subject_dim, within_dim]], output_core_dims=[["stat"]],
        dask="parallelized", output_dtypes=[np.float32],
        dask_gufunc_kwargs={"output_sizes": {"stat": 3}},
    )
    return xr.Dataset({name: res.isel(stat=i, drop=True)
                       for i, name in enumerate(("F", "p", "p_gg"))})
