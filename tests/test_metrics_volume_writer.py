"""Standard-space copies of the metrics maps (isyb_dask.metrics.volume_writer), exact cases."""

from __future__ import annotations

import json
from types import SimpleNamespace

import nibabel as nb
import numpy as np

from isyb_dask.anat.normalize import StandardNormalization
from isyb_dask.anat.warpfield import DenseField, grid_points
from isyb_dask.metrics.config import MetricsConfig
from isyb_dask.metrics.volume_writer import VolumeWriter

GRID_SHAPE = (20, 24, 20)
GRID_AFF = np.array([[2.0, 0, 0, -20.0], [0, 2.0, 0, -24.0], [0, 0, 2.0, -20.0], [0, 0, 0, 1]])
T1_AFF = np.array([[1.0, 0, 0, -40.0], [0, 1.0, 0, -45.0], [0, 0, 1.0, -40.0], [0, 0, 0, 1]])
SCALE, SHIFT = 1.1, np.array([3.0, -2.0, 1.5])


def _t1w_field(shape=(80, 90, 80)):
    """A linear map f(y) = 1 + 0.02 y0 + 0.01 y1 - 0.015 y2 on the T1w grid (trilinear-exact)."""
    y = grid_points(shape, T1_AFF)
    return (1.0 + 0.02 * y[..., 0] + 0.01 * y[..., 1] - 0.015 * y[..., 2]).astype(np.float32)


def _f(y):
    return 1.0 + 0.02 * y[:, 0] + 0.01 * y[:, 1] - 0.015 * y[:, 2]


def test_syn_route_maps_through_the_field_and_modulates_by_its_jacobian(tmp_path):
    """to_t1w(x) = 1.1 x + t: a T1w map lands at f(1.1 x + t), modulated by 1.1^3."""
    x = grid_points(GRID_SHAPE, GRID_AFF)
    field = DenseField(((SCALE - 1.0) * x + SHIFT).astype(np.float32), GRID_AFF)
    std = StandardNormalization("MNI152NLin6Asym", field, field, (GRID_SHAPE, GRID_AFF), {})
    writer = VolumeWriter(tmp_path, "sub-01", MetricsConfig(mni_step_mm=2.0), None, None,
                          t1w_to_mni=np.eye(4), standard=std)
    data = _t1w_field()
    img = nb.Nifti1Image(data, T1_AFF)
    writer.write(data, img, np.eye(4), "anat", "probseg", label="GM", desc="modulated",
                 native_data=data * 0.5, modulate=True, meta={"Label": "GM"})
    out = (tmp_path / "sub-01" / "anat"
           / "sub-01_space-MNI152NLin6Asym_label-GM_desc-modulated_probseg.nii.gz")
    got = nb.load(str(out))
    np.testing.assert_allclose(got.affine, GRID_AFF)
    pts = x.reshape(-1, 3)
    y = SCALE * pts + SHIFT
    ijk = (y - T1_AFF[:3, 3])  # unit voxels
    inside = np.all((ijk > 0.5) & (ijk < np.array(data.shape) - 1.5), axis=1)
    want = _f(y) * SCALE**3
    np.testing.assert_allclose(got.get_fdata().reshape(-1)[inside], want[inside], rtol=1e-4,
                               atol=1e-4)
    native = nb.load(str(tmp_path / "sub-01" / "anat"
                         / "sub-01_label-GM_desc-modulated_probseg.nii.gz"))
    np.testing.assert_allclose(native.get_fdata(), data * 0.5, rtol=1e-6)
    side = json.loads(out.with_name(out.name.replace(".nii.gz", ".json")).read_text())
    assert "SyN" in side["SpatialReference"] and "Jacobian" in side["Modulation"]


def test_affine_route_is_named_2009asym_and_uses_the_modality_transform(tmp_path):
    """No normalisation: T1w -> MNI affine; a BOLD-grid map goes through its rigid transform."""
    ref = tmp_path / "mni.nii.gz"
    nb.save(nb.Nifti1Image(np.zeros((40, 48, 40), np.float32), np.array(
        [[1.0, 0, 0, -20.0], [0, 1.0, 0, -24.0], [0, 0, 1.0, -20.0], [0, 0, 0, 1]])), str(ref))
    atlas = SimpleNamespace(mni_t1_brain=ref)
    t1w_to_mni = np.diag([0.9, 0.9, 0.9, 1.0])
    writer = VolumeWriter(tmp_path, "sub-01", MetricsConfig(mni_step_mm=2.0), atlas, None,
                          t1w_to_mni=t1w_to_mni)
    assert writer.space == "MNI152NLin2009aSym"
    bold_aff = np.diag([4.0, 4.0, 4.0, 1.0])
    bold_aff[:3, 3] = [-40.0, -44.0, -40.0]
    bold_to_t1w = np.eye(4)
    bold_to_t1w[:3, 3] = [2.0, 0.0, -1.0]  # a rigid shift between the BOLD and T1w worlds
    shape = (21, 23, 21)
    yb = grid_points(shape, bold_aff)
    data = (1.0 + 0.02 * yb[..., 0] - 0.01 * yb[..., 2]).astype(np.float32)
    writer.write(data, nb.Nifti1Image(data, bold_aff), bold_to_t1w, "func", "boldmap",
                 desc="ALFF", task="rest")
    out = nb.load(str(tmp_path / "sub-01" / "func"
                      / "sub-01_task-rest_space-MNI152NLin2009aSym_desc-ALFF_boldmap.nii.gz"))
    assert out.shape == (20, 24, 20)
    x = grid_points(out.shape, out.affine).reshape(-1, 3)
    yt = x / 0.9  # MNI -> T1w
    ybold = yt - bold_to_t1w[:3, 3]  # T1w -> BOLD world
    ijk = (ybold - bold_aff[:3, 3]) / 4.0
    inside = np.all((ijk > 0.5) & (ijk < np.array(shape) - 1.5), axis=1)
    want = 1.0 + 0.02 * ybold[:, 0] - 0.01 * ybold[:, 2]
    assert inside.sum() > 1000
    np.testing.assert_allclose(out.get_fdata().reshape(-1)[inside], want[inside], atol=1e-4)
