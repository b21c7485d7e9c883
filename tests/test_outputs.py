"""io/outputs.py: one table of derivative names, used by the writers and the readers."""

from __future__ import annotations

import pytest

from isyb_dask.io import outputs


def test_subject_derivative_names(tmp_path):
    o = tmp_path
    assert outputs.deface_path(o, "01", "defaced", "CN200").name == "sub-01_desc-defacedCN200_T1w.nii.gz"
    assert outputs.deface_path(o, "sub-01", "face", "CN200").name == "sub-01_desc-faceCN200_mask.nii.gz"
    assert outputs.deface_path(o, "01", "removedface", "MNI").name == \
        "sub-01_desc-removedfaceMNI_T1w.nii.gz"
    assert outputs.render_path(o, "01", "CN200") == \
        o / "sub-01" / "figures" / "sub-01_desc-defacedCN200_render.png"
    assert outputs.render_path(o, "01", None).name == "sub-01_desc-original_render.png"
    assert outputs.embeddings_path(o, "01") == o / "sub-01" / "audit" / "sub-01_desc-face_embeddings.npz"
    assert outputs.surface_path(o, "01", "L", "midthickness").name == \
        "sub-01_hemi-L_space-T1w_den-32k_midthickness.surf.gii"
    fwd, inv = outputs.transform_paths(o, "01", "MNI152NLin6Asym")
    assert fwd.name == "sub-01_from-T1w_to-MNI152NLin6Asym_mode-image_xfm.h5"
    assert inv.name == "sub-01_from-MNI152NLin6Asym_to-T1w_mode-image_xfm.h5"
    with pytest.raises(ValueError, match="surface kind"):
        outputs.surface_path(o, "01", "L", "inflated")


def test_readers_use_the_writers_names(tmp_path):
    # the report finds renders, the re-identification its embeddings, by the same functions
    from isyb_dask.deface import audit
    from isyb_dask.report import paths

    assert paths.render_path is outputs.render_path
    assert audit.embeddings_path is outputs.embeddings_path
