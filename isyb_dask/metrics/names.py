"""Names, units and long names of the per-subject surface metrics (fsLR 32k)."""

from __future__ import annotations

__all__ = ["METRIC_LONG_NAMES", "METRIC_UNITS", "SURFACE_METRICS", "metric_index"]

#: The paper's twelve vertex-wise metrics plus fALFF, in the order of the store's
#: ``metric`` axis and of ``run_metrics(...)["values"]`` rows.
SURFACE_METRICS: tuple[str, ...] = (
    "CT",
    "SA",
    "GMV",
    "LGI",
    "FA_WM",
    "MD_WM",
    "FA_GM",
    "MD_GM",
    "CBF",
    "ALFF",
    "fALFF",
    "ReHo",
    "VMHC",
)

METRIC_UNITS: dict[str, str] = {
    "CT": "mm",
    "SA": "mm2",
    "GMV": "mm3",
    "LGI": "1",
    "FA_WM": "1",
    "MD_WM": "mm2/s",
    "FA_GM": "1",
    "MD_GM": "mm2/s",
    "CBF": "ml/100g/min",
    "ALFF": "a.u. (signal scaled to a global mean of 10000)",
    "fALFF": "1",
    "ReHo": "1 (Kendall's W)",
    "VMHC": "1 (Fisher z)",
}

METRIC_LONG_NAMES: dict[str, str] = {
    "CT": "cortical thickness",
    "SA": "surface area",
    "GMV": "grey-matter volume (Jacobian-modulated)",
    "LGI": "local gyrification index",
    "FA_WM": "fractional anisotropy, superficial white matter",
    "MD_WM": "mean diffusivity, superficial white matter",
    "FA_GM": "fractional anisotropy, cortical grey matter",
    "MD_GM": "mean diffusivity, cortical grey matter",
    "CBF": "cerebral blood flow",
    "ALFF": "amplitude of low-frequency fluctuations (0.01-0.1 Hz)",
    "fALFF": "fractional ALFF (0.01-0.1 Hz)",
    "ReHo": "regional homogeneity",
    "VMHC": "voxel(vertex)-mirrored homotopic connectivity",
}


def metric_index(name: str) -> int:
    """Row of ``name`` in :data:`SURFACE_METRICS`.

    Parameters
    ----------
    name
        A metric name such as ``"ALFF"``.

    Returns
    -------
    int
        Its position.

    Raises
    ------
    KeyError
        If ``name`` is not a surface metric.
    """
    try:
        return SURFACE_METRICS.index(name)
    except ValueError:
        raise KeyError(f"unknown surface metric {name!r}; known: {SURFACE_METRICS}") from None
