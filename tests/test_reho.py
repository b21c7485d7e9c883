"""Tests of ReHo (Kendall's W) in volume and on a mesh."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.stats import rankdata

from isyb_dask.errors import InputError
from isyb_dask.metrics.reho import kendall_w, mesh_adjacency, reho_surface, reho_volume


def _direct_w(series: np.ndarray, tie_correction: bool = False) -> float:
    """Mean-rank form W = 12 sum(rbar^2)/(n^3-n) - 3(n+1)/(n-1) (CCS), with optional ties."""
    k, n = series.shape
    ranks = np.array([rankdata(s) for s in series])
    rbar = ranks.mean(0)
    w = 12 * np.sum(rbar**2) / (n**3 - n) - 3 * (n + 1) / (n - 1)
    if tie_correction:
        ties = 0.0
        for s in series:
            _, counts = np.unique(s, return_counts=True)
            ties += np.sum(counts**3 - counts)
        w *= k**2 * (n**3 - n) / (k**2 * (n**3 - n) - k * ties)
    return w


def test_identical_series_give_one():
    rng = np.random.default_rng(0)
    x = rng.normal(size=60)
    data = np.broadcast_to(x, (6, 6, 6, 60)).copy()
    w = reho_volume(data)
    assert np.allclose(w[1:-1, 1:-1, 1:-1], 1.0, atol=1e-6)
    assert np.all(w[0] == 0) and np.all(w[:, :, -1] == 0)  # outer layer


def test_independent_noise_near_expectation():
    # under H0, E[W] = 1/K; Var[W] = 2 (K - 1) / (K^3 (n - 1))
    rng = np.random.default_rng(1)
    n, k = 100, 27
    w = reho_volume(rng.normal(size=(10, 10, 10, n)))[1:-1, 1:-1, 1:-1]
    sd_one = np.sqrt(2 * (k - 1) / (k**3 * (n - 1)))
    # 512 voxels with overlapping neighbourhoods: at least 512/27 effective samples
    tol = 5 * sd_one / np.sqrt(512 / 27)
    assert abs(w.mean() - 1 / k) < tol
    assert w.std() == pytest.approx(sd_one, rel=0.3)


@pytest.mark.parametrize("tie_correction", [False, True])
def test_matches_direct_computation_with_mask_and_ties(tie_correction):
    rng = np.random.default_rng(2)
    data = rng.integers(0, 6, size=(7, 7, 7, 30)).astype(float)  # many ties
    mask = rng.random((7, 7, 7)) > 0.25
    w = reho_volume(data, mask, tie_correction=tie_correction)
    for x, y, z in [(3, 3, 3), (1, 2, 5), (4, 5, 1), (5, 5, 5), (2, 4, 3)]:
        if not mask[x, y, z]:
            assert w[x, y, z] == 0
            continue
        nb = [(x + a, y + b, z + c) for a, b, c in itertools.product((-1, 0, 1), repeat=3)]
        series = np.array([data[p] for p in nb if mask[p]])
        expected = _direct_w(series, tie_correction)
        assert w[x, y, z] == pytest.approx(expected, abs=1e-6)
        direct = kendall_w(series, tie_correction=tie_correction)
        assert direct == pytest.approx(expected, abs=1e-9)


def test_small_neighbourhoods_and_errors():
    rng = np.random.default_rng(3)
    data = rng.normal(size=(5, 5, 5, 20))
    w7 = reho_volume(data, neighbourhood=7)
    series = np.array([data[2, 2, 2], data[1, 2, 2], data[3, 2, 2], data[2, 1, 2],
                       data[2, 3, 2], data[2, 2, 1], data[2, 2, 3]])
    assert w7[2, 2, 2] == pytest.approx(_direct_w(series), abs=1e-6)
    with pytest.raises(InputError):
        reho_volume(data, neighbourhood=9)
    isolated = np.zeros((5, 5, 5), bool)
    isolated[2, 2, 2] = True
    assert reho_volume(data, isolated)[2, 2, 2] == 0  # K < 2


def _grid_mesh(nx: int, ny: int) -> np.ndarray:
    idx = np.arange(nx * ny).reshape(nx, ny)
    a, b = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel()
    c, d = idx[:-1, 1:].ravel(), idx[1:, 1:].ravel()
    return np.vstack([np.stack([a, b, c], 1), np.stack([b, d, c], 1)])


def test_surface_matches_direct():
    rng = np.random.default_rng(4)
    faces = _grid_mesh(6, 5)
    v = 30
    series = rng.normal(size=(v, 40))
    series[7] = series[8] * 2 + 1  # a perfectly concordant pair
    mask = np.ones(v, bool)
    mask[12] = False
    w = reho_surface(series, faces, mask=mask)
    adj = mesh_adjacency(faces, v).toarray()
    for i in range(v):
        if not mask[i]:
            assert w[i] == 0
            continue
        members = [i] + [j for j in np.nonzero(adj[i])[0] if mask[j]]
        assert w[i] == pytest.approx(_direct_w(series[members]), abs=1e-6)
    same = reho_surface(np.tile(series[:1], (v, 1)), faces)
    assert np.allclose(same, 1.0, atol=1e-6)


def test_real_bold_more_homogeneous_than_its_time_shuffled_null(shared_data):
    import nibabel as nb
    from scipy import ndimage as ndi

    from isyb_dask.metrics.func_preproc import bandpass, epi_mask, regress_out

    img = nb.load(shared_data / "func" / "nitime_fmri1_crop.nii.gz")
    data = np.asanyarray(img.dataobj).astype(np.float32)[..., 5:]
    mask = epi_mask(data.mean(-1))
    series = bandpass(regress_out(data, mask, None), 1.35, mask=mask)
    inner = mask.copy()
    for ax in range(3):
        inner[(slice(None),) * ax + ([0, -1],)] = False
    w_real = reho_volume(series, mask)[inner]
    rng = np.random.default_rng(0)
    shuffled = series.copy()
    flat = shuffled[mask]
    order = np.argsort(rng.random(flat.shape), axis=1)  # independent permutation per voxel
    shuffled[mask] = np.take_along_axis(flat, order, axis=1)
    w_null = reho_volume(shuffled, mask)[inner]
    # null: E[W] = 1/K with K the in-mask neighbourhood size of each voxel
    k = ndi.convolve(mask.astype(float), np.ones((3, 3, 3)), mode="constant")[inner]
    n = series.shape[-1]
    se = np.sqrt(np.mean(2 * (k - 1) / (k**3 * (n - 1)))) / np.sqrt(inner.sum() / 27)
    assert abs(w_null.mean() - np.mean(1 / k)) < 4 * se
    # neighbouring real voxels share signal: clearly above the null
    assert w_real.mean() > w_null.mean() + 4 * se
