"""Run configuration: one immutable object passed explicitly down the call chain.

A YAML file (``--config FILE``) has one section per stage, for example::

    deface:
      method: maskface
      nmi_bins: 64
    qc:
      sd_limit: 3.0
    templates:
      - CN200=/data/templates/CN200.nii.gz
    template_config: configs/templates.yaml

Command-line options override the file. The effective configuration is written next to the
outputs (``OUT_DIR/logs/config-<run>.yaml``) and its hash keys the resume check.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from isyb_dask.deface.config import DefaceConfig
from isyb_dask.errors import ConfigError
from isyb_dask.metrics.config import MetricsConfig
from isyb_dask.qc.config import QCConfig
from isyb_dask.stats.config import StatsConfig

__all__ = ["RunConfig", "load_config"]

_SECTIONS = {"deface": DefaceConfig, "qc": QCConfig, "metrics": MetricsConfig, "stats": StatsConfig}


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides the results of a run.

    Attributes
    ----------
    deface, qc, metrics, stats
        Stage settings.
    templates
        Template specs ``NAME=HEAD.nii.gz[:FACEMASK.nii.gz]`` (``--template``); the built-in
        ``pydeface`` template is always included.
    template_config
        Optional YAML file listing templates (``configs/templates.yaml`` format).
    stages
        Participant-level stages to run (subset of deface, qc_anat, qc_func, metrics).
    cache_dir
        Where the reference atlas is cached (default ``~/.cache/isyb-dask``).
    task_threads
        Threads each task may use (SimpleITK, BLAS); the cluster sets it per worker.
    """

    deface: DefaceConfig = field(default_factory=DefaceConfig)
    qc: QCConfig = field(default_factory=QCConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    stats: StatsConfig = field(default_factory=StatsConfig)
    templates: tuple[str, ...] = ()
    template_config: str | None = None
    stages: tuple[str, ...] = ("deface", "qc_anat", "qc_func", "metrics")
    cache_dir: str | None = None
    task_threads: int = 1

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (YAML/JSON serialisable)."""
        return json.loads(json.dumps(dataclasses.asdict(self), default=str))

    def digest(self) -> str:
        """Hash of the settings that change per-subject results (resume key)."""
        payload = self.to_dict()
        payload.pop("stats", None)  # group-level only
        payload.pop("cache_dir", None)
        payload.pop("task_threads", None)
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def replace(self, **changes: Any) -> "RunConfig":
        """A copy with some top-level fields or ``section__field`` values changed."""
        top = {k: v for k, v in changes.items() if "__" not in k}
        cfg = dataclasses.replace(self, **top)
        for key, val in changes.items():
            if "__" in key:
                section, name = key.split("__", 1)
                cfg = dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), **{name: val})})
        return cfg


def _coerce(cls: type, values: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(known)
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {sorted(unknown)}; known: {sorted(known)}")
    kwargs = {}
    for name, val in values.items():
        default = getattr(cls(), name)
        if isinstance(default, tuple) and isinstance(val, list):
            val = tuple(val)
        kwargs[name] = val
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def load_config(path: str | os.PathLike[str] | None = None, **overrides: Any) -> RunConfig:
    """Read a YAML configuration file (optional) and apply overrides.

    Raises
    ------
    ConfigError
        For a missing file, invalid YAML or an unknown setting.
    """
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: configuration file not found")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: invalid YAML ({exc})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: expected a mapping of sections")
    kwargs: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        kwargs[name] = _coerce(cls, dict(data.pop(name, {}) or {}), f"config section '{name}'")
    top = _coerce(RunConfig, {k: v for k, v in data.items()}, "config") if data else RunConfig()
    cfg = dataclasses.replace(top, **kwargs)
    return cfg.replace(**{k: v for k, v in overrides.items() if v is not None})
