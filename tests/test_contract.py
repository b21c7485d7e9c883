"""Contract of the per-subject task (issue 11): one subject run end to end, audited.

One generated 2 mm subject (T1w + a 45-volume BOLD run) goes through
:func:`isyb_dask.pipeline.tasks.process_subject` with the built-in template and one extra
template (the built-in head shifted by 6 mm, so that it is a different file with a different
registration). While it runs, every file write, every registration, every image read and
every file hash is recorded. The tests then check that

* no path is written twice and every written derivative has a JSON sidecar;
* there is one registration of the atlas head, one per extra template, one rigid BOLD ->
  T1w registration and no other (no repeated registration, no second atlas registration);
* each input image is read once and hashed once;
* every T1w IQM recomputed from the written files (T1w, bias field, masks incl. the
  rotation mask, tissue maps) equals the stored value to 1e-6;
* the FD of the confounds table is the FD whose mean is stored as ``fd_mean`` (the value the
  motion exclusion rule reads).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd
import pytest

SUBJECT = "sub-0001"


def _extra_template(folder: Path) -> Path:
    """The built-in head shifted 6 mm to the right: a distinct template file."""
    from isyb_dask.atlas import builtin_head_paths

    head, _ = builtin_head_paths()
    img = nb.load(str(head))
    aff = img.affine.copy()
    aff[0, 3] += 6.0
    path = folder / "shifted_head.nii.gz"
    nb.save(nb.Nifti1Image(np.asarray(img.dataobj), aff, img.header), str(path))
    return path


@pytest.fixture(scope="module")
def audited_run(tmp_path_factory):
    import isyb_dask.io.nifti as nifti
    import isyb_dask.anat.segmentation as segmentation
    import isyb_dask.registration as registration
    from isyb_dask.atlas import get_reference_atlas
    from isyb_dask.config import RunConfig
    from isyb_dask.deface.templates import resolve_templates
    from isyb_dask.io import store as results_store
    from isyb_dask.io.bids import index_bids, subject_inputs
    from isyb_dask.pipeline.runner import _store_layout
    from isyb_dask.pipeline.tasks import SubjectJob, process_subject
    from isyb_dask.synth.cohort import generate_study

    root = tmp_path_factory.mktemp("contract")
    bids = generate_study(root / "bids", 1, seed=11, voxel_size=2.0,
                          modalities=("anat", "func"), bold_volumes=45)
    inp = subject_inputs(index_bids(bids), [SUBJECT])[0]
    out = root / "out"
    atlas = get_reference_atlas()
    extra = _extra_template(root)
    templates = tuple(resolve_templates([f"Shifted={extra}"], None, out))
    store = out / results_store.STORE_NAME
    results_store.init_store(store, [SUBJECT], templates=[t.name for t in templates],
                             **_store_layout())
    job = SubjectJob(inp, RunConfig(), out, store, templates, atlas, "contract")

    writes: list[Path] = []
    registrations: list[dict] = []
    loads: Counter = Counter()
    hashes: Counter = Counter()
    subject_dir = (out / SUBJECT).resolve()

    def record(path) -> None:
        p = Path(os.fspath(path)).resolve()
        if not p.name.startswith(".tmp-") and subject_dir in p.parents:
            writes.append(p)

    real_replace, real_save, real_csv = os.replace, nb.save, pd.DataFrame.to_csv
    real_register, real_load, real_hash = (registration.register_affine, nb.load,
                                           nifti._hash_file)

    def replace(src, dst, *a, **k):
        record(dst)
        return real_replace(src, dst, *a, **k)

    def save(img, filename, *a, **k):
        record(filename)
        return real_save(img, filename, *a, **k)

    def to_csv(self, path_or_buf=None, *a, **k):
        if isinstance(path_or_buf, (str, os.PathLike)):
            record(path_or_buf)
        return real_csv(self, path_or_buf, *a, **k)

    def register(fixed, moving, *a, **k):
        registrations.append({"dof": k.get("dof", 12), "seeded": k.get("initial") is not None,
                              "moving_size": moving.GetSize()})
        return real_register(fixed, moving, *a, **k)

    def load(filename, *a, **k):
        loads[Path(os.fspath(filename)).name] += 1
        return real_load(filename, *a, **k)

    def hash_file(path, *a, **k):
        hashes[Path(os.fspath(path)).name] += 1
        return real_hash(path, *a, **k)

    def forbidden(*a, **k):
        raise AssertionError("the QC's own atlas registration must not run")

    import ants

    from isyb_dask.anat.bridge import get_bridge

    get_bridge()  # the run-level bridge (built once per cache, as the runner does)
    real_syn = ants.registration

    def syn(fixed, moving, *a, **k):
        registrations.append({"dof": "syn", "seeded": k.get("initial_transform") is not None,
                              "type": k.get("type_of_transform"), "moving_size": moving.shape})
        return real_syn(fixed, moving, *a, **k)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ants, "registration", syn)
        mp.setattr(os, "replace", replace)
        mp.setattr(nb, "save", save)
        mp.setattr(pd.DataFrame, "to_csv", to_csv)
        mp.setattr(registration, "register_affine", register)
        mp.setattr(segmentation, "register_affine", register)
        mp.setattr(segmentation, "register_atlas", forbidden)
        mp.setattr(nb, "load", load)
        mp.setattr(nifti, "_hash_file", hash_file)
        mp.setattr(nifti, "_SHA_CACHE", {})
        status = process_subject(job)
    result = json.loads((out / SUBJECT / f"{SUBJECT}_desc-isyb_results.json").read_text())
    return {"status": status, "result": result, "out": out, "inputs": inp,
            "writes": writes, "registrations": registrations, "loads": loads,
            "hashes": hashes, "templates": templates}


def test_subject_succeeds_with_every_stage(audited_run):
    result = audited_run["result"]
    assert audited_run["status"]["status"] == "ok", result["errors"]
    assert {"deface", "qc_anat", "qc_func"} <= set(result)
    assert set(result["deface"]) == {t.name for t in audited_run["templates"]}
    assert all(np.isfinite(r["nmi"]) for r in result["deface"].values())
    for m in ("GMV", "ALFF", "fALFF", "ReHo", "VMHC"):
        assert m not in result["surface_missing"], result["surface_missing"].get(m)


def test_nuisance_model_has_wm_and_csf_from_the_anatomy(audited_run):
    info = audited_run["result"]["metrics_info"]
    assert {"wm_mean", "csf_mean"} <= set(info["bold_confounds"])
    assert "anatomy" in info["gm_source"]
    # the metrics use the QC's FD (one definition, one set of motion parameters)
    assert info["bold_fd_mean"] == pytest.approx(audited_run["result"]["qc_func"]["fd_mean"])


def test_no_path_written_twice_and_every_file_has_a_sidecar(audited_run):
    from isyb_dask.io.derivatives import _sidecar_path

    twice = {str(p): n for p, n in Counter(audited_run["writes"]).items() if n > 1}
    assert not twice
    files = [p for p in (audited_run["out"] / SUBJECT).rglob("*") if p.is_file()]
    assert {p.resolve() for p in files} == set(audited_run["writes"])  # nothing unrecorded
    data = [p for p in files if not p.name.endswith(".json")]
    assert len(data) > 20
    lacking = [p.name for p in data if not _sidecar_path(p).exists()]
    assert not lacking
    # the shared derivatives exist once, written by their owners
    anat = audited_run["out"] / SUBJECT / "anat"
    for name in ("desc-brain_mask", "desc-head_mask", "desc-rotation_mask", "label-GM_probseg",
                 "label-WM_probseg", "label-CSF_probseg", "desc-N4_biasfield"):
        assert (anat / f"{SUBJECT}_{name}.nii.gz").exists(), name


def test_registrations_are_not_repeated(audited_run):
    regs = audited_run["registrations"]
    affine = [r for r in regs if r["dof"] == 12]
    rigid = [r for r in regs if r["dof"] == 6]
    nonlinear = [r for r in regs if r["dof"] == "syn"]
    # one atlas registration (reused by deface for the built-in head, by the QC and the
    # metrics) + one for the extra template, started from the atlas one composed with the
    # run-level template -> built-in registration; one rigid BOLD -> T1w; one non-linear
    # normalisation of the T1w to the surfaces' space, deformable only, started from the
    # atlas registration (no second affine registration inside ANTs)
    assert len(affine) == 2, regs
    assert [r["seeded"] for r in affine] == [False, True], regs
    assert len(nonlinear) == 1, regs
    assert nonlinear[0]["seeded"] and nonlinear[0]["type"] == "SyNOnly", regs
    assert len(rigid) == 1, regs


def test_inputs_read_and_hashed_once(audited_run):
    inp = audited_run["inputs"]
    for path in (inp.t1w, inp.bold):
        assert audited_run["loads"][path.name] == 1, (path.name, audited_run["loads"])
        assert audited_run["hashes"][path.name] == 1, (path.name, audited_run["hashes"])


def test_t1w_iqms_recomputed_from_written_files(audited_run):
    from isyb_dask.qc.anat_iqms import anat_iqms, harmonize

    out, inp = audited_run["out"], audited_run["inputs"]
    anat = out / SUBJECT / "anat"

    def load(name: str) -> np.ndarray:
        img = nb.as_closest_canonical(nb.load(str(anat / f"{SUBJECT}_{name}.nii.gz")))
        return np.asarray(img.dataobj)

    t1 = nb.as_closest_canonical(nb.load(str(inp.t1w)))
    original = np.nan_to_num(np.asarray(t1.dataobj, dtype=np.float64).astype(np.float32))
    payload = json.loads((anat / f"{SUBJECT}_desc-iqms_T1w.json").read_text())
    factor = payload["provenance"]["qc"]["harmonization_factor"]
    inu = np.clip(original, 0, None) / load("desc-N4_biasfield").astype(np.float32)
    inu[inu < 0] = 0
    again = anat_iqms(
        harmonize(inu, factor),
        original,
        head=load("desc-head_mask") > 0,
        brain=load("desc-brain_mask") > 0,
        air=load("desc-air_mask") > 0,
        rotation=load("desc-rotation_mask") > 0,
        pvms=[load(f"label-{t}_probseg") for t in ("CSF", "GM", "WM")],
        zooms=t1.header.get_zooms()[:3],
        artifacts=load("desc-artifacts_mask") > 0,
        bias=load("desc-N4_biasfield"),
    )
    stored = audited_run["result"]["qc_anat"]
    assert set(again) == set(stored)
    for name, value in stored.items():
        if value is None:
            assert not np.isfinite(again[name]), name
            continue
        assert again[name] == pytest.approx(value, rel=1e-6, abs=1e-9), name


def test_confounds_fd_is_the_exclusion_fd(audited_run):
    from isyb_dask.bold.hmc import PARAM_NAMES
    from isyb_dask.qc.motion import framewise_displacement

    func = audited_run["out"] / SUBJECT / "func"
    table = pd.read_csv(func / f"{SUBJECT}_task-rest_desc-confounds_timeseries.tsv", sep="\t")
    fd = table["framewise_displacement"].to_numpy()[1:]
    stored = audited_run["result"]["qc_func"]["fd_mean"]
    assert fd.mean() == pytest.approx(stored, rel=1e-6)
    recomputed = framewise_displacement(table[list(PARAM_NAMES)].to_numpy(), radius=50.0)
    np.testing.assert_allclose(fd, recomputed, rtol=1e-6, atol=1e-7)
