"""Landmark face model of the generator: individual faces with the published spread."""

from __future__ import annotations

import numpy as np
import pytest

from isyb_dask.synth.anatomy import draw_anatomy, load_template_maps
from isyb_dask.synth.face_model import FACE_MEASURES, base_landmarks, measure
from isyb_dask.synth.subject import _add_face

# Measures whose reference landmark is not moved by another parameter (lip thickness and
# mid-face depth share windows or span the long-wavelength warp; see docs/synth.md).
DECOUPLED = ("nasal_width", "nasal_length", "nasal_projection", "nasal_bridge",
             "bizygomatic_width", "bigonial_width", "brow_ridge", "chin_projection")


@pytest.fixture(scope="module")
def cohorts():
    maps = load_template_maps(2)
    out = {}
    for code, pop in ((7, "chinese"), (8, "western")):
        rows = []
        for i in range(40):
            rng = np.random.default_rng([i, code])
            anat = draw_anatomy(rng, pop, "M", maps, global_sd_mm=1.5, face_sd_mm=0.0)
            _, _, marks = _add_face(anat, pop, rng)
            rows.append(measure(marks))
        out[pop] = {k: np.array([r[k] for r in rows]) for k in rows[0]}
    return out


def test_base_landmarks_are_anatomically_ordered():
    lm = base_landmarks()
    # profile from top to bottom: glabella, nasion, pronasale, subnasale, lips, pogonion
    z = [lm[k][2] for k in ("g", "n", "prn", "sn", "ls", "li", "pg")]
    assert all(a > b for a, b in zip(z, z[1:]))
    assert lm["prn"][1] > lm["n"][1] + 5 and lm["prn"][1] > lm["sn"][1] + 5  # nose sticks out
    assert lm["al_l"][0] > lm["prn"][0] > lm["al_r"][0]
    assert 100 < lm["zy_l"][0] - lm["zy_r"][0] < 180  # face width of an adult head


def test_face_measures_spread_like_published_sds(cohorts):
    for m in FACE_MEASURES:
        if m.name not in DECOUPLED:
            continue
        for pop in ("chinese", "western"):
            sd = cohorts[pop][m.name].std(ddof=1)
            # 40 subjects: the 99.9 % range of SD/sigma is 0.68-1.36 (chi-square, 39 df); the
            # long-wavelength warp (SD 1.5 mm, 60 mm FWHM) adds its own spread on top, most
            # for the short brow and chin distances
            assert 0.65 * m.sd_mm < sd < 1.6 * m.sd_mm, (m.name, pop, sd, m.sd_mm)


def test_population_differences_follow_anthropometry(cohorts):
    for m in FACE_MEASURES:
        if m.name not in DECOUPLED:
            continue
        a, b = cohorts["chinese"][m.name], cohorts["western"][m.name]
        se = np.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
        diff = a.mean() - b.mean()
        assert abs(diff - m.delta_mm["chinese"]) < 3.0 * se, (m.name, diff, se)


def test_faces_of_different_subjects_differ(cohorts):
    w = cohorts["western"]
    # every pair of subjects differs by more than 0.5 mm in at least one facial measure
    names = [m.name for m in FACE_MEASURES if m.name in w]
    mat = np.stack([w[k] for k in names], axis=1)  # subjects x measures
    pair_max = np.abs(mat[:, None, :] - mat[None, :, :]).max(axis=2)
    np.fill_diagonal(pair_max, np.inf)
    assert pair_max.min() > 0.5, pair_max.min()
