"""Tests of isyb_dask.qc.motion (Power FD and MRIQC summaries)."""

from __future__ import annotations

import numpy as np
import pytest

from isyb_dask.qc.motion import fd_summary, framewise_displacement


def _params(n: int = 50, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    steps = rng.normal(0.0, 1.0, (n, 6)) * np.array([0.1, 0.1, 0.1, 0.002, 0.002, 0.002])
    return np.cumsum(steps, axis=0)


def test_fd_hand_computed() -> None:
    params = np.zeros((3, 6))
    params[1] = [0.1, -0.2, 0.0, 0.001, 0.0, -0.002]
    params[2] = [0.1, -0.2, 0.3, 0.001, 0.0, -0.002]
    fd = framewise_displacement(params, radius=50.0)
    assert fd.shape == (2,)
    assert fd[0] == pytest.approx(0.3 + 50.0 * 0.003, rel=1e-12)
    assert fd[1] == pytest.approx(0.3, rel=1e-12)


def test_fd_equals_nipype(tmp_path) -> None:
    nipype_confounds = pytest.importorskip("nipype.algorithms.confounds")
    params = _params()
    # FSL .par column order is rot_x rot_y rot_z trans_x trans_y trans_z (radians, mm).
    par = tmp_path / "motion.par"
    np.savetxt(par, params[:, [3, 4, 5, 0, 1, 2]], fmt="%.10f")
    node = nipype_confounds.FramewiseDisplacement(
        in_file=str(par), parameter_source="FSL", radius=50.0,
        out_file=str(tmp_path / "fd.txt"),
    )
    res = node.run(cwd=str(tmp_path))
    ref = np.loadtxt(res.outputs.out_file, skiprows=1)
    ours = framewise_displacement(np.round(params, 10), radius=50.0)
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-12)
    assert fd_summary(ours)["fd_mean"] == pytest.approx(res.outputs.fd_average, rel=1e-9)


def test_fd_summary_mriqc_percentage() -> None:
    fd = np.array([0.1, 0.25, 0.2, 0.5])  # T = 5 volumes; 0.2 is not > 0.2
    out = fd_summary(fd, threshold=0.2)
    assert out["fd_num"] == 2
    assert out["fd_perc"] == pytest.approx(100.0 * 2 / 5)
    assert out["fd_mean"] == pytest.approx(fd.mean())


def test_fd_radius_scales_rotations_only() -> None:
    params = _params(20)
    rot_only = params.copy()
    rot_only[:, :3] = 0.0
    np.testing.assert_allclose(
        framewise_displacement(rot_only, radius=100.0),
        2.0 * framewise_displacement(rot_only, radius=50.0),
    )


def test_fd_rejects_bad_shape() -> None:
    with pytest.raises(ValueError):
        framewise_displacement(np.zeros((5, 3)))
    with pytest.raises(ValueError):
        fd_summary(np.array([]))
