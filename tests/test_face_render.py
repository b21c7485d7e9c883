"""Generated heads have faces: a face detector finds them on a 3-D render.

Uses the renderer and detector of ``isyb_dask.deface.render`` / ``audit`` (face audit);
skips when they or the audit extra (dlib) are not installed.
"""

from __future__ import annotations

import nibabel as nb
import numpy as np
import pytest

from isyb_dask.synth.cohort import generate_study

render = pytest.importorskip("isyb_dask.deface.render")
audit = pytest.importorskip("isyb_dask.deface.audit")
pytest.importorskip("dlib")


@pytest.mark.slow
@pytest.mark.parametrize("population", ["chinese", "western"])
def test_generated_head_has_a_detectable_face(tmp_path, population):
    generate_study(tmp_path, 1, population, seed=11, voxel_size=2.0, modalities=("anat",))
    img = nb.as_closest_canonical(nb.load(str(tmp_path / "sub-0001" / "anat" / "sub-0001_T1w.nii.gz")))
    data = np.asarray(img.dataobj, dtype=np.float32)
    geom = render.render_geometry(data, img.affine)
    views = render.render_views(data, img.affine, geom)
    faces = audit.analyse_views(views)
    assert faces[0].detected, [f.score for f in faces]  # frontal view
    assert sum(f.detected for f in faces) >= 2
