"""Tests of isyb_dask.group.maps (group mean/SD/count from the store)."""

from __future__ import annotations

import warnings

import dask
import numpy as np
import pytest
import xarray as xr

from isyb_dask.group.maps import compute_group_maps, run_group_maps
from isyb_dask.group.moments import group_moments, moments_from_sums
from isyb_dask.metrics.names import SURFACE_METRICS


def _store(tmp_path, n_sub=7, n_vertex=64984, seed=0):
    rng = np.random.default_rng(seed)
    n_m = len(SURFACE_METRICS)
    vals = rng.normal(3.0, 2.0, (n_sub, n_m, n_vertex)) * (1 + np.arange(n_m))[None, :, None]
    vals = vals.astype(np.float32)
    vals[:, :, :100] = np.nan  # "medial wall"
    vals[2, 5, 100:200] = np.nan  # one subject misses a patch of one metric
    vals[:, 0, :] = np.nan  # CT not available for anyone
    subjects = [f"sub-{i:04d}" for i in range(n_sub)]
    surf = xr.Dataset(
        {"value": (("subject", "metric", "vertex"), vals)},
        coords={
            "subject": subjects,
            "metric": list(SURFACE_METRICS),
            "vertex": np.arange(n_vertex),
        },
    ).chunk({"subject": 1, "metric": -1, "vertex": -1})
    status = np.array(["ok"] * n_sub, dtype="<U8")
    status[4] = "excluded"
    status[6] = "failed"
    part = xr.Dataset({"status": (("subject",), status)}, coords={"subject": subjects})
    path = tmp_path / "results.zarr"
    surf.to_zarr(path, group="surface", zarr_format=3, consolidated=False, mode="w")
    part.to_zarr(path, group="participants", zarr_format=3, consolidated=False, mode="a")
    keep = status == "ok"
    return path, vals, keep


def test_group_maps_equal_numpy_and_ignore_excluded(tmp_path):
    path, vals, keep = _store(tmp_path)
    out = run_group_maps(path, tmp_path / "out", figures=False)
    assert out["n_included"] == keep.sum() == 5
    g = xr.open_zarr(path, group="group", consolidated=False).load()
    sub = vals[keep].astype(np.float64)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        exp_mean = np.nanmean(sub, axis=0)
        exp_sd = np.nanstd(sub, axis=0, ddof=1)
    exp_n = np.isfinite(sub).sum(axis=0)
    np.testing.assert_array_equal(g["n"].values, exp_n)
    np.testing.assert_allclose(g["mean"].values, exp_mean, rtol=1e-5, atol=1e-5, equal_nan=True)
    np.testing.assert_allclose(g["sd"].values, exp_sd, rtol=1e-5, atol=1e-5, equal_nan=True)
    # mask: vertices where every included subject is finite, over metrics that have data
    assert not g["mask"].values[:200].any()
    assert g["mask"].values[200:].all()
    assert not g["metric_mask"].sel(metric="CT").values.any()
    assert g["metric_mask"].sel(metric="ReHo").values[100:].all()
    # excluded subjects really are ignored: changing them changes nothing
    assert list(g["metric"].values) == list(SURFACE_METRICS)


def test_moments_are_stable_for_large_offsets():
    rng = np.random.default_rng(1)
    x = (1e6 + rng.normal(0, 1e-2, (40, 2, 50))).astype(np.float64)
    arr = dask.array.from_array(x, chunks=(1, -1, -1))
    sums, shift = dask.compute(*group_moments(arr, split_every=3, subjects_per_task=4))
    n, dmean, m2 = moments_from_sums(sums)
    mean = shift + dmean
    np.testing.assert_array_equal(n, 40)
    np.testing.assert_allclose(mean, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(np.sqrt(m2 / 39), x.std(0, ddof=1), rtol=1e-6)


def test_single_subject_and_empty_inclusion():
    vals = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    ds = xr.Dataset(
        {"value": (("subject", "metric", "vertex"), vals)},
        coords={"subject": ["a", "b"], "metric": ["A", "B", "C"], "vertex": np.arange(4)},
    ).chunk({"subject": 1})
    g = compute_group_maps(ds, np.array([True, False]))
    np.testing.assert_array_equal(g["mean"].values, vals[0])
    assert np.isnan(g["sd"].values).all() and (g["n"].values == 1).all()
    g0 = compute_group_maps(ds, np.array([False, False]))
    assert (g0["n"].values == 0).all() and not g0["mask"].values.any()


def test_group_figures_are_written(tmp_path):
    path, _, _ = _store(tmp_path, n_sub=7)
    out = run_group_maps(path, tmp_path / "out")
    for name in ("group_mean_maps", "group_sd_maps"):
        p = out["figures"][name]
        assert p == tmp_path / "out" / "figures" / f"{name}.png"
        assert p.stat().st_size > 20_000
        with open(p, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_store_path_equals_in_memory_path(tmp_path):
    from isyb_dask.group.maps import included_subjects

    path, _, keep = _store(tmp_path, n_sub=7, n_vertex=500)
    surface = xr.open_zarr(path, group="surface", consolidated=False)
    inc = included_subjects(path, surface["subject"].values)
    np.testing.assert_array_equal(inc, keep)
    a = compute_group_maps(surface, inc, store_path=path, subjects_per_task=2)
    b = compute_group_maps(surface.load(), inc)
    for var in ("mean", "sd", "n", "mask", "metric_mask"):
        np.testing.assert_allclose(a[var].values, b[var].values, rtol=1e-5, equal_nan=True)


def test_group_maps_on_a_runner_store(tmp_path):
    """Integration with isyb_dask.io.store (the layout the runner writes)."""
    store = pytest.importorskip("isyb_dask.io.store")
    rng = np.random.default_rng(3)
    subjects = [f"sub-{i:04d}" for i in range(1, 5)]
    path = tmp_path / "results.zarr"
    store.init_store(
        path,
        subjects,
        templates=["MNI152"],
        anat_iqms=["snr"],
        func_iqms=["fd"],
        surface_metrics=list(SURFACE_METRICS),
        hemi=["L"] * 32492 + ["R"] * 32492,
    )
    vals = rng.normal(1.0, 0.3, (4, len(SURFACE_METRICS), 64984)).astype(np.float32)
    for i, s in enumerate(subjects):
        store.write_subject(path, "surface", s, {"value": vals[i], "missing": [""] * 13})
        status = "excluded" if i == 1 else ("failed" if i == 3 else "ok")
        store.write_subject(path, "participants", s, {"status": status})
    out = run_group_maps(path, tmp_path, figures=False)
    assert out["n_included"] == 2
    g = store.open_group(path, "group").load()
    np.testing.assert_allclose(g["mean"].values, vals[[0, 2]].mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g["sd"].values, vals[[0, 2]].std(0, ddof=1), rtol=1e-4, atol=1e-6)
    assert g["mask"].values.all() and (g["n"].values == 2).all()


def test_store_moments_with_gaps_and_drops(tmp_path, monkeypatch):
    """Rows with gaps, a dropped metric and NaN patches give the
    float64 NumPy moments; several uint8 count runs are folded (flush every 3 subjects)."""
    import zarr

    from isyb_dask.group import moments

    rng = np.random.default_rng(7)
    vals = (50.0 + rng.normal(0, 3, (21, 4, 300))).astype(np.float32)
    vals[:, :, :20] = np.nan
    vals[5, 2, 40:90] = np.nan
    vals[11, 1] = np.inf
    path = tmp_path / "m.zarr"
    arr = zarr.create_array(str(path), shape=vals.shape, chunks=(1, 4, 300), dtype="float32",
                            fill_value=np.nan)
    arr[:] = vals
    rows = [r for r in range(21) if r not in (3, 7, 8, 15)]
    drop = {12: np.array([False, False, False, True])}
    ref = vals[rows].astype(np.float64)
    ref[rows.index(12), 3] = np.nan
    ref[~np.isfinite(ref)] = np.nan
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        exp_mean, exp_sd = np.nanmean(ref, 0), np.nanstd(ref, 0, ddof=1)
    exp_n = np.isfinite(ref).sum(0)

    class ShortRuns(moments._Accumulator):
        def __init__(self, shape, shift, flush_every=3):
            super().__init__(shape, shift, flush_every)

    monkeypatch.setattr(moments, "_Accumulator", ShortRuns)
    sums, shift = moments.store_moments(path, np.array(rows), var_path="",
                                        subjects_per_task=12, n_streams=2, drop=drop)
    n, dmean, m2 = moments_from_sums(sums)
    np.testing.assert_array_equal(n, exp_n)
    with np.errstate(all="ignore"):
        sd = np.sqrt(m2 / (n - 1))
    ok = n > 1
    np.testing.assert_allclose((shift + dmean)[ok], exp_mean[ok], rtol=1e-6)
    np.testing.assert_allclose(sd[ok], exp_sd[ok], rtol=1e-5)


def test_accumulator_refuses_runs_longer_than_its_uint8_counts():
    from isyb_dask.group.moments import _Accumulator

    with pytest.raises(ValueError, match="255"):
        _Accumulator((2, 3), np.zeros((2, 3)), flush_every=256)
