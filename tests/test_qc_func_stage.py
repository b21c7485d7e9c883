"""Tests of isyb_dask.qc.func_stage.run_qc_func (outputs, errors, real volunteer)."""

from __future__ import annotations

import json
import math

import nibabel as nb
import numpy as np
import pandas as pd
import pytest

from isyb_dask.errors import InputError
from isyb_dask.qc.config import QCConfig
from isyb_dask.qc.func_stage import IQM_NAMES, bold_entities, run_qc_func
from isyb_dask.qc.motion import framewise_displacement
from isyb_dask.testing import moving_series, random_walk

SHAPE = (44, 48, 30)
AFF = np.array([[3.5, 0, 0, -75.0], [0, 3.5, 0, -82.0], [0, 0, 4.0, -58.0], [0, 0, 0, 1]])


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("func")
    truth = random_walk(10, seed=2)
    data = moving_series(SHAPE, AFF, truth, noise=8.0, seed=1)
    data = np.maximum(data, 0)
    path = tmp / "sub-01_task-motor_run-2_bold.nii.gz"
    img = nb.Nifti1Image(data, AFF)
    img.header.set_xyzt_units("mm", "sec")
    nb.save(img, path)
    out = tmp / "deriv"
    iqms = run_qc_func(path, {"RepetitionTime": 2.0}, "sub-01", QCConfig(), out)
    return path, out, truth, iqms, data


def test_stage_outputs(synthetic_run) -> None:
    _, out, truth, iqms, data = synthetic_run
    for key in IQM_NAMES:
        assert key in iqms and math.isfinite(iqms[key]), key
    assert iqms["n_volumes"] == 10 and iqms["dummy_trs"] == 0
    func = out / "sub-01" / "func"
    stem = "sub-01_task-motor_run-2"
    conf = pd.read_csv(func / f"{stem}_desc-confounds_timeseries.tsv", sep="\t", na_values="n/a")
    assert list(conf.columns) == ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z",
                                  "framewise_displacement", "std_dvars", "dvars"]
    assert len(conf) == 10 and conf.iloc[0, 6:].isna().all()
    params = conf.iloc[:, :6].to_numpy()
    np.testing.assert_allclose(params[:, :3], truth[:, :3], atol=0.03)
    np.testing.assert_allclose(params[:, 3:], truth[:, 3:], atol=np.radians(0.05))
    fd = framewise_displacement(params, 50.0)
    np.testing.assert_allclose(conf["framewise_displacement"].to_numpy()[1:], fd, rtol=1e-6)
    assert iqms["fd_mean"] == pytest.approx(fd.mean(), rel=1e-6)
    # recovered FD close to the true FD
    assert abs(iqms["fd_mean"] - framewise_displacement(truth, 50.0).mean()) < 0.05
    hmc = nb.load(func / f"{stem}_desc-hmc_bold.nii.gz")
    assert hmc.shape == data.shape and hmc.get_data_dtype() == np.float32
    mask = nb.load(func / f"{stem}_desc-brain_mask.nii.gz")
    assert mask.shape == SHAPE and mask.get_data_dtype() == np.uint8
    np.testing.assert_allclose(mask.affine, AFF)
    assert np.asarray(mask.dataobj).sum() == iqms["summary_fg_n"]
    saved = json.loads((func / f"{stem}_desc-iqms_bold.json").read_text())
    assert saved["fd_mean"] == pytest.approx(iqms["fd_mean"])
    assert saved["RepetitionTime"] == 2.0 and "provenance" in saved
    side = json.loads((func / f"{stem}_desc-confounds_timeseries.json").read_text())
    assert side["trans_x"]["Units"] == "mm" and side["rot_z"]["Units"] == "rad"


def test_stage_errors(tmp_path, synthetic_run) -> None:
    path = synthetic_run[0]
    with pytest.raises(InputError, match="RepetitionTime"):
        run_qc_func(path, {}, "sub-01", QCConfig(), tmp_path)
    with pytest.raises(InputError, match="RepetitionTime"):
        run_qc_func(path, {"RepetitionTime": -1}, "sub-01", QCConfig(), tmp_path)
    short = tmp_path / "sub-01_task-rest_bold.nii.gz"
    nb.save(nb.Nifti1Image(synthetic_run[4][..., :3], AFF), short)
    with pytest.raises(InputError, match="volumes"):
        run_qc_func(short, {"RepetitionTime": 2.0}, "sub-01", QCConfig(), tmp_path)
    assert not (tmp_path / "sub-01").exists()


def test_bold_entities() -> None:
    ents = bold_entities("/x/sub-01_ses-2_task-rest_acq-mb3_run-01_bold.nii.gz")
    assert ents == {"session": "2", "task": "rest", "acq": "mb3", "run": "01"}
    assert bold_entities("xa30_sub1_bold_task-fa_20vol.nii.gz")["task"] == "fa"
    assert bold_entities("bold.nii.gz") == {"session": None, "task": "rest", "acq": None,
                                            "run": None}


# IQMs whose scale does not depend on the protocol: must lie inside the reference range.
_SCALE_FREE = ("fd_mean", "fd_perc", "dvars_std", "dvars_vstd", "gcor", "efc")
# IQMs that scale with voxel volume, TR, acceleration, coil and run length: the reference
# (ds205: 4 mm voxels, TR 2.2 s, 72-92 volumes, no multiband) differs from the volunteer
# (3.4 mm, TR 1.0 s, multiband 3, 20 volumes), so a factor-2 band around the range is used.
_PROTOCOL = ("snr", "tsnr", "fber", "fwhm_x", "fwhm_y", "fwhm_z", "fwhm_avg", "dvars_nstd")


def test_real_volunteer_within_mriqc_reference(shared_data, tmp_path) -> None:
    bold = shared_data / "func" / "xa30_sub1_bold_task-fa_20vol.nii.gz"
    meta = json.loads((shared_data / "func" / "xa30_sub1_bold_task-fa_20vol.json").read_text())
    ref = pd.read_csv(shared_data / "qc_reference" / "mriqc_testdata_group_bold.tsv", sep="\t")
    iqms = run_qc_func(bold, meta, "sub-xa30", QCConfig(), tmp_path)
    assert all(math.isfinite(v) for v in iqms.values())
    assert iqms["n_volumes"] == 20
    for key in _SCALE_FREE:
        lo, hi = ref[key].min(), ref[key].max()
        assert lo <= iqms[key] <= hi, (key, iqms[key], lo, hi)
    for key in _PROTOCOL:
        lo, hi = ref[key].min(), ref[key].max()
        assert lo / 2 <= iqms[key] <= 2 * hi, (key, iqms[key], lo, hi)
    # Nyquist ghost: phase encoding is "j-" (array axis 1 ~ world y), so the ghost ratio is
    # larger along y, and inside the reference range there (0.019-0.055)
    assert ref["gsr_y"].min() <= iqms["gsr_y"] <= ref["gsr_y"].max()
    assert abs(iqms["gsr_x"]) < iqms["gsr_y"] < 0.1
    # fd_num is a count (scales with run length): check its consistency with fd_perc
    n_used = iqms["n_volumes"] - iqms["dummy_trs"]
    assert iqms["dummy_trs"] <= 2  # the first volume(s) of the run may be unsteady
    assert iqms["fd_num"] == round(iqms["fd_perc"] * n_used / 100)
    assert (tmp_path / "sub-xa30" / "func" / "sub-xa30_task-fa_desc-iqms_bold.json").exists()


def test_stage_drops_dummy_volumes(tmp_path, synthetic_run) -> None:
    data = synthetic_run[4].copy()
    data[..., 0] *= 1.6  # non-steady-state first volume
    path = tmp_path / "sub-02_task-rest_bold.nii.gz"
    nb.save(nb.Nifti1Image(data, AFF), path)
    iqms = run_qc_func(path, {"RepetitionTime": 2.0}, "sub-02", QCConfig(), tmp_path / "d")
    assert iqms["dummy_trs"] == 1 and iqms["n_volumes"] == 10
    conf = pd.read_csv(tmp_path / "d" / "sub-02" / "func"
                       / "sub-02_task-rest_desc-confounds_timeseries.tsv", sep="\t")
    assert len(conf) == 9
