"""Tests of isyb_dask.deface.nmi against an independent implementation (scikit-learn)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import normalized_mutual_info_score

from isyb_dask.deface.nmi import bin_labels, normalized_mutual_information, union_face_mask


@pytest.mark.parametrize("average", ["arithmetic", "geometric", "min", "max"])
@pytest.mark.parametrize("bins", [16, 64])
def test_matches_sklearn_on_same_labels(average, bins):
    rng = np.random.default_rng(0)
    a = rng.gamma(2.0, 100.0, 5000)
    b = 0.3 * a + rng.normal(0, 60, a.size)
    ours = normalized_mutual_information(a, b, bins=bins, average=average)
    ref = normalized_mutual_info_score(bin_labels(a, bins), bin_labels(b, bins), average_method=average)
    assert ours == pytest.approx(ref, abs=1e-10)
    assert 0.0 < ours < 1.0


def test_bins_equal_width_like_numpy_histogram():
    rng = np.random.default_rng(1)
    v = rng.normal(size=1000)
    counts, _ = np.histogram(v, bins=64)
    np.testing.assert_array_equal(np.bincount(bin_labels(v, 64), minlength=64), counts)


def test_limits_and_edge_cases():
    rng = np.random.default_rng(2)
    a = rng.random(4000)
    assert normalized_mutual_information(a, a) == pytest.approx(1.0)
    assert normalized_mutual_information(a, 3 * a + 1) == pytest.approx(1.0)
    # independent samples: MI only from finite-sample bias (~ (B-1)^2 / (2N) nats)
    ind = normalized_mutual_information(a, rng.random(4000), bins=16)
    assert ind < 0.05
    assert normalized_mutual_information(a, np.zeros_like(a)) == 0.0  # R == 0 (nothing removed)
    assert normalized_mutual_information(a, np.zeros_like(a), average="studholme") == pytest.approx(1.0)
    assert np.isnan(normalized_mutual_information(np.array([]), np.array([])))
    b = a.copy()
    b[:10] = np.nan  # non-finite pairs are dropped
    assert normalized_mutual_information(a, b) == pytest.approx(
        normalized_mutual_information(a[10:], a[10:])
    )
    with pytest.raises(ValueError):
        normalized_mutual_information(a, a[:-1])


def test_studholme_and_joint_relations():
    rng = np.random.default_rng(3)
    a = rng.random(3000)
    b = a + rng.normal(0, 0.2, a.size)
    y = normalized_mutual_information(a, b, average="studholme")
    arith = normalized_mutual_information(a, b, average="arithmetic")
    joint = normalized_mutual_information(a, b, average="joint")
    assert arith == pytest.approx(2 * (1 - 1 / y))  # METHODS §4 table
    assert joint == pytest.approx(y - 1)


def test_union_face_mask():
    o = np.zeros((4, 4, 4))
    d1, d2 = o.copy(), o.copy()
    d1[0, 0, 0] = 5
    d2[3, 3, 3] = -2
    m = union_face_mask(o, [d1, d2])
    assert m.sum() == 2 and m[0, 0, 0] and m[3, 3, 3]
    assert union_face_mask(o, [d1, d2], epsilon=3).sum() == 1
    assert union_face_mask(o, [d1], dilate=1).sum() == 4  # corner voxel + 3 neighbours
