"""CT/SA/LGI and GM at the midthickness on the real volunteer (2 mm) and a generated 1 mm head.

Each head goes once through the pipeline's own route (slow, module fixtures;
:func:`isyb_dask.testing.surface_check.place_subject`): the anatomical reference
(``anat.reference.build_anatomy``: atlas registration, N4, EM posteriors), the SyN normalisation to MNI152NLin6Asym, the fsLR 32k surfaces placed in T1w
space and refined to the subject's boundaries (the partial-volume fractions of
``anat.surfaces.boundary_fractions``, what ``anat.placement.attach_standard_space`` does), then :func:`isyb_dask.metrics.morphometry.surface_morphometry` on those surfaces, as
the metrics stage runs it. The affine-only placement (the atlas registration's T1w -> MNI
chain) is the baseline of issue 11's GM-at-midthickness acceptance.

On the volunteer the issue's GM probability is also measured with a segmentation that shares
nothing with ours but the brain mask: ANTs N4 and Atropos (k-means start, 3 classes, MRF ``[0.1,1x1x1]``, the
ANTs cortical-thickness default), as a reviewer checking the surfaces with their own tools
would. It reproduces the issue's affine-only figure on the volunteer (0.40).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def _subject(t1w: Path, independent: bool = True) -> dict:
    from isyb_dask.metrics.morphometry import surface_morphometry
    from isyb_dask.testing.surface_check import gm_scores, independent_gm, place_subject

    subject = place_subject(t1w, threads=1)
    anatomy = subject.anatomy
    own = gm_scores(subject, anatomy.posteriors["gm"])
    out = {
        "morpho": surface_morphometry(anatomy.posteriors, anatomy.canonical.affine,
                                      subject.surfaces["refined"], subject.fslr),
        "gm_affine": own["affine"], "gm_syn": own["syn"], "gm_refined": own["refined"],
        "space": subject.space,
        "subject": subject,
    }
    if independent:
        atropos = gm_scores(subject, independent_gm(anatomy))
        out.update(atropos_affine=atropos["affine"], atropos_refined=atropos["refined"])
    return out


@pytest.fixture(scope="module")
def volunteer(shared_data):
    return _subject(shared_data / "heads" / "xa30_sub1_T1w_tfl_2mm.nii.gz")


@pytest.fixture(scope="module")
def generated(generated_1mm_bids):
    # the session's generated 1 mm head (conftest: "chinese", seed 3, T1w only)
    # the independent segmentation of this head (~20 s: N4 + Atropos at 1 mm) is measured by
    # benchmarks/check_gm_midthickness.py (0.565 affine -> 0.850 refined), not in the suite
    return _subject(generated_1mm_bids / "sub-0001" / "anat" / "sub-0001_T1w.nii.gz",
                    independent=False)


def test_volunteer_lgi_in_adult_range(volunteer):
    info = volunteer["morpho"]["info"]
    assert 2.0 <= info["lgi_mean"] <= 3.6, info["lgi_mean"]  # measured 2.81
    assert info["pial_area_mm2"] > info["hull_area_mm2"]
    assert info["cpu_s"]["CT"] + info["cpu_s"]["LGI"] < 60


def test_volunteer_median_ct(volunteer):
    # measured 3.33 mm (5.5 mm on the affine-placed group surfaces, 4.8 mm on the refined
    # surfaces without the sulcal skeleton)
    ct = volunteer["morpho"]["CT"]
    assert 2.0 <= float(np.nanmedian(ct)) <= 3.5, float(np.nanmedian(ct))


def test_volunteer_total_midthickness_area(volunteer):
    # refined midthickness in T1w space: measured 2,399 cm2 (2,219 when the refinement
    # followed the posteriors; affine-placed group surface 815 cm2, SyN-placed 1,017 cm2)
    total = volunteer["morpho"]["info"]["sa_total_with_medial_wall_mm2"]
    assert 1500e2 <= total <= 2500e2, total / 100


def test_gm_at_midthickness_volunteer_2mm(volunteer):
    # issue 11: >= 0.60 at 2 mm and >= 0.15 above the affine-only placement
    # (measured 0.580 affine, 0.658 SyN, 0.820 refined)
    v = volunteer
    assert v["space"] == "MNI152NLin6Asym"
    assert v["gm_refined"] >= 0.60
    assert v["gm_refined"] >= v["gm_affine"] + 0.15
    assert v["gm_syn"] > v["gm_affine"]  # the non-linear placement alone already helps


def test_gm_at_midthickness_volunteer_2mm_independent_segmentation(volunteer):
    # the same targets with ANTs N4 + Atropos GM: measured 0.402 affine (the 0.40),
    # 0.662 refined (0.652 when the refinement followed our posteriors)
    v = volunteer
    assert 0.35 <= v["atropos_affine"] <= 0.45
    assert v["atropos_refined"] >= 0.60
    assert v["atropos_refined"] >= v["atropos_affine"] + 0.15


def test_generated_1mm_subject_median_ct(generated, generated_1mm_bids):
    """CT from our posteriors against CT from the generator's truth fractions, both measured
    by the same method on the same refined surfaces (the truth the head was drawn from)."""
    import nibabel as nb

    from isyb_dask.metrics.morphometry import surface_morphometry

    info = generated["morpho"]["info"]
    med = float(np.nanmedian(generated["morpho"]["CT"]))
    subject = generated["subject"]
    truth_dir = generated_1mm_bids / "derivatives" / "synth-truth" / "sub-0001" / "anat"
    truth = {}
    for label in ("GM", "WM", "CSF"):
        img = nb.load(truth_dir / f"sub-0001_label-{label}_probseg.nii.gz")
        assert np.allclose(img.affine, subject.anatomy.canonical.affine)  # stored RAS
        truth[label.lower()] = np.asarray(img.dataobj, dtype=np.float32)
    truth_ct = surface_morphometry(truth, subject.anatomy.canonical.affine,
                                   subject.surfaces["refined"], subject.fslr)["CT"]
    truth_med = float(np.nanmedian(truth_ct))
    # measured 1.89 mm from our posteriors, 2.10 mm from the truth (the atlas's fuzzy GM
    # gives a thin cortex to this method): 10 % apart (1.96 / 2.11, 7 %, when the surfaces
    # followed the posteriors instead of the partial-volume fractions); the bound allows
    # 12 %, a quarter of a 1 mm voxel on a 2 mm cortex
    assert 1.8 <= truth_med <= 2.5, truth_med
    assert abs(med / truth_med - 1.0) <= 0.12, (med, truth_med)
    assert sum(info["cpu_s"].values()) < 60
    # SA on the refined midthickness: measured 1,612 cm2 (affine-placed 693 cm2)
    assert 1500e2 <= info["sa_total_with_medial_wall_mm2"] <= 2500e2


def test_gm_at_midthickness_generated_1mm(generated):
    # issue 11: >= 0.70 at 1 mm and >= 0.15 above the affine-only placement (measured 0.604
    # affine, 0.696 SyN, 0.791 refined since the generator's brain has an MPRAGE's tissue
    # contrast; 0.564 / 0.626 / 0.691 with the head template's own, docs/metrics_surface.md)
    g = generated
    assert g["gm_refined"] >= 0.70
    assert g["gm_refined"] >= g["gm_affine"] + 0.15
    assert g["gm_syn"] > g["gm_affine"]
