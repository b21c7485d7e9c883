"""Settings of the group statistics stage."""

from __future__ import annotations

from dataclasses import dataclass

from isyb_dask.errors import ConfigError


@dataclass(frozen=True)
class StatsConfig:
    """Split and ANOVA settings (METHODS §0a, §14).

    Attributes
    ----------
    split_column
        ``participants.tsv`` column holding the database split, if present.
    split_seed
        Seed of the random discovery/validation split when the column is absent.
    split_fraction
        Fraction of subjects in the first database (paper: 89 of 215).
    design
        Design whose post-hoc rows go to ``table1.tsv``: ``"mixed"`` (database between
        subjects) or ``"overlapping"`` (ISYB-1, ISYB-2, ISYB).  Both ANOVAs are always run.
    padjust
        Multiple-comparison adjustment of the post-hoc tests (none, bonferroni, sidak).
    split_labels
        Names of the two halves.
    combined_label
        Name of the whole-sample database in the overlapping layout.
    alpha
        Level of the post-hoc confidence intervals and of the stars in Figure 6.
    vertex_factor
        Participants column compared at every vertex (falls back to the database split
        when absent or with fewer than two levels).
    vertex_chunk
        Vertices per Dask chunk of the vertex-wise maps.
    """

    split_column: str = "database"
    split_seed: int = 215
    split_fraction: float = 89 / 215
    design: str = "mixed"
    padjust: str = "bonferroni"
    split_labels: tuple[str, str] = ("ISYB-1", "ISYB-2")
    combined_label: str = "ISYB"
    alpha: float = 0.05
    vertex_factor: str = "population"
    vertex_chunk: int = 8192

    def __post_init__(self) -> None:
        if self.design not in ("mixed", "overlapping"):
            raise ConfigError(
                f"stats design must be 'mixed' or 'overlapping', not {self.design!r}")
        if self.padjust not in ("none", "bonferroni", "sidak", "tukey"):
            raise ConfigError(
                f"stats padjust must be none, bonferroni, sidak or tukey, not {self.padjust!r}")
        if not 0.0 < self.split_fraction < 1.0:
            raise ConfigError(
                f"stats split_fraction must be in (0, 1), got {self.split_fraction}")
        if not 0.0 < self.alpha < 1.0:
            raise ConfigError(f"stats alpha must be in (0, 1), got {self.alpha}")
        if len(self.split_labels) != 2 or len(set(self.split_labels)) != 2:
            raise ConfigError(
                f"stats split_labels must be two distinct names: {self.split_labels}")
        if self.combined_label in self.split_labels:
            raise ConfigError("stats combined_label must differ from the split labels")
        if self.vertex_chunk < 1:
            raise ConfigError(f"stats vertex_chunk must be positive, got {self.vertex_chunk}")
