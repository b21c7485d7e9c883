"""CT/SA/LGI on the real volunteer (2 mm) and a generated 1 mm subject (slow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from isyb_dask.metrics.fslr import load_fslr32k
from isyb_dask.metrics.morphometry import place_fslr_affine, surface_morphometry

pytestmark = pytest.mark.slow


def _morphometry(t1w: Path) -> dict:
    from isyb_dask.atlas import get_reference_atlas
    from isyb_dask.io.nifti import load_image
    from isyb_dask.metrics import gmv
    from isyb_dask.metrics.spaces import t1w_to_mni
    from isyb_dask.registration import to_canonical

    img = to_canonical(load_image(t1w, ndim=3))
    chain = t1w_to_mni(img, get_reference_atlas(), seed=0, threads=1)
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    _, info = gmv.gm_probability(
        np.asarray(img.dataobj, dtype=np.float32), zooms, chain.brain, chain.priors
    )
    fs = load_fslr32k()
    return surface_morphometry(
        info["posteriors"], img.affine, place_fslr_affine(chain.t1w_to_mni, fs), fs
    )


@pytest.fixture(scope="module")
def volunteer(shared_data):
    return _morphometry(shared_data / "heads" / "xa30_sub1_T1w_tfl_2mm.nii.gz")


def test_volunteer_lgi_in_adult_range(volunteer):
    assert 2.0 <= volunteer["info"]["lgi_mean"] <= 3.6
    assert volunteer["info"]["pial_area_mm2"] > volunteer["info"]["hull_area_mm2"]
    assert volunteer["info"]["cpu_s"]["CT"] + volunteer["info"]["cpu_s"]["LGI"] < 60


@pytest.mark.xfail(
    reason="2 mm volunteer: fused sulcal banks not all reconstructed, vertex median CT "
    "5.5 mm (see docs/metrics_surface.md)",
    strict=False,
)
def test_volunteer_median_ct(volunteer):
    assert 2.0 <= float(np.nanmedian(volunteer["CT"])) <= 3.5


@pytest.mark.xfail(
    reason="SA on the S1200 group midthickness placed by an affine: the group surface is "
    "smoother than an individual one (821 cm2 on the volunteer; see docs)",
    strict=False,
)
def test_volunteer_total_midthickness_area(volunteer):
    assert 1500e2 <= volunteer["info"]["sa_total_with_medial_wall_mm2"] <= 2500e2


def test_generated_1mm_subject_median_ct(generated_1mm_bids):
    res = _morphometry(generated_1mm_bids / "sub-0001" / "anat" / "sub-0001_T1w.nii.gz")
    med = float(np.nanmedian(res["CT"]))
    assert 2.0 <= med <= 3.5, med
    assert sum(res["info"]["cpu_s"].values()) < 60
