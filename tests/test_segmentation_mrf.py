"""Atropos' Potts MRF in the final E-step of the tissue segmentation (MRIQC: radius 1, 0.01)."""

from __future__ import annotations

import numpy as np
import pytest

from isyb_dask.anat.segmentation import mrf_neighbour_weights, segment_tissues

MEANS = np.array([300.0, 650.0, 950.0])


def _slabs(noise_sd: float, seed: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three equal slabs (CSF, GM, WM) along x with Gaussian noise; flat priors."""
    rng = np.random.default_rng(seed)
    shape = (36, 24, 24)
    truth = np.repeat(np.arange(3), 12)[:, None, None] * np.ones(shape, dtype=int)
    data = MEANS[truth] + rng.normal(0.0, noise_sd, shape)
    priors = np.full((3, *shape), 1.0 / 3.0)
    return data, truth, priors


def test_neighbour_weights_are_inverse_distances_in_mm():
    w = mrf_neighbour_weights((1.0, 1.0, 2.0))
    assert w[1, 1, 1] == 0.0
    assert w[0, 1, 1] == pytest.approx(1.0)
    assert w[1, 1, 0] == pytest.approx(0.5)
    assert w[0, 0, 1] == pytest.approx(1.0 / np.sqrt(2.0))
    assert w[0, 0, 0] == pytest.approx(1.0 / np.sqrt(6.0))
    iso = mrf_neighbour_weights((1.0, 1.0, 1.0))
    assert iso.sum() == pytest.approx(6 + 12 / np.sqrt(2) + 8 / np.sqrt(3))


def test_zero_beta_is_the_plain_em_and_the_mrf_keeps_the_fit():
    data, _, priors = _slabs(150.0)
    brain = np.ones(data.shape, bool)
    plain, info0 = segment_tissues(data, brain, priors)
    off, _ = segment_tissues(data, brain, priors, mrf_beta=0.0)
    on, info1 = segment_tissues(data, brain, priors, mrf_beta=0.01)
    np.testing.assert_array_equal(plain, off)
    for key in ("csf_mean", "gm_mean", "wm_mean", "csf_sd", "gm_sd", "wm_sd"):
        assert info1[key] == info0[key]  # the intensity model is fitted without the MRF
    assert info0["mrf_labels_changed"] == 0
    assert info1["mrf_labels_changed"] > 0
    np.testing.assert_allclose(on.sum(axis=0), 1.0, atol=1e-5)


def test_one_sweep_multiplies_by_exp_beta_times_agreeing_neighbour_weight():
    # the Potts energy by hand at one voxel: exp(-beta * D_k) renormalised, where D_k is the
    # inverse-distance weight of the neighbours labelled other than k
    data, _, priors = _slabs(150.0)
    brain = np.ones(data.shape, bool)
    beta = 0.05
    plain, _ = segment_tissues(data, brain, priors)
    one, _ = segment_tissues(data, brain, priors, mrf_beta=beta, mrf_sweeps=1)
    labels = plain.argmax(axis=0)
    w = mrf_neighbour_weights((1.0, 1.0, 1.0))
    for voxel in [(12, 10, 10), (11, 3, 17), (23, 20, 5)]:
        i, j, k = voxel
        hood = labels[i - 1 : i + 2, j - 1 : j + 2, k - 1 : k + 2]
        disagree = np.array([w[hood != c].sum() for c in range(3)])
        expected = plain[(slice(None), *voxel)] * np.exp(-beta * disagree)
        expected /= expected.sum()
        np.testing.assert_allclose(one[(slice(None), *voxel)], expected, rtol=1e-5)


def test_voxels_outside_the_brain_are_no_neighbours():
    data, _, priors = _slabs(150.0)
    brain = np.ones(data.shape, bool)
    brain[:, :, :2] = False
    beta = 0.05
    plain, _ = segment_tissues(data, brain, priors)
    one, _ = segment_tissues(data, brain, priors, mrf_beta=beta, mrf_sweeps=1)
    labels = np.where(brain, plain.argmax(axis=0), -1)
    w = mrf_neighbour_weights((1.0, 1.0, 1.0))
    i, j, k = 20, 12, 2  # next to the masked-out slab
    hood = labels[i - 1 : i + 2, j - 1 : j + 2, k - 1 : k + 2]
    disagree = np.array([w[(hood != c) & (hood >= 0)].sum() for c in range(3)])
    expected = plain[:, i, j, k] * np.exp(-beta * disagree)
    np.testing.assert_allclose(one[:, i, j, k], expected / expected.sum(), rtol=1e-5)
    assert not one[:, ~brain].any()


def test_mrf_lowers_the_label_error_of_a_noisy_image():
    # a contrast of 2.3 noise SDs between neighbouring classes: the plain EM mislabels about a
    # fifth of the voxels (0.189); MRIQC's weak MRF removes some (0.177), a strong one more
    # than half (0.072)
    data, truth, priors = _slabs(150.0)
    brain = np.ones(data.shape, bool)
    errors = {}
    for beta in (0.0, 0.01, 0.1):
        post, _ = segment_tissues(data, brain, priors, mrf_beta=beta)
        errors[beta] = float((post.argmax(axis=0) != truth).mean())
    assert errors[0.0] > 0.15
    assert errors[0.01] < errors[0.0] - 0.005
    assert errors[0.1] < 0.5 * errors[0.0]
