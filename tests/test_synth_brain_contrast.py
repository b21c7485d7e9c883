"""The synthetic T1w's brain has the class means of a real MPRAGE (synth.brain_contrast)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from isyb_dask.synth.anatomy import draw_anatomy, load_template_maps
from isyb_dask.synth.brain_contrast import (
    MPRAGE_RELATIVE_MEANS,
    calibrate_brain_contrast,
    fit_class_means,
)
from isyb_dask.synth.cohort import generate_study
from isyb_dask.synth.fields import Grid
from isyb_dask.synth.t1w import synth_t1w


def _phantom(rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Random tissue fractions summing to 1 inside a brain block, 0 outside."""
    shape = (20, 22, 24)
    raw = rng.random((3, *shape)) ** 2
    brain = np.zeros(shape, dtype=np.float32)
    brain[3:-3, 3:-3, 3:-3] = 1.0
    frac = raw / raw.sum(axis=0) * brain
    return dict(zip(("gm", "wm", "csf"), frac.astype(np.float32))), brain, raw


def test_class_means_are_replaced_and_texture_kept() -> None:
    rng = np.random.default_rng(0)
    fractions, brain, _ = _phantom(rng)
    texture = rng.normal(0.0, 5.0, brain.shape).astype(np.float32)
    means = {"gm": 280.0, "wm": 340.0, "csf": 220.0}  # the head template's (see module)
    scalp = 150.0 * (1.0 - brain)
    t1 = sum(m * fractions[k] for k, m in means.items()) + texture * brain + scalp
    fitted = fit_class_means(t1, fractions, brain)
    # least squares with a zero-mean texture: means within a few texture SEs
    for k, m in means.items():
        assert fitted[k] == pytest.approx(m, abs=1.0)
    out, info = calibrate_brain_contrast(t1, fractions, brain)
    target = info["target_means"]
    for k, rel in MPRAGE_RELATIVE_MEANS.items():
        assert target[k] == pytest.approx(fitted["wm"] * rel, rel=1e-12)
    expected = sum(target[k] * fractions[k] for k in target) + texture * brain + scalp
    expected += sum((means[k] - fitted[k]) * fractions[k] for k in means)  # fit error kept
    np.testing.assert_allclose(out, np.clip(expected, 0, None), atol=1e-3)
    # outside the brain nothing moves
    np.testing.assert_array_equal(out[brain == 0], t1[brain == 0].astype(np.float32))
    # refit on the output gives the target means
    refit = fit_class_means(out, fractions, brain)
    for k in target:
        assert refit[k] == pytest.approx(target[k], abs=1.0)


def test_empty_brain_is_refused() -> None:
    z = np.zeros((4, 4, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="brain mask is empty"):
        fit_class_means(z, {"gm": z, "wm": z, "csf": z}, z)


def test_generated_t1w_has_mprage_contrast() -> None:
    """Noise-free, bias-free 2 mm T1w: class means regressed on the sampled fractions."""
    maps = load_template_maps(2)
    anat = draw_anatomy(np.random.default_rng(5), "western", "M", maps)
    grid = Grid.centred((96, 128, 128), 2.0, maps.head_centre)
    t1 = synth_t1w(anat, maps, grid, np.random.default_rng(1), snr=float("inf"), gain=2.5,
                   bias_sd=0.0, contrast=0.0)
    fractions = {k: t1[k] for k in ("gm", "wm", "csf")}
    brain = t1["brain"] > 0.5  # the domain the calibration is fitted on
    means = fit_class_means(np.asarray(t1["t1w"], dtype=np.float64), fractions, brain)
    # partial volume is linear in the fractions, but the template texture they do not
    # explain is not noise: resampled through the subject's map (trilinear) it leans on the
    # small CSF class (measured: 0.308 on the 2 mm template, 0.335 on this head). The
    # template's own ratios were 0.65 and 0.82. GM, a large class, comes back at 0.720.
    assert means["csf"] / means["wm"] == pytest.approx(MPRAGE_RELATIVE_MEANS["csf"], abs=0.04)
    assert means["gm"] / means["wm"] == pytest.approx(MPRAGE_RELATIVE_MEANS["gm"], abs=0.01)
    target = maps.brain_contrast["target_means"]
    assert target["csf"] / target["wm"] == pytest.approx(0.31, rel=1e-12)
    assert maps.brain_contrast["template_means"]["csf"] / target["wm"] > 0.6


def test_truth_records_the_class_means(tmp_path: Path) -> None:
    out = generate_study(tmp_path / "bids", 1, "chinese", seed=1, voxel_size=4.0,
                         modalities=("anat",))
    info = json.loads((out / "derivatives" / "synth-truth" / "sub-0001" / "sub-0001_truth.json")
                      .read_text())
    recorded = info["t1w"]["brain_class_means"]
    assert set(recorded) == {"template_means", "target_means"}
    assert recorded["target_means"]["gm"] / recorded["target_means"]["wm"] == pytest.approx(0.72)
