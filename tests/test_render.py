"""Skin-surface renders: geometry, orientation and scale invariance (no dlib needed)."""

from __future__ import annotations

import numpy as np
import pytest

from isyb_dask.deface.render import otsu_threshold, render_geometry, render_views


def _ball_head(shape=(96, 112, 96), vox=2.0, radius_mm=70.0, ear=True):
    """A bright ball (radius 70 mm) with a small 'ear' ball on the subject's left (+x)."""
    affine = np.diag([vox, vox, vox, 1.0])
    affine[:3, 3] = -vox * (np.array(shape) - 1) / 2.0
    ijk = np.indices(shape).reshape(3, -1).T
    xyz = (ijk @ affine[:3, :3].T + affine[:3, 3]).reshape(shape + (3,))
    r = np.linalg.norm(xyz, axis=-1)
    data = np.where(r < radius_mm, 800.0, 0.0)
    if ear:
        data[np.linalg.norm(xyz - np.array([radius_mm + 5.0, 0.0, 0.0]), axis=-1) < 14.0] = 800.0
    rng = np.random.default_rng(0)
    return (data + rng.normal(0, 20, shape)).clip(0).astype(np.float32), affine


def test_otsu_scale_invariant():
    data, _ = _ball_head(ear=False)
    t = otsu_threshold(data)
    assert 0 < t < 800
    assert otsu_threshold(data * 1000.0) == pytest.approx(1000.0 * t, rel=0.02)


def test_ball_silhouette_area_and_ear_side():
    from scipy.stats import norm

    plain, affine = _ball_head(ear=False)
    g = render_geometry(plain, affine)
    pix = g.fov_mm / g.size
    # silhouette radius: the iso-surface of a 70 mm step (800) smoothed by the 1 mm Gaussian
    # and the 2 mm voxels (sigma^2 = 1 + 2^2/12) crosses the threshold at
    # 70 + sigma * Phi^-1(1 - thr/800)
    sigma = np.sqrt(1.0 + 4.0 / 12.0)
    expected = 70.0 + sigma * norm.ppf(1.0 - g.threshold / 800.0)
    for view in render_views(plain, affine, g):
        radius = np.sqrt((view > 0).sum() * pix**2 / np.pi)
        assert radius == pytest.approx(expected, abs=1.0)
    data, affine = _ball_head()
    geom = render_geometry(data, affine)
    views = render_views(data, affine, geom)
    assert views.shape == (3, 256, 256) and views.dtype == np.uint8
    frontal = views[0] > 0
    # the ear is on the subject's left, i.e. on the image's right in a frontal view
    cols = np.flatnonzero(frontal.any(axis=0))
    centre = (geom.size - 1) / 2.0
    assert (cols.max() - centre) - (centre - cols.min()) > 4.0 / pix
    # the lit surface faces the viewer: the centre pixel is bright, shading is not flat
    assert views[0][128, 128] > 150
    assert views[0][frontal].std() > 10


def test_render_invariant_to_voxel_order_and_scale():
    data, affine = _ball_head()
    geom = render_geometry(data, affine)
    ref = render_views(data, affine, geom).astype(int)
    # the same head stored LAS: flip the first voxel axis, the world stays the same
    flip = np.eye(4)
    flip[0, 0], flip[0, 3] = -1, data.shape[0] - 1
    las = render_views(data[::-1], affine @ flip, geom).astype(int)
    assert np.mean(np.abs(las - ref) > 8) < 0.01
    # intensity scale: geometry from the scaled image gives the same render
    scaled = data * 37.0
    g2 = render_geometry(scaled, affine)
    assert g2.threshold == pytest.approx(37.0 * geom.threshold, rel=0.02)
    assert np.mean(np.abs(render_views(scaled, affine, g2).astype(int) - ref) > 8) < 0.01


def test_oblique_prescription_followed():
    """A head prescribed obliquely (same voxels, affine rotated 12° about S and 8° about R)
    is seen from its own anterior axis: the render equals the axis-aligned one."""
    data, affine = _ball_head()
    a, b = np.deg2rad(12.0), np.deg2rad(8.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0, 0], [np.sin(a), np.cos(a), 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    rx = np.array([[1, 0, 0, 0], [0, np.cos(b), -np.sin(b), 0], [0, np.sin(b), np.cos(b), 0], [0, 0, 0, 1]])
    oblique = rx @ rz @ affine
    ref = render_views(data, affine, render_geometry(data, affine)).astype(int)
    geom = render_geometry(data, oblique)
    assert np.asarray(geom.normal) @ (rx @ rz)[:3, 1] == pytest.approx(1.0)
    obl = render_views(data, oblique, geom).astype(int)
    assert np.mean(np.abs(obl - ref) > 8) < 0.01
    # a world-anterior camera instead sees the ear side turned by 12°
    g_world = render_geometry(data, oblique, normal=np.array([0.0, 1.0, 0.0]))
    assert np.mean(np.abs(render_views(data, oblique, g_world).astype(int) - ref) > 8) > 0.05


def test_yaw_views_differ_and_mirror():
    data, affine = _ball_head()
    geom = render_geometry(data, affine)
    front, right, left = render_views(data, affine, geom).astype(int)
    # the ear (on +x) is seen from the left view (+30°) near the centre: the silhouettes of
    # the ±30° views are not mirror images of each other, while a ball without ear is
    assert np.mean((right > 0) != (left[:, ::-1] > 0)) > 0.005
    plain, aff2 = _ball_head(ear=False)
    g = render_geometry(plain, aff2)
    _, r2, l2 = render_views(plain, aff2, g)
    assert np.mean((r2 > 0) != (l2[:, ::-1] > 0)) < 0.003


def test_empty_image_is_an_error():
    with pytest.raises(ValueError, match="no positive voxels"):
        render_geometry(np.zeros((10, 10, 10)), np.eye(4))
