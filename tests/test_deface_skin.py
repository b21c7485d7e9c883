"""Fast tests of the skin helpers, the smooth-skin masking, refacing and their errors."""

from __future__ import annotations

import numpy as np
import pytest

from isyb_dask.deface.blur import maskface_blur
from isyb_dask.deface.brainmask import grow_brain
from isyb_dask.deface.config import DefaceConfig
from isyb_dask.deface.phantom import make_head
from isyb_dask.deface.reface import intensity_fit, reface, region_weight
from isyb_dask.deface.skin import (
    FaceRegionError,
    extend_face_region,
    head_mask_full,
    signed_distance,
    skin_threshold,
    surface_depth_change,
)

VOX = 3.0
NORMAL = (1, 1)  # phantom faces +y


@pytest.fixture(scope="module")
def phantom():
    return make_head(VOX, seed=11, noise=5.0)


def test_signed_distance_of_a_ball():
    n = 41
    g = np.indices((n, n, n)) - n // 2
    r = np.sqrt((g**2).sum(0)) * 2.0  # 2 mm voxels
    ball = r <= 20.0
    phi = signed_distance(ball, np.array([2.0, 2.0, 2.0]))
    sel = (r > 6) & (r < 34)
    assert np.abs(phi[sel] - (r[sel] - 20.0)).max() < 2.1  # within a voxel of the truth


def test_surface_depth_change_of_a_known_shift(phantom):
    d = phantom.data
    face = phantom.keep == 0
    shifted = np.roll(d, 2, axis=1)  # the whole head 2 voxels (6 mm) towards the face
    dc = surface_depth_change(d, shifted, face, NORMAL, np.array([VOX] * 3))
    assert dc["columns"] > 50
    assert dc["median_mm"] == pytest.approx(6.0, abs=0.5)


def test_extend_face_region_continues_in_front_and_outside_fov(phantom):
    face = phantom.keep == 0
    inside = np.ones(face.shape, bool)
    inside[:, -6:, :] = False  # the template FOV stops 18 mm before the volume edge
    cut = face & inside
    ext = extend_face_region(cut, inside, NORMAL)
    assert ext[face].all()  # the nose tip beyond the FOV is face again
    cols = cut.any(axis=1)
    k = np.argmax(cut, axis=1)
    for i, j in zip(*np.nonzero(cols)):
        assert ext[i, k[i, j]:, j].all()  # everything in front of a face voxel is face


def test_maskface_blur_moves_the_skin_and_stays_in_the_face(phantom):
    vox = np.array([VOX] * 3)
    head = head_mask_full(phantom.data, vox, NORMAL)
    region = extend_face_region(phantom.keep == 0, np.ones(head.shape, bool), NORMAL,
                                head=head, voxel_mm=vox)
    out, changed = maskface_blur(phantom.data, region, head, vox)
    dc = surface_depth_change(phantom.data, out, region, NORMAL, vox)
    assert dc["median_mm"] >= 4.0
    assert np.array_equal(out[~changed], phantom.data[~changed])
    # changes stay within margin + ramp (18 mm) of the face region
    from scipy import ndimage as ndi

    dist = ndi.distance_transform_edt(~region, sampling=vox)
    assert dist[changed].max() <= 18.0 + VOX
    with pytest.raises(FaceRegionError, match="too small"):
        maskface_blur(phantom.data, np.zeros_like(region), head, vox)


def test_intensity_fit_recovers_a_linear_map():
    rng = np.random.default_rng(0)
    t = rng.gamma(2.0, 100.0, 5000)
    s = 0.4 * rng.permutation(t) + 30.0  # same distribution, different voxels
    a, b = intensity_fit(s, t)
    assert a == pytest.approx(0.4, rel=0.05) and b == pytest.approx(30.0, abs=8.0)
    with pytest.raises(FaceRegionError):
        intensity_fit(s[:10], t[:10])


def test_reface_puts_the_template_face_in(phantom):
    vox = np.array([VOX] * 3)
    other = make_head(VOX, seed=12, radii=(70.0, 97.0, 78.0), nose_mm=27.0, noise=5.0)
    head = head_mask_full(phantom.data, vox, NORMAL)
    region = extend_face_region(phantom.keep == 0, np.ones(head.shape, bool), NORMAL,
                                head=head, voxel_mm=vox)
    tpl = 2.0 * other.data + 7.0  # a template on another intensity scale
    thead = tpl > skin_threshold(tpl)
    out, changed, fit = reface(phantom.data, region, tpl, np.ones(head.shape, bool), head,
                               thead, vox)
    assert fit["scale"] == pytest.approx(0.5, rel=0.15)
    inner = region_weight(region, vox) >= 1.0
    err_tpl = np.abs(out[inner] - other.data[inner]).mean()
    err_orig = np.abs(out[inner] - phantom.data[inner]).mean()
    assert err_tpl < 0.5 * err_orig
    assert np.array_equal(out[~changed], phantom.data[~changed])


def test_grow_brain_adds_only_connected_bright_voxels():
    d = np.zeros((30, 30, 30), np.float32)
    d[5:25, 5:25, 5:25] = 100.0
    d[0:2, 0:2, 0:2] = 100.0  # bright but far: not brain
    brain = np.zeros(d.shape, bool)
    brain[8:22, 8:22, 8:22] = True
    grown = grow_brain(d, brain, np.ones(3), 2.0)
    assert grown[brain].all() and grown[7:23, 7:23, 7:23].all() and grown[6:24, 10:20, 10:20].all()
    assert not grown[0:2, 0:2, 0:2].any() and not grown[5, 5, 5]


def test_config_methods_and_nmi_mask():
    assert DefaceConfig(method="reface").method == "reface"
    with pytest.raises(ValueError, match="one of"):
        DefaceConfig(method="blur")
    with pytest.raises(ValueError, match="nmi_mask"):
        DefaceConfig(nmi_mask="all")
