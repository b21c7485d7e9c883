"""Results store: layout round trip, string coordinates, region writes, consolidation."""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from isyb_dask.io import store

SUBJECTS = [f"sub-{i:04d}" for i in range(1, 7)]
TEMPLATES = ["pydeface", "CN200", "Chinese2020"]
METRICS = ["CT", "ALFF", "CBF"]
HEMI = ["L"] * 6 + ["R"] * 6


@pytest.fixture
def new_store(tmp_path):
    path = tmp_path / "results.zarr"
    parts = pd.DataFrame({"age": ["22", "25", "19", "30", "21", ""], "sex": list("FMFFMF")}, index=SUBJECTS)
    store.init_store(path, SUBJECTS, templates=TEMPLATES, anat_iqms=["snr_wm", "cnr"],
                     func_iqms=["fd_mean"], surface_metrics=METRICS, hemi=HEMI,
                     participants=parts, attrs={"software": "isyb-dask", "bids_dir": "/x"})
    return path


def test_layout_round_trip(new_store):
    rng = np.random.default_rng(0)
    values = rng.normal(size=(len(METRICS), len(HEMI))).astype(np.float32)
    store.write_subject(new_store, "surface", "sub-0003", {"value": values, "missing": ["no derivatives", "", ""]})
    store.write_subject(new_store, "deface", "sub-0002", {"nmi": [0.3, 0.31, 0.32], "brain_voxels_changed": [0, 0, 0]})
    store.write_subject(new_store, "qc_anat", "sub-0001", {"snr_wm": 11.5, "cnr": 3.25, "not_in_store": 1.0})
    store.write_subject(new_store, "participants", "sub-0004", {"status": "failed", "error": "anat: sub-0004_T1w.nii.gz: truncated"})
    store.consolidate(new_store)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no unstable-dtype or consolidation warnings for readers
        surf = xr.open_zarr(new_store, group="surface").load()
        part = xr.open_zarr(new_store, group="participants").load()
        deface = xr.open_zarr(new_store, group="deface").load()
    assert surf["value"].dims == ("subject", "metric", "vertex")
    assert surf["value"].encoding["chunks"] == (1, 3, 12)
    np.testing.assert_array_equal(surf["value"].sel(subject="sub-0003").values, values)
    assert np.isnan(surf["value"].sel(subject="sub-0001").values).all()  # untouched = fill
    assert list(surf["hemi"].values) == HEMI
    assert surf["missing"].sel(subject="sub-0003", metric="CT").item() == "no derivatives"
    assert deface.sel(subject="sub-0002", template="CN200")["nmi"].item() == pytest.approx(0.31)
    assert list(deface["template"].values) == TEMPLATES
    assert part["status"].sel(subject="sub-0004").item() == "failed"
    assert part["status"].sel(subject="sub-0001").item() == "pending"
    assert part["age"].dtype == np.float64 and np.isnan(part["age"].sel(subject="sub-0006"))
    assert part["sex"].sel(subject="sub-0002").item() == "M"
    assert part.attrs["bids_dir"] == "/x"
    assert store.list_groups(new_store) == sorted(store.SUBJECT_GROUPS)


def test_concurrent_region_writes_do_not_interfere(new_store):
    """Six writers at once, one subject each: every region ends with its own values."""

    def write(i: int) -> None:
        sub = SUBJECTS[i]
        store.write_subject(new_store, "surface", sub, {"value": np.full((3, 12), i, np.float32), "missing": ["", "", ""]})
        store.write_subject(new_store, "qc_func", sub, {"fd_mean": i / 10})

    threads = [threading.Thread(target=write, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    surf = store.open_group(new_store, "surface")["value"].values
    for i in range(6):
        assert (surf[i] == i).all()
    np.testing.assert_allclose(store.open_group(new_store, "qc_func").load()["fd_mean"].values, np.arange(6) / 10)


def test_reader_during_run_sees_fill_or_complete_values(new_store):
    store.write_subject(new_store, "surface", "sub-0001", {"value": np.ones((3, 12), np.float32)})
    reader = store.open_group(new_store, "surface")  # opened mid-run, before consolidation
    vals = reader["value"].values
    assert (vals[0] == 1).all() and np.isnan(vals[1:]).all()


def test_unknown_subject_is_an_error(new_store):
    with pytest.raises(KeyError, match="sub-9999"):
        store.write_subject(new_store, "qc_anat", "sub-9999", {"cnr": 1.0})


def test_store_matches_and_group_write(new_store):
    assert store.store_matches(new_store, SUBJECTS, TEMPLATES)
    assert not store.store_matches(new_store, SUBJECTS[:-1], TEMPLATES)
    assert not store.store_matches(new_store, SUBJECTS, TEMPLATES[:2])
    grp = xr.Dataset({"mean": (("metric", "vertex"), np.zeros((3, 12))), "label": ("metric", np.array(METRICS))},
                     coords={"metric": METRICS})
    store.write_group(new_store, "group", grp)
    store.consolidate(new_store)
    back = store.open_group(new_store, "group")
    assert list(back["metric"].values) == METRICS and list(back["label"].values) == METRICS
    store.update_participants(new_store, {"sub-0005": {"status": "excluded", "exclusion_reason": "fd_mean > 0.2"}})
    part = store.open_group(new_store, "participants").load()
    assert part["exclusion_reason"].sel(subject="sub-0005").item() == "fd_mean > 0.2"


def test_database_split_from_participants_is_kept(tmp_path):
    path = tmp_path / "r.zarr"
    parts = pd.DataFrame({"database": ["ISYB-1", "ISYB-2"]}, index=SUBJECTS[:2])
    store.init_store(path, SUBJECTS[:2], templates=TEMPLATES, anat_iqms=["cnr"], func_iqms=["fd_mean"],
                     surface_metrics=METRICS, hemi=HEMI, participants=parts)
    part = store.open_group(path, "participants").load()
    assert list(part["database"].values) == ["ISYB-1", "ISYB-2"]


def test_subject_groups_written_in_one_open(new_store, monkeypatch):
    """One subject's five groups: one store open, one index lookup, every value in place."""
    import zarr

    opens = []
    real = zarr.open_group
    monkeypatch.setattr(store.zarr, "open_group", lambda *a, **k: opens.append(a) or real(*a, **k))
    values = np.arange(36, dtype=np.float32).reshape(3, 12)
    store.write_subject_groups(new_store, "sub-0002", {
        "participants": {"status": "partial", "failed_stages": "metrics:CBF"},
        "deface": {"nmi": [0.1, 0.2, 0.3], "error": ["", "bad", ""]},
        "qc_anat": {"cnr": 2.5, "harmonization_route": "wm"},
        "qc_func": {"fd_mean": 0.125},
        "surface": {"value": values, "missing": ["", "", "no ASL"], "provenance": ["a", "", ""]},
    })
    assert len(opens) == 1
    monkeypatch.undo()
    assert store.open_group(new_store, "participants").load()["failed_stages"].sel(subject="sub-0002").item() == "metrics:CBF"
    deface = store.open_group(new_store, "deface").sel(subject="sub-0002").load()
    np.testing.assert_allclose(deface["nmi"].values, [0.1, 0.2, 0.3])
    assert list(deface["error"].values) == ["", "bad", ""]
    assert store.open_group(new_store, "qc_anat").load()["harmonization_route"].sel(subject="sub-0002").item() == "wm"
    assert store.open_group(new_store, "qc_func").load()["fd_mean"].sel(subject="sub-0002").item() == 0.125
    surf = store.open_group(new_store, "surface").load()
    np.testing.assert_array_equal(surf["value"].sel(subject="sub-0002").values, values)
    assert np.isnan(surf["value"].sel(subject="sub-0003").values).all()
    assert surf["missing"].sel(subject="sub-0002", metric="CBF").item() == "no ASL"


def test_participants_update_opens_the_store_once_for_any_n(new_store, monkeypatch):
    """The group step's update is O(N): one open for 1 or 6 subjects, not one per subject."""
    import zarr

    counts = []
    real = zarr.open_group
    for subjects in (SUBJECTS[:1], SUBJECTS):
        opens = []
        monkeypatch.setattr(store.zarr, "open_group", lambda *a, **k: opens.append(a) or real(*a, **k))
        store.update_participants(new_store, {s: {"status": "excluded", "exclusion_reason": f"r{s[-1]}"}
                                              for s in subjects})
        counts.append(len(opens))
    monkeypatch.undo()
    assert counts == [1, 1]
    part = store.open_group(new_store, "participants").load()
    assert list(part["exclusion_reason"].values) == [f"r{i}" for i in range(1, 7)]
    assert set(part["status"].values) == {"excluded"}
    with pytest.raises(KeyError, match="sub-9999"):
        store.update_participants(new_store, {"sub-9999": {"status": "ok"}})


def test_surface_chunks_are_stored_for_read_speed(new_store):
    """``surface/value`` chunks are uncompressed: one file of exactly the chunk's bytes."""
    import zarr

    arr = zarr.open_array(str(new_store / "surface" / "value"), mode="r+")
    assert arr.compressors == ()
    arr[0] = np.full(arr.shape[1:], 1.5, dtype=np.float32)
    (chunk,) = [p for p in (new_store / "surface" / "value").rglob("*")
                if p.is_file() and p.name != "zarr.json"]
    assert chunk.stat().st_size == 4 * int(np.prod(arr.shape[1:]))
