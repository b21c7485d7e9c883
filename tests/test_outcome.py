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
