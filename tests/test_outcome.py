"""Subject outcomes (ok / partial / failed), up-front input validation, and programming
errors that must fail the task loudly instead of becoming a result row."""

from __future__ import annotations

import json

import nibabel as nb
import numpy as np
import pytest
import xarray as xr

from isyb_dask.config import RunConfig
from isyb_dask.errors import InputError
from isyb_dask.io import store as results_store
from isyb_dask.io.bids import SubjectInputs
from isyb_dask.io.validate import validate_subject
from isyb_dask.outcome import subject_outcome
from isyb_dask.pipeline import tasks

AFF = np.diag([3.0, 3.0, 3.0, 1.0])


def _head(shape=(64, 64, 64)) -> np.ndarray:
    """An ellipsoid 'head' (~1.6 l at 3 mm) in faint noise: passes the head-in-view check."""
    rng = np.random.default_rng(0)
    g = np.stack(np.meshgrid(*[np.arange(n) - n / 2 for n in shape], indexing="ij"))
    inside = ((g / np.array([22, 26, 24])[:, None, None, None]) ** 2).sum(0) < 1
    return (np.abs(rng.normal(0, 2, shape)) + 400 * inside).astype(np.float32)


def _subject(tmp_path, name="sub-01", **modalities) -> SubjectInputs:
    anat = tmp_path / "bids" / name / "anat"
    anat.mkdir(parents=True)
    t1w = anat / f"{name}_T1w.nii.gz"
    nb.save(nb.Nifti1Image(modalities.pop("t1w_data", _head()), AFF), str(t1w))
    return SubjectInputs(subject=name, t1w=t1w, **modalities)


def _series(path, n_vol, shape=(10, 10, 8)):
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(1).normal(100, 5, shape + (n_vol,)).astype(np.float32)
    nb.save(nb.Nifti1Image(data, AFF), str(path))
    return path


# ----------------------------------------------------------------------------- outcome
@pytest.mark.parametrize(
    "result, status, stages",
    [
        ({"errors": {}, "timings": {"qc_anat": 1}}, "ok", ()),
        ({"errors": {"inputs": "sub-01/anat/x: no head"}, "timings": {}}, "failed", ("inputs",)),
        ({"errors": {"inputs:dwi": "bvec"}, "timings": {"metrics": 1}}, "partial", ("inputs:dwi",)),
        ({"errors": {"qc_anat": "qc_anat: boom"}, "timings": {"qc_anat": 1}}, "failed", ("qc_anat",)),
        ({"errors": {"qc_func": "x"}, "timings": {"qc_anat": 1, "qc_func": 1}}, "partial", ("qc_func",)),
        ({"errors": {}, "timings": {"deface": 1},
          "deface": {"a": {"error": None}, "b": {"error": "template b: implausible"}}},
         "partial", ("deface:b",)),
        ({"errors": {}, "timings": {"metrics": 1},
          "surface_missing": {"GMV": "failed: ValueError: x", "CBF": "no ASL", "CT": "no surface derivatives"}},
         "partial", ("metrics:GMV",)),
        ({"errors": {"inputs:bold": "short"}, "timings": {"metrics": 1},
          "surface_missing": {m: "BOLD run unusable: short" for m in ("ALFF", "VMHC")}},
         "partial", ("inputs:bold",)),
    ],
)
def test_subject_outcome(result, status, stages):
    out = subject_outcome(result)
    assert out.status == status
    assert out.failed_stages == stages
    assert (out.error == "") == (status == "ok")


# ----------------------------------------------------------------------------- validation
def test_validation_names_each_modality_fault(tmp_path):
    func = tmp_path / "bids" / "sub-01" / "func"
    dwi_dir = tmp_path / "bids" / "sub-01" / "dwi"
    bold = _series(func / "sub-01_task-rest_bold.nii.gz", 12)
    dwi = _series(dwi_dir / "sub-01_dwi.nii.gz", 7)
    bval = dwi_dir / "sub-01_dwi.bval"
    bvec = dwi_dir / "sub-01_dwi.bvec"
    bval.write_text(" ".join(["0"] + ["1000"] * 6) + "\n")
    bvec.write_text("\n".join(" ".join(["0.5"] * 6) for _ in range(3)) + "\n")  # 6 for 7 volumes
    asl = _series(tmp_path / "bids" / "sub-01" / "perf" / "sub-01_asl.nii.gz", 4)
    inp = _subject(tmp_path, bold=bold, bold_meta={"RepetitionTime": 2.0}, dwi=dwi, bval=bval,
                   bvec=bvec, asl=asl, asl_meta={})
    stages = ("qc_anat", "qc_func", "metrics")
    rep = validate_subject(inp, stages, dummy_volumes=5)
    assert rep.t1w_error is None
    assert rep.modality_errors["bold"].startswith("sub-01/func/sub-01_task-rest_bold.nii.gz: too short, 12 volumes")
    assert "nuisance model" in rep.modality_errors["bold"]
    assert rep.modality_errors["dwi"] == ("sub-01/dwi/sub-01_dwi.bvec: 6 b-vectors (array (3, 6)) "
                                          "for 7 volumes in sub-01_dwi.nii.gz")
    assert rep.modality_errors["asl"].startswith("sub-01/perf/sub-01_asl.nii.gz: no aslcontext.tsv")
    # QC alone needs fewer volumes; DWI and ASL are not read without the metrics stage
    rep = validate_subject(inp, ("qc_anat", "qc_func"), dummy_volumes=5)
    assert rep.modality_errors == {}


def test_validation_thirty_percent_nan_t1w_names_nan(tmp_path):
    data = _head()
    data[:20] = np.nan
    inp = _subject(tmp_path, t1w_data=data)
    rep = validate_subject(inp, ("qc_anat",))
    assert rep.t1w_error.startswith("sub-01/anat/sub-01_T1w.nii.gz: 81920 non-finite voxels (31.250%")
    assert "no head" not in rep.t1w_error


# ----------------------------------------------------------------------------- task
@pytest.fixture(autouse=True)
def _no_anatomy(monkeypatch):
    """These tests drive the task with stubbed stages: the subject's anatomy (N4, template
    registration, segmentation: tested in test_anat_reference.py) is not needed, only present."""
    import types

    monkeypatch.setattr(tasks, "_anatomy", lambda inp, cfg, job, threads, **kw: types.SimpleNamespace())


def _job(tmp_path, inp, stages) -> tasks.SubjectJob:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    store = out / "results.zarr"
    results_store.init_store(store, [inp.subject], templates=["a"], anat_iqms=["snr"],
                             func_iqms=["fd"], surface_metrics=["GMV"], hemi=["L", "R"])
    return tasks.SubjectJob(inp, RunConfig(stages=stages), out, store, (), None, "digest")


def _participants(job) -> dict[str, str]:
    ds = xr.open_zarr(job.store_path, group="participants", consolidated=False).load()
    return {k: str(ds[k].values[0]) for k in ("status", "error", "failed_stages", "repairs")}


def test_programming_error_in_a_stage_is_not_swallowed(tmp_path, monkeypatch):
    import isyb_dask.qc.anat_stage as anat_stage

    def broken(*args, **kwargs):
        raise TypeError("unsupported operand type(s) for +: 'int' and 'str'")

    monkeypatch.setattr(anat_stage, "run_qc_anat", broken)
    inp = _subject(tmp_path)
    job = _job(tmp_path, inp, ("qc_anat",))
    with pytest.raises(TypeError, match="unsupported operand"):
        tasks.process_subject(job)
    # no result row, no completion marker: the subject is not "ok" or "failed" in silence
    assert _participants(job)["status"] == "pending"
    assert not tasks.result_path(job.out_dir, inp.subject).exists()
    assert "TypeError" in (job.out_dir / "logs" / "sub-01.log").read_text()


def test_data_error_in_a_stage_is_recorded(tmp_path, monkeypatch):
    import isyb_dask.qc.anat_stage as anat_stage

    def bad_data(*args, **kwargs):
        raise InputError("sub-01/anat/sub-01_T1w.nii.gz: anatomical QC failed (no WM)")

    monkeypatch.setattr(anat_stage, "run_qc_anat", bad_data)
    inp = _subject(tmp_path)
    job = _job(tmp_path, inp, ("qc_anat",))
    res = tasks.process_subject(job)
    assert res["status"] == "failed"  # the only stage failed
    row = _participants(job)
    assert row["status"] == "failed" and row["failed_stages"] == "qc_anat"
    assert row["error"] == "qc_anat: sub-01/anat/sub-01_T1w.nii.gz: anatomical QC failed (no WM)"
    saved = json.loads(tasks.result_path(job.out_dir, inp.subject).read_text())
    assert saved["status"] == "failed" and saved["failed_stages"] == ["qc_anat"]


def test_repaired_t1w_is_recorded_in_the_store(tmp_path, monkeypatch):
    import isyb_dask.qc.anat_stage as anat_stage

    data = _head()
    data[32, 32, 32] = np.inf
    inp = _subject(tmp_path, t1w_data=data)
    seen = {}

    def qc(t1w, *args, **kwargs):
        from isyb_dask.io.nifti import load_image

        seen["finite"] = bool(np.isfinite(np.asarray(load_image(t1w).dataobj)).all())
        return {"snr": 10.0}

    monkeypatch.setattr(anat_stage, "run_qc_anat", qc)
    job = _job(tmp_path, inp, ("qc_anat",))
    assert tasks.process_subject(job)["status"] == "ok"
    assert seen["finite"]
    row = _participants(job)
    assert row["repairs"].startswith("sub-01/anat/sub-01_T1w.nii.gz: 1 non-finite voxels")


# ----------------------------------------------------------------------------- group step
def _runner_store(tmp_path):
    from isyb_dask.metrics.names import SURFACE_METRICS

    subjects = [f"sub-{i:04d}" for i in range(1, 5)]
    path = tmp_path / "results.zarr"
    results_store.init_store(path, subjects, templates=["a", "b"], anat_iqms=["snr"],
                             func_iqms=["fd"], surface_metrics=list(SURFACE_METRICS),
                             hemi=["L"] * 32492 + ["R"] * 32492)
    rng = np.random.default_rng(4)
    vals = rng.normal(1.0, 0.2, (4, len(SURFACE_METRICS), 64984)).astype(np.float32)
    gmv = SURFACE_METRICS.index("GMV")
    alff = SURFACE_METRICS.index("ALFF")
    vals[3, alff] = np.nan  # sub-0004: BOLD unusable (partial)
    rows = {
        "sub-0001": ("ok", "", "", ""),
        "sub-0002": ("ok", "", "fallback: atlas GM prior (segmentation failed: x)", ""),
        "sub-0003": ("failed", "inputs", "", ""),
        "sub-0004": ("partial", "inputs:bold", "", "BOLD run unusable: too short"),
    }
    for i, (s, (status, stages, gmv_prov, alff_miss)) in enumerate(rows.items()):
        prov = [""] * len(SURFACE_METRICS)
        prov[gmv] = gmv_prov
        miss = [""] * len(SURFACE_METRICS)
        miss[alff] = alff_miss
        results_store.write_subject(path, "surface", s, {"value": vals[i], "missing": miss,
                                                         "provenance": prov})
        results_store.write_subject(path, "participants", s,
                                    {"status": status, "failed_stages": stages,
                                     "error": "x" if status != "ok" else ""})
    results_store.write_subject(path, "deface", "sub-0004",
                                {"nmi": [0.1, np.nan], "error": ["", "template b: implausible"]})
    return path, vals, gmv, alff


def test_group_maps_include_partial_and_leave_out_fallbacks(tmp_path):
    from isyb_dask.group.maps import run_group_maps

    path, vals, gmv, alff = _runner_store(tmp_path)
    out = run_group_maps(path, tmp_path, figures=False)
    assert out["n_included"] == 3  # ok + ok + partial; failed left out
    assert out["n_dropped"]["GMV"] == 1
    g = results_store.open_group(path, "group").load()
    # GMV: sub-0002's fallback value left out -> mean of sub-0001 and sub-0004
    np.testing.assert_allclose(g["mean"].values[gmv], vals[[0, 3], gmv].mean(0), rtol=1e-5)
    assert (g["n"].values[gmv] == 2).all() and g["metric_mask"].values[gmv].all()
    # ALFF: the partial subject has no value, with a reason: the mask stays whole
    assert (g["n"].values[alff] == 2).all() and g["metric_mask"].values[alff].all()
    assert g["mask"].values.all()
    out = run_group_maps(path, tmp_path, figures=False, exclude_fallback=False)
    g = results_store.open_group(path, "group").load()
    np.testing.assert_allclose(g["mean"].values[gmv], vals[[0, 1, 3], gmv].mean(0), rtol=1e-5)


def test_query_failures_lists_every_reason(tmp_path):
    from isyb_dask.query import run_query

    path, *_ = _runner_store(tmp_path)
    text = run_query(path, failures=True, fmt="csv")
    lines = text.splitlines()
    assert lines[0].startswith("subject,status,failed_stages,error")
    by_subject = {line.split(",")[0]: line for line in lines[1:]}
    assert set(by_subject) == {"sub-0002", "sub-0003", "sub-0004"}
    assert "fallback: atlas GM prior" in by_subject["sub-0002"]
    assert by_subject["sub-0004"].split(",")[1:3] == ["partial", "inputs:bold"]


def test_progress_counts_partial():
    from isyb_dask.pipeline.progress import Progress

    lines: list[str] = []
    prog = Progress(total=3, write=lines.append)
    prog.update("sub-1", "ok")
    prog.update("sub-2", "partial", "inputs:dwi: sub-2/dwi/x.bvec: 6 b-vectors")
    prog.update("sub-3", "failed", "no head")
    assert any("sub-2 PARTIAL: inputs:dwi" in line for line in lines)
    assert lines[-1].endswith("3/3 subjects done (1 failed, 1 partial)")


def test_exit_codes():
    from isyb_dask.pipeline.runner import RunSummary

    assert RunSummary().exit_code == 0
    assert RunSummary(partial=["a"]).exit_code == 3
    assert RunSummary(partial=["a"], failed=["b"]).exit_code == 1
    assert RunSummary(failed=["b"], internal_errors=["b"]).exit_code == 4


def test_repair_provenance_names_the_metrics_of_the_file(tmp_path):
    from isyb_dask.io.validate import repair_provenance

    bold = tmp_path / "bids" / "sub-01" / "func" / "sub-01_task-rest_bold.nii.gz"
    inp = SubjectInputs(subject="sub-01", t1w=tmp_path / "bids" / "sub-01" / "anat" / "sub-01_T1w.nii.gz",
                        bold=bold)
    out = repair_provenance(inp, {"sub-01/func/sub-01_task-rest_bold.nii.gz": "x: 2 voxels"})
    assert set(out) == {"ALFF", "fALFF", "ReHo", "VMHC"}
    assert out["VMHC"] == "repaired input: x: 2 voxels"


def test_qc_group_keeps_partial_status_and_skips_fallback_units(tmp_path):
    from isyb_dask.qc.anat_iqms import ANAT_IQMS
    from isyb_dask.qc.config import QCConfig
    from isyb_dask.group.qc import run_qc_group

    subjects = [f"sub-{i:02d}" for i in range(12)]
    path = tmp_path / "results.zarr"
    results_store.init_store(path, subjects, templates=["a"], anat_iqms=ANAT_IQMS,
                             func_iqms=["fd_mean"], surface_metrics=["GMV"], hemi=["L", "R"])
    rng = np.random.default_rng(2)
    for i, s in enumerate(subjects):
        anat = {name: float(rng.normal(10, 0.3)) for name in ANAT_IQMS}
        if s == "sub-03":
            anat["summary_wm_median"] = 400.0  # percentile-harmonized: other intensity units
        results_store.write_subject(path, "qc_anat", s, anat)
        results_store.write_subject(path, "qc_anat", s, {
            "harmonization_route": "fallback: brain_p75_p95" if s == "sub-03" else "wm_eroded"})
        # sub-01: partial, wrongly left 'excluded' by an earlier group run
        status, stages = {"sub-01": ("excluded", "inputs:bold")}.get(s, ("ok", ""))
        results_store.write_subject(path, "participants", s,
                                    {"status": status, "failed_stages": stages})
    cfg = QCConfig(anat_sd_metrics=("summary_wm_median", "snr_total"))
    out = run_qc_group(path, tmp_path, cfg, figures=False)
    assert out["harmonization_fallback"] == ["sub-03"]
    part = results_store.open_group(path, "participants").load()
    status = dict(zip(map(str, part["subject"].values), map(str, part["status"].values)))
    assert status["sub-01"] == "partial"  # back to what the participant level recorded
    assert status["sub-03"] == "ok"  # its intensity-unit IQM is not compared
    run_qc_group(path, tmp_path, cfg, figures=False, exclude_fallback=False)
    part = results_store.open_group(path, "participants").load()
    status = dict(zip(map(str, part["subject"].values), map(str, part["status"].values)))
    assert status["sub-03"] == "excluded"


def test_failed_template_is_stored_and_makes_the_subject_partial(tmp_path):
    path = tmp_path / "results.zarr"
    results_store.init_store(path, ["sub-01"], templates=["pydeface", "CN200"], anat_iqms=["snr"],
                             func_iqms=["fd"], surface_metrics=["GMV"], hemi=["L", "R"])
    result = {
        "errors": {}, "timings": {"deface": 3.0, "qc_anat": 2.0}, "qc_anat": {"snr": 12.0},
        "qc_anat_route": "wm_eroded",
        "deface": {"pydeface": {"nmi": 0.2, "error": None},
                   "CN200": {"nmi": None, "error": "template CN200: implausible transform (scale 3.1)"}},
    }
    tasks.store_result(path, tmp_path, "sub-01", result, templates=["pydeface", "CN200"],
                       surface_metrics=["GMV"])
    part = results_store.open_group(path, "participants").load()
    assert str(part["status"].values[0]) == "partial"
    assert str(part["failed_stages"].values[0]) == "deface:CN200"
    assert "implausible transform" in str(part["error"].values[0])
    deface = results_store.open_group(path, "deface").load()
    assert [str(e) for e in deface["error"].values[0]] == [
        "", "template CN200: implausible transform (scale 3.1)"]
    assert np.isnan(deface["nmi"].values[0, 1]) and deface["nmi"].values[0, 0] == 0.2
    anat = results_store.open_group(path, "qc_anat").load()
    assert str(anat["harmonization_route"].values[0]) == "wm_eroded"
