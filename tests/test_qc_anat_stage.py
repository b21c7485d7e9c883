"""Anatomical QC stage on the real volunteer (shared data) against the MRIQC reference table.

Tolerance of the range check: the reference table ``mriqc_testdata_group_T1w.tsv`` holds
only 4 MRIQC runs (one site, ~1 mm, an older MRIQC with binary-mask statistics), while the
volunteer is a 2 mm Siemens XA30 MPRAGE without prescan normalisation (strong coil
shading). Scale-free IQMs of a healthy head from another scanner and resolution are
expected to be of the same order but not inside a 4-sample range, so each bound is widened
by a factor 2 ([min / 2, 2 * max]); IQMs in harmonized intensity units (WM median = 1000)
get the same factor. Voxel-count statistics (``summary_*_n``), kurtosis and the background
statistics (the reference zero-fills the background; its median is 0) are resolution- or
version-dependent and only checked for being finite.
"""

from __future__ import annotations

import json

import nibabel as nb
import numpy as np
import pandas as pd
import pytest

from isyb_dask.qc.anat_iqms import ANAT_IQMS
from isyb_dask.qc.anat_stage import run_qc_anat
from isyb_dask.qc.config import QCConfig

T1W = "heads/xa30_sub1_T1w_tfl_2mm.nii.gz"
RANGE_CHECKED = (
    "snr_csf",
    "snr_gm",
    "snr_wm",
    "snr_total",
    "cnr",
    "fber",
    "efc",
    "cjv",
    "fwhm_x",
    "fwhm_y",
    "fwhm_z",
    "fwhm_avg",
    *(f"summary_{t}_{k}" for t in ("csf", "gm", "wm") for k in ("mean", "median", "p95")),
)


@pytest.fixture(scope="module")
def qc_run(shared_data, tmp_path_factory):
    from isyb_dask.atlas import get_reference_atlas

    out = tmp_path_factory.mktemp("qcanat")
    atlas = get_reference_atlas()
    t1w = shared_data / T1W
    ref = nb.load(t1w)
    # a face mask like the deface stage writes (1 = face region): an anterior-inferior block
    facemask = np.zeros(ref.shape, np.uint8)
    facemask[:, 90:, :50] = 1
    keep = 1 - facemask
    face = out / "face_mask.nii.gz"
    nb.save(nb.Nifti1Image(facemask, ref.affine), face)
    iqms = run_qc_anat(t1w, "sub-01", QCConfig(), out / "deriv", atlas, exclude_masks=[face])
    return iqms, out, shared_data, keep


@pytest.mark.slow
def test_real_t1w_iqms_finite_and_in_reference_range(qc_run):
    iqms, _, shared, _ = qc_run
    assert tuple(iqms) == ANAT_IQMS
    bad = {k: v for k, v in iqms.items() if not np.isfinite(v)}
    assert not bad
    table = pd.read_csv(shared / "qc_reference/mriqc_testdata_group_T1w.tsv", sep="\t")
    outside = {}
    for name in RANGE_CHECKED:
        col = table[name].astype(float)
        col = col[col > 0] if name == "fber" else col  # -1 = MRIQC's "no background"
        lo, hi = col.min() / 2.0, col.max() * 2.0
        if not lo <= iqms[name] <= hi:
            outside[name] = (iqms[name], lo, hi)
    assert not outside
    assert iqms["summary_wm_median"] == pytest.approx(1000, rel=0.1)  # harmonized
    assert iqms["snr_wm"] > iqms["snr_gm"] > iqms["snr_csf"]


@pytest.mark.slow
def test_real_t1w_derivatives_written(qc_run):
    iqms, out, shared, keep = qc_run
    anat = out / "deriv" / "sub-01" / "anat"
    ref = nb.load(shared / T1W)
    maps = {}
    for name in (
        "desc-head_mask",
        "desc-brain_mask",
        "desc-air_mask",
        "label-CSF_probseg",
        "label-GM_probseg",
        "label-WM_probseg",
    ):
        img = nb.load(anat / f"sub-01_{name}.nii.gz")
        assert img.shape == ref.shape and np.allclose(img.affine, ref.affine)
        assert (anat / f"sub-01_{name}.json").exists()
        maps[name] = np.asarray(img.dataobj)
    head, brain, air = (maps[f"desc-{k}_mask"] > 0 for k in ("head", "brain", "air"))
    assert not (air & head).any()
    assert not air[keep == 0].any()  # defaced region never counts as background
    assert brain.sum() < head.sum()
    assert int(air.sum()) == int(iqms["summary_bg_n"])
    probs = np.stack([maps[f"label-{t}_probseg"] for t in ("CSF", "GM", "WM")])
    assert np.allclose(probs.sum(0)[brain], 1.0, atol=1e-4)
    payload = json.loads((anat / "sub-01_desc-iqms_T1w.json").read_text())
    assert payload["snr_total"] == iqms["snr_total"]
    assert payload["bids_meta"]["subject_id"] == "sub-01"
    assert payload["provenance"]["qc"]["registration_plausible"] is True
    assert payload["provenance"]["sources"][0]["sha256"]


def test_exclude_mask_on_another_grid_is_resampled():
    from isyb_dask.qc.anat_stage import _canonical_mask

    ref_aff = np.diag([1.0, 1.0, 1.0, 1.0])
    ref_aff[:3, 3] = [-20.0, -20.0, -20.0]
    ref = nb.Nifti1Image(np.zeros((40, 40, 40), np.float32), ref_aff)
    # face mask on a 2 mm LAS grid covering the same box; face = world y > 6 and z < -4
    las = np.diag([-2.0, 2.0, 2.0, 1.0])
    las[:3, 3] = [19.5, -19.5, -19.5]
    ijk = np.indices((20, 20, 20)).reshape(3, -1)
    xyz = (las[:3, :3] @ ijk + las[:3, 3:]).reshape(3, 20, 20, 20)
    facemask = (xyz[1] > 6) & (xyz[2] < -4)
    got = _canonical_mask(nb.Nifti1Image(facemask.astype(np.uint8), las), ref)
    assert got.shape == ref.shape
    rxyz = (ref_aff[:3, :3] @ np.indices(ref.shape).reshape(3, -1) + ref_aff[:3, 3:]).reshape(
        3, *ref.shape
    )
    # away from the 2 mm boundary and inside the mask's field of view (outside it: not face)
    inside_face = (rxyz[1] > 8) & (rxyz[2] < -6) & (np.abs(rxyz[0]) < 18)
    clearly_kept = (rxyz[1] < 4) | (rxyz[2] > -2)
    assert got[inside_face].all()
    assert not got[clearly_kept].any()


@pytest.mark.slow
def test_real_t1w_iqms_recomputed_from_derivatives(qc_run):
    """Anyone can recompute every IQM from the input T1w and the written derivatives."""
    from isyb_dask.qc.anat_iqms import anat_iqms, harmonize
    from isyb_dask.anat.masks import rotation_mask

    iqms, out, shared, _ = qc_run
    anat = out / "deriv" / "sub-01" / "anat"

    def load(name):
        return np.asarray(nb.as_closest_canonical(nb.load(anat / f"sub-01_{name}.nii.gz")).dataobj)

    t1 = nb.as_closest_canonical(nb.load(shared / T1W))
    original = np.asarray(t1.dataobj, dtype=np.float32)
    payload = json.loads((anat / "sub-01_desc-iqms_T1w.json").read_text())
    factor = payload["provenance"]["qc"]["harmonization_factor"]
    inu = np.clip(original, 0, None) / load("desc-N4_biasfield").astype(np.float32)
    inu[inu < 0] = 0
    again = anat_iqms(
        harmonize(inu, factor),
        original,
        head=load("desc-head_mask") > 0,
        brain=load("desc-brain_mask") > 0,
        air=load("desc-air_mask") > 0,
        rotation=rotation_mask(original),
        pvms=[load(f"label-{t}_probseg") for t in ("CSF", "GM", "WM")],
        zooms=t1.header.get_zooms()[:3],
        artifacts=load("desc-artifacts_mask") > 0,
        bias=load("desc-N4_biasfield"),
    )
    for name, value in iqms.items():
        assert again[name] == pytest.approx(value, rel=1e-6, abs=1e-9), name


@pytest.mark.slow
def test_real_t1w_run_is_deterministic(qc_run, tmp_path):
    from isyb_dask.atlas import get_reference_atlas

    iqms, out, shared, _ = qc_run
    again = run_qc_anat(
        shared / T1W,
        "sub-01",
        QCConfig(),
        tmp_path,
        get_reference_atlas(),
        exclude_masks=[out / "face_mask.nii.gz"],
    )
    assert again == iqms
