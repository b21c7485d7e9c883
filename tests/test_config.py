"""Run configuration: YAML sections, overrides, unknown keys, digest."""

from __future__ import annotations

import pytest

from isyb_dask.config import RunConfig, load_config
from isyb_dask.errors import ConfigError


def test_yaml_sections_and_overrides(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("deface:\n  nmi_bins: 32\nqc:\n  sd_limit: 2.5\ntemplates: [CN200=/x.nii.gz]\n")
    cfg = load_config(path, deface__method="zero")
    assert cfg.deface.nmi_bins == 32 and cfg.deface.method == "zero"
    assert cfg.qc.sd_limit == 2.5 and cfg.templates == ("CN200=/x.nii.gz",)


def test_unknown_setting_is_named(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("deface:\n  nmi_binz: 32\n")
    with pytest.raises(ConfigError, match="nmi_binz"):
        load_config(path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_digest_tracks_subject_level_settings_only():
    base = RunConfig()
    assert base.digest() == RunConfig().digest()
    assert base.digest() != base.replace(deface__nmi_bins=32).digest()
    assert base.digest() == base.replace(stats__design="overlapping").digest()  # group-level only
    assert base.digest() == base.replace(task_threads=4).digest()


def test_segmentation_mrf_setting(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("qc:\n  mrf_beta: 0\n")
    assert load_config(path).qc.mrf_beta == 0
    assert RunConfig().qc.mrf_beta == 0.01  # MRIQC's Atropos smoothing factor
    assert RunConfig().digest() != RunConfig().replace(qc__mrf_beta=0.0).digest()
    for bad in (-0.1, float("nan")):
        with pytest.raises(ConfigError, match="mrf_beta"):
            RunConfig().replace(qc__mrf_beta=bad)
