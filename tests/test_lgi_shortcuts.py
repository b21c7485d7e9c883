"""The LGI speed-ups give the whole-grid answers (bounding-box closing, local sulcus reach)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from isyb_dask.metrics.gyrification import _nearest, outer_hull
from isyb_dask.metrics.morphometry import _open_sulci


def _blobs(shape=(44, 46, 40), seed=0):
    """A lumpy 'brain' (union of balls) off-centre in a larger grid, with a deep cleft."""
    rng = np.random.default_rng(seed)
    ijk = np.indices(shape).transpose(1, 2, 3, 0)
    mask = np.zeros(shape, bool)
    for _ in range(12):
        c = rng.uniform([14, 14, 12], [26, 30, 24])
        mask |= ((ijk - c) ** 2).sum(-1) <= rng.uniform(5, 8) ** 2
    mask[19:21, 10:36, 18:] = False  # a cleft the closing must bridge
    return mask


def _closing_whole_grid(mask, zooms, diameter_mm):
    """The closing computed on the whole (padded) grid, as before the bounding-box crop."""
    r = diameter_mm / 2.0
    pad = int(np.ceil(r / min(zooms))) + 2
    m = np.pad(mask, pad)
    dil = ndimage.distance_transform_edt(~m, sampling=zooms) <= r
    closed = ndimage.distance_transform_edt(dil, sampling=zooms) > r
    closed = ndimage.binary_fill_holes(closed | m)
    return closed[pad:-pad, pad:-pad, pad:-pad]


def test_outer_hull_on_the_bounding_box_equals_the_whole_grid():
    mask = _blobs()
    for zooms in ((1.0, 1.0, 1.0), (1.2, 1.0, 1.5)):
        got = outer_hull(mask, zooms, 15.0)
        want = _closing_whole_grid(mask, zooms, 15.0)
        assert got.sum() > mask.sum()  # the cleft was bridged
        np.testing.assert_array_equal(got, want)
    assert not outer_hull(np.zeros((8, 8, 8), bool), (1.0, 1.0, 1.0)).any()


def test_open_sulci_matches_the_distance_transform_rule():
    rng = np.random.default_rng(3)
    tissue = ndimage.gaussian_filter(rng.random((40, 42, 38)), 2.0)
    tissue = (tissue - tissue.min()) / np.ptp(tissue)
    skeleton = ndimage.binary_opening(rng.random(tissue.shape) > 0.55) & (tissue > 0.3)
    got = _open_sulci(skeleton, tissue, (1.0, 1.0, 1.0))
    # the rule as written before: distance transform of the whole grid, per-component minimum
    d_out = ndimage.distance_transform_edt(tissue >= 0.5)
    lab, n = ndimage.label(skeleton, structure=np.ones((3, 3, 3), bool))
    near = np.asarray(ndimage.minimum(d_out, lab, index=np.arange(1, n + 1)))
    size = np.asarray(ndimage.sum(np.ones_like(d_out), lab, index=np.arange(1, n + 1)))
    keep = np.concatenate([[False], (near <= 2.5) & (size >= 8)])
    want = keep[lab]
    assert 0 < want.sum() < skeleton.sum()
    np.testing.assert_array_equal(got, want)


def test_nearest_equals_the_default_kdtree_distances():
    rng = np.random.default_rng(1)
    theta, phi = rng.uniform(0, np.pi, 5000), rng.uniform(0, 2 * np.pi, 5000)
    shell = 60 * np.stack([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi),
                           np.cos(theta)], 1)
    queries = rng.normal(size=(3000, 3)) * 20  # deep inside the shell
    idx = _nearest(shell, queries)
    d_ref, _ = cKDTree(shell).query(queries)
    np.testing.assert_allclose(np.linalg.norm(shell[idx] - queries, axis=1), d_ref, rtol=1e-12)
