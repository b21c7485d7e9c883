"""Tests of the anatomical QC masks, INU correction and tissue EM on phantoms."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from isyb_dask.qc import air_masks as bg
from isyb_dask.anat import masks as am
from isyb_dask.anat.segmentation import segment_tissues


def _head(shape=(48, 56, 48), seed=0):
    rng = np.random.default_rng(seed)
    g = np.indices(shape).astype(float)
    c = (np.array(shape) - 1) / 2
    r = np.sqrt(sum(((gi - ci) / (0.42 * n)) ** 2 for gi, ci, n in zip(g, c, shape)))
    head = r < 1.0
    brain = r < 0.7
    data = np.abs(rng.normal(0, 5, shape))
    data[head] = rng.normal(900, 30, head.sum())
    data[brain] = rng.normal(600, 30, brain.sum())
    return data.astype(np.float32), head, brain, r


def test_head_mask_recovers_phantom_head():
    data, head, brain, _ = _head()
    wm = brain.astype(np.float32)
    enhanced = am.enhance(data, wm, np.random.default_rng(0))
    dist = ndi.distance_transform_edt(~head)
    # native grid (MRIQC recipe): the sigma = 4 voxel gradient adds a rim of ~sigma voxels
    got = am.head_mask(enhanced, brain, (1.0, 1.0, 1.0), grid_mm=0)
    assert (got & head).sum() >= 0.99 * head.sum()
    assert dist[got].max() <= 6.0
    assert got[brain].all()
    assert not got[0].any() and not got[:, :, -1].any()
    # 2 mm processing grid (default for 1 mm data): same physical smoothing, coarser rim
    coarse = am.head_mask(enhanced, brain, (1.0, 1.0, 1.0))
    assert coarse.shape == head.shape
    assert (coarse & head).sum() >= 0.99 * head.sum()
    assert dist[coarse].max() <= 8.0
    # the rims differ by about one coarse voxel (~10 % of this small phantom's mask)
    assert 2 * (coarse & got).sum() / (coarse.sum() + got.sum()) > 0.85


def test_enhance_replaces_only_outliers():
    data, _head_mask, brain, _ = _head()
    data[5, 5, 5] = 1e6
    out = am.enhance(data, brain.astype(float), np.random.default_rng(1))
    assert out[5, 5, 5] < 2000
    changed = out != data
    assert changed.sum() <= np.ceil(2e-4 * (data > 0).sum()) + 1


def test_hat_mask_planes_identity_mapping():
    shape = (20, 30, 40)
    head = np.zeros(shape, bool)
    head[5:15, 5:25, 10:30] = True
    affine = np.eye(4)
    # MNI -> image mm: translation so that glabella z=-14 -> k=20 and inion -> k=12.
    # Use a shear-free map with different z offsets for anterior/posterior points:
    mni_to_img = np.eye(4)
    mni_to_img[2, 1] = 0.04  # z' = z + 0.04 y  -> glabella (y=90) k=-14+3.6+30
    mni_to_img[2, 3] = 30.0
    hat, lm = bg.hat_mask(head, affine, mni_to_img)
    g_k = int(-14 + 0.04 * 90 + 30)
    i_k = int(-14 + 0.04 * -120 + 30)
    assert lm == {"inion_k": float(i_k), "glabella_k": float(g_k)}
    assert not hat[:, :, :i_k].any()
    assert not hat[:, 15:, :g_k].any()
    assert hat[:, :15, i_k:g_k].sum() == ((~head)[:, :15, i_k:g_k]).sum()
    assert not (hat & head).any()
    # landmarks outside the grid are clipped, not wrapped
    far = np.eye(4)
    far[2, 3] = -500.0
    hat2, lm2 = bg.hat_mask(head, affine, far)
    assert lm2["inion_k"] == 0.0 and hat2.sum() == (~head).sum()


def test_artifact_mask_far_ghost_only():
    rng = np.random.default_rng(2)
    shape = (40, 40, 40)
    data = np.abs(rng.normal(0, 5, shape)).astype(np.float32)
    head = np.zeros(shape, bool)
    head[12:28, 12:28, 12:28] = True
    data[head] = 800
    data[1:5, 1:5, 1:5] = 400  # ghost far from the head
    data[29:31, 14:18, 14:18] = 400  # bright rim touching the head
    hat = ~head
    art = bg.artifact_mask(data, hat, head)
    ghost = np.zeros(shape, bool)
    ghost[1:5, 1:5, 1:5] = True
    # the 6-connectivity opening keeps the ghost minus its cube edges
    assert art[2:4, 2:4, 2:4].all() and art.sum() >= 32
    assert not (art & ~ghost).any()


def test_air_mask_excludes_face_rotation_artifacts():
    shape = (10, 10, 10)
    hat = np.ones(shape, bool)
    art = np.zeros(shape, bool)
    art[0] = True
    rot = np.zeros(shape, np.uint8)
    rot[1] = 1
    face = np.zeros(shape, np.uint8)  # deface stage's desc-face mask: 1 = face region
    face[2:4] = 1
    air = bg.air_mask(hat, art, rot, (face,))
    assert air.sum() == 600 and not air[:4].any()


def test_n4_recovers_smooth_bias():
    data, _head_mask, brain, r = _head(shape=(40, 48, 40), seed=5)
    g = np.indices(data.shape).astype(float)
    bias = np.exp(0.3 * (g[1] - 24) / 24 + 0.15 * (g[2] - 20) / 20)
    biased = data * bias.astype(np.float32)
    corrected, field = am.n4_correct(biased, (2.0, 2.0, 2.0), brain, grid_mm=4.0)
    inner = r < 0.6
    cv_before = biased[inner].std() / biased[inner].mean()
    cv_after = corrected[inner].std() / corrected[inner].mean()
    cv_true = data[inner].std() / data[inner].mean()
    assert cv_before > 1.5 * cv_true
    assert cv_after < 1.1 * cv_true
    ratio = field[inner] / bias[inner]
    assert ratio.std() / ratio.mean() < 0.05  # same shape up to a global scale


def test_segmentation_recovers_three_classes():
    rng = np.random.default_rng(9)
    shape = (30, 30, 30)
    truth = rng.integers(0, 3, shape)
    means = np.array([300.0, 650.0, 950.0])
    data = (means[truth] + rng.normal(0, 50, shape)).astype(np.float32)
    brain = np.ones(shape, bool)
    brain[:2] = False
    priors = np.full((3, *shape), 1 / 3, np.float32)
    post, info = segment_tissues(data, brain, priors, prior_weight=0.1)
    acc = (post.argmax(0)[brain] == truth[brain]).mean()
    assert acc > 0.99
    for k, t in enumerate(("csf", "gm", "wm")):
        assert info[f"{t}_mean"] == pytest.approx(means[k], abs=5)
        assert info[f"{t}_sd"] == pytest.approx(50, rel=0.1)
    assert np.allclose(post[:, brain].sum(0), 1, atol=1e-5)
    assert not post[:, ~brain].any()
    with pytest.raises(ValueError):
        segment_tissues(data, np.zeros(shape, bool), priors)


def test_segmentation_priors_break_intensity_ties():
    # two classes share the same intensity: the prior decides
    rng = np.random.default_rng(3)
    shape = (20, 20, 20)
    data = rng.normal(500, 20, shape).astype(np.float32)
    data[:, :, 10:] += 400
    priors = np.zeros((3, *shape), np.float32)
    priors[0, :, :, :10] = 0.9  # CSF prior on the dark half
    priors[1, :, :, :10] = 0.1
    priors[2, :, :, 10:] = 1.0
    post, _ = segment_tissues(data, np.ones(shape, bool), priors, prior_weight=0.9)
    assert post[2, :, :, 10:].mean() > 0.95
    assert post[0, :, :, :10].mean() > post[1, :, :, :10].mean()


def test_harmonize_factor():
    data = np.full((12, 12, 12), 500.0, np.float32)
    wm = np.zeros_like(data)
    wm[2:10, 2:10, 2:10] = 0.95
    assert bg.wm_harmonize_factor(data, wm) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        bg.wm_harmonize_factor(data, np.zeros_like(data))


def test_harmonize_falls_back_when_wm_is_too_thin():
    rng = np.random.default_rng(1)
    data = rng.uniform(100, 200, (20, 20, 20))
    brain = np.zeros(data.shape, bool)
    brain[4:16, 4:16, 4:16] = True
    wm_prob = np.full(data.shape, 0.6)  # partial volume: never >= 0.9
    inside = data[brain]
    lo, hi = np.percentile(inside, [75, 95])
    expected = 1000.0 / np.median(inside[(inside >= lo) & (inside <= hi)])
    assert bg.wm_harmonize_factor(data, wm_prob, brain=brain) == pytest.approx(expected)
    with pytest.raises(ValueError, match="empty white-matter mask"):
        bg.wm_harmonize_factor(data, wm_prob)
