"""Study-level exclusion rules on the IQM tables (METHODS §7, Gao et al. 2022).

Two rules, applied independently to the subjects of the analysed sample:

* **SD rule** (``rule = "sd"``): for each IQM of each modality separately,
  z = (x - mean) / SD over the finite values of the sample (``ddof`` configurable, default
  1); a value with |z| > ``limit`` is excluded (``direction="bad"``: only on the bad side of
  the mean, e.g. low SNR or high EFC). Single pass by default; with ``iterate=True`` the
  mean and SD of that IQM are recomputed without the excluded values until nothing more
  is excluded. Non-finite values and MRIQC's FBER sentinel (-1, "no background") are
  treated as missing: they neither enter the mean nor get excluded.
* **Motion rule** (``rule = "motion"``): a BOLD run with ``fd_mean`` > ``fd_mean_max``
  (strictly greater) is excluded.

A subject is excluded when any rule fires on any of its IQMs; every trigger is kept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = [
    "BAD_DIRECTION",
    "Trigger",
    "exclusion_table",
    "motion_outliers",
    "sd_outliers",
    "subject_exclusions",
]

#: +1: high values are bad; -1: low values are bad (used by ``direction="bad"``).
BAD_DIRECTION: dict[str, int] = {
    "snr": -1,
    "snr_total": -1,
    "snr_wm": -1,
    "snr_gm": -1,
    "snr_csf": -1,
    "tsnr": -1,
    "cnr": -1,
    "fber": -1,
    "efc": 1,
    "fwhm_avg": 1,
    "fwhm_x": 1,
    "fwhm_y": 1,
    "fwhm_z": 1,
    "fd_mean": 1,
    "fd_perc": 1,
    "fd_num": 1,
    "dvars_std": 1,
    "dvars_nstd": 1,
    "dvars_vstd": 1,
    "gcor": 1,
    "cjv": 1,
}


@dataclass(frozen=True)
class Trigger:
    """One rule firing on one value.

    Attributes
    ----------
    subject, modality, metric, rule
        Where and why (``rule`` is ``"sd"`` or ``"motion"``).
    value
        The IQM value.
    mean, sd, z
        Sample statistics of the pass that excluded it (SD rule) or the threshold in
        ``mean`` and ``nan`` elsewhere (motion rule).
    """

    subject: str
    modality: str
    metric: str
    rule: str
    value: float
    mean: float
    sd: float
    z: float

    def describe(self) -> str:
        """Short human-readable reason."""
        if self.rule == "motion":
            return f"{self.modality} {self.metric}={self.value:.4g} > {self.mean:.4g} mm"
        return f"{self.modality} {self.metric}={self.value:.4g} (z={self.z:+.2f})"


def _clean(metric: str, values: pd.Series) -> pd.Series:
    vals = pd.to_numeric(values, errors="coerce").astype(float)
    vals = vals.where(np.isfinite(vals))
    if metric == "fber":
        vals = vals.where(vals >= 0)
    return vals


def sd_outliers(
    values: pd.Series,
    *,
    metric: str = "",
    modality: str = "",
    limit: float = 3.0,
    ddof: int = 1,
    iterate: bool = False,
    direction: str = "both",
) -> list[Trigger]:
    """Values beyond ``limit`` SDs of the sample mean (one IQM, one modality).

    Parameters
    ----------
    values
        IQM values indexed by subject.
    metric, modality
        Names recorded in the triggers (``metric`` also selects the bad direction and the
        FBER sentinel handling).
    limit
        Number of SDs.
    ddof
        Delta degrees of freedom of the SD.
    iterate
        Repeat on the remaining values until nothing more is excluded.
    direction
        ``"both"`` or ``"bad"`` (see :data:`BAD_DIRECTION`; unknown metrics use both).

    Returns
    -------
    list of Trigger
        One per excluded value, in pass order then subject order.
    """
    if direction not in ("both", "bad"):
        raise ValueError(f"direction must be 'both' or 'bad', got {direction!r}")
    vals = _clean(metric, values).dropna()
    sign = BAD_DIRECTION.get(metric, 0) if direction == "bad" else 0
    out: list[Trigger] = []
    remaining = vals
    while len(remaining) > ddof + 1:
        mean = float(remaining.mean())
        sd = float(remaining.std(ddof=ddof))
        if not np.isfinite(sd) or sd == 0:
            break
        z = (remaining - mean) / sd
        hit = (z * sign > limit) if sign else (z.abs() > limit)
        if not hit.any():
            break
        for subj in remaining.index[hit.to_numpy()]:
            out.append(
                Trigger(
                    str(subj),
                    modality,
                    metric,
                    "sd",
                    float(remaining[subj]),
                    mean,
                    sd,
                    float(z[subj]),
                )
            )
        remaining = remaining[~hit]
        if not iterate:
            break
    return out


def motion_outliers(
    fd_mean: pd.Series, *, fd_mean_max: float = 0.2, modality: str = "bold"
) -> list[Trigger]:
    """BOLD runs whose mean framewise displacement exceeds ``fd_mean_max`` (mm).

    Parameters
    ----------
    fd_mean
        Mean FD (Power) indexed by subject.
    fd_mean_max
        Threshold in mm (strict inequality).
    modality
        Name recorded in the triggers.

    Returns
    -------
    list of Trigger
    """
    vals = _clean("fd_mean", fd_mean).dropna()
    return [
        Trigger(
            str(s),
            modality,
            "fd_mean",
            "motion",
            float(v),
            float(fd_mean_max),
            float("nan"),
            float("nan"),
        )
        for s, v in vals.items()
        if v > fd_mean_max
    ]


def exclusion_table(
    tables: Mapping[str, pd.DataFrame],
    metrics: Mapping[str, Sequence[str]],
    *,
    limit: float = 3.0,
    ddof: int = 1,
    iterate: bool = False,
    direction: str = "both",
    fd_mean_max: float | None = 0.2,
    motion_modality: str = "bold",
) -> pd.DataFrame:
    """Run every rule on every modality and return all triggers as a long table.

    Parameters
    ----------
    tables
        Modality name (``"T1w"``, ``"bold"``) -> IQM table indexed by subject.
    metrics
        Modality -> IQMs screened by the SD rule (missing columns are skipped).
    limit, ddof, iterate, direction
        SD-rule options (see :func:`sd_outliers`).
    fd_mean_max
        Motion threshold (None disables the motion rule).
    motion_modality
        Modality whose ``fd_mean`` column the motion rule reads.

    Returns
    -------
    pandas.DataFrame
        Columns ``subject, modality, metric, rule, value, mean, sd, z`` (one row per
        trigger).
    """
    triggers: list[Trigger] = []
    for modality, table in tables.items():
        for metric in metrics.get(modality, ()):
            if metric not in table.columns:
                continue
            triggers += sd_outliers(
                table[metric],
                metric=metric,
                modality=modality,
                limit=limit,
                ddof=ddof,
                iterate=iterate,
                direction=direction,
            )
    if fd_mean_max is not None and motion_modality in tables:
        table = tables[motion_modality]
        if "fd_mean" in table.columns:
            triggers += motion_outliers(
                table["fd_mean"], fd_mean_max=fd_mean_max, modality=motion_modality
            )
    cols = ["subject", "modality", "metric", "rule", "value", "mean", "sd", "z"]
    return pd.DataFrame([t.__dict__ for t in triggers], columns=cols)


def subject_exclusions(triggers: pd.DataFrame) -> dict[str, dict[str, str]]:
    """Collapse triggers into the ``participants`` exclusion fields of each subject.

    Parameters
    ----------
    triggers
        Output of :func:`exclusion_table`.

    Returns
    -------
    dict
        subject -> ``{"status": "excluded", "exclusion_reason", "exclusion_rule",
        "exclusion_metric"}``; rules and metrics (``modality:metric``) of all triggers are
        joined with ``";"`` in trigger order, without duplicates.
    """
    out: dict[str, dict[str, str]] = {}
    for subject, rows in triggers.groupby("subject", sort=True):
        rules = list(dict.fromkeys(rows["rule"]))
        mets = list(dict.fromkeys(f"{m}:{k}" for m, k in zip(rows["modality"], rows["metric"])))
        reasons = [
            Trigger(**{k: r[k] for k in Trigger.__dataclass_fields__}).describe()
            for _, r in rows.iterrows()
        ]
        out[str(subject)] = {
            "status": "excluded",
            "exclusion_reason": "; ".join(reasons),
            "exclusion_rule": ";".join(rules),
            "exclusion_metric": ";".join(mets),
        }
    return out
