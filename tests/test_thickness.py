"""Laplace/Eulerian cortical thickness on phantoms with exact thickness."""

from __future__ import annotations

import numpy as np
import pytest

from isyb_dask.metrics.thickness import laplace_thickness, tissue_labels
from isyb_dask.testing import shell_phantom


def _slab(thick: float, z0: float = 20.3, n: int = 16, nz: int = 40):
    """WM below z0, GM from z0 to z0 + thick (partial-volume fractions, 1 mm voxels)."""
    z = np.arange(nz, dtype=np.float64)[None, None, :]

    def below(b):
        return np.clip(b - (z - 0.5), 0, 1) * np.ones((n, n, 1))

    wm = below(z0)
    return below(z0 + thick) - wm, wm


@pytest.mark.parametrize("thick", [2.0, 2.6, 3.4])
def test_flat_slab_thickness(thick):
    gm, wm = _slab(thick)
    res = laplace_thickness(gm, wm, (1.0, 1.0, 1.0))
    assert res.gm.any()
    assert abs(np.median(res.thickness[res.gm]) - thick) < 0.2
    assert np.all(res.thickness[~res.gm] == 0)


def test_flat_slab_hard_labels_and_anisotropic_voxels():
    # hard 0/1 labels: the boundary is half-way between voxel centres
    gm, wm = _slab(3.0, z0=20.5)
    assert set(np.unique(gm)) <= {0.0, 1.0}
    res = laplace_thickness(gm, wm, (1.0, 1.0, 1.0))
    assert abs(np.median(res.thickness[res.gm]) - 3.0) < 0.05
    # 2 mm voxels along z: 3 voxels of GM are 6 mm
    res2 = laplace_thickness(gm, wm, (1.0, 1.0, 2.0))
    inner = res2.thickness[4:-4, 4:-4][res2.gm[4:-4, 4:-4]]  # away from the slab's sides
    assert abs(np.median(inner) - 6.0) < 0.1


@pytest.mark.parametrize(("r0", "thick"), [(25.0, 3.0), (14.0, 2.5)])
def test_spherical_shell_thickness(r0, thick):
    gm, wm = shell_phantom(80, r0, thick, sub=3)
    res = laplace_thickness(gm, wm, (1.0, 1.0, 1.0))
    med = float(np.median(res.thickness[res.gm]))
    assert abs(med - thick) < 0.2, med
    # streamlines are radial: the spread is small
    q10, q90 = np.percentile(res.thickness[res.gm], [10, 90])
    assert q90 - q10 < 0.5


def test_labels_and_errors():
    lab, p_out = tissue_labels(np.array([0.6, 0.2, 0.1]), np.array([0.3, 0.7, 0.1]))
    assert lab.tolist() == [1, 2, 0]
    assert np.allclose(p_out, [0.1, 0.1, 0.8])
    with pytest.raises(ValueError, match="3-D"):
        laplace_thickness(np.zeros((4, 4)), np.zeros((4, 4)), (1, 1, 1))
    res = laplace_thickness(np.zeros((5, 5, 5)), np.ones((5, 5, 5)), (1, 1, 1))
    assert not res.gm.any() and not res.thickness.any()


def _fused_sulcus(h: float, gap: float = 5.0, bank: float = 2.5, ny: int = 6, sub: int = 5):
    """Two WM fingers (x-z plane) with a ``gap`` mm sulcus filled with GM (two touching
    ``gap / 2`` mm banks, no CSF between them) under a ``bank`` mm GM cap; voxels of ``h`` mm,
    partial-volume fractions from ``sub``-fold supersampling."""
    nx, nz = int(40 / h), int(48 / h)
    off = ((np.arange(sub) + 0.5) / sub - 0.5) * h
    xx = ((np.arange(nx) * h)[:, None] + off).reshape(-1)[:, None]
    zz = ((np.arange(nz) * h)[:, None] + off).reshape(-1)[None, :]
    top = 34.0
    wm = (zz < 10) | ((zz < top) & ((xx < 20 - gap / 2) | (xx >= 20 + gap / 2)))
    brain = np.broadcast_to(zz < top + bank, wm.shape)

    def frac(m):
        f = m.reshape(nx, sub, nz, sub).mean(axis=(1, 3))
        return np.repeat(f[:, None, :], ny, axis=1)

    w = frac(wm)
    region = (np.abs(np.arange(nx) * h - 20) < gap / 2)[:, None, None] & (
        (np.arange(nz) * h > 12) & (np.arange(nz) * h < 30))[None, None, :]
    region = np.broadcast_to(region, w.shape).copy()
    region[:, [0, -1]] = False  # the slices next to the volume's y faces border "outside"
    return frac(brain) - w, w, region


@pytest.mark.parametrize("h", [1.0, 2.0])
def test_fused_sulcal_banks_are_split(h):
    # two 2.5 mm banks touching in a 5 mm sulcus: without the reconstructed sulcal CSF the
    # Laplace thickness runs along the sulcus (measured 4.2 mm at 1 mm, 6.7 mm at 2 mm); the
    # skeleton of the WM distance splits them (measured 2.52 and 2.73 mm)
    gm, wm, region = _fused_sulcus(h)
    fused = laplace_thickness(gm, wm, (h, h, h), reconstruct_sulci=False)
    split = laplace_thickness(gm, wm, (h, h, h))
    assert split.n_skeleton > 0
    med_fused = np.median(fused.thickness[fused.gm & region])
    med_split = np.median(split.thickness[split.gm & region])
    assert med_fused > 3.3
    assert abs(med_split - 2.5) < 0.4, med_split
    # the skeleton stays inside the sulcus: the cap over the crowns keeps its thickness
    crown = np.zeros_like(region)
    crown[: int(10 / h), 1:-1, int(35 / h)] = True
    assert abs(np.median(split.thickness[split.gm & crown]) - 2.5) < 0.3


@pytest.mark.parametrize("x0", [5, 6])
def test_bounding_box_gives_the_whole_grid_result(x0):
    # the fused-sulcus phantom (skeleton, both length solves) off-centre in a grid with a
    # wide empty margin: cropping to the tissue's box must not change a single value, with
    # the box's origin at an even and at an odd i + j + k (the red-black sweep order)
    from isyb_dask.metrics.thickness import _OUT, _laplace_in_box

    gm, wm, _ = _fused_sulcus(1.0)
    big_gm = np.zeros((70, 30, 80), np.float32)
    big_wm = np.zeros_like(big_gm)
    big_gm[x0:x0 + 40, 20:26, 3:51], big_wm[x0:x0 + 40, 20:26, 3:51] = gm, wm
    labels, p_out = tissue_labels(big_gm, big_wm)
    whole = _laplace_in_box(labels, p_out, big_wm, (1.0, 1.0, 1.0), 300, 1e-3, True)
    boxed = laplace_thickness(big_gm, big_wm, (1.0, 1.0, 1.0))
    assert boxed.n_skeleton == whole.n_skeleton > 0
    assert np.array_equal(boxed.skeleton, whole.skeleton)
    assert np.array_equal(boxed.gm, whole.gm)
    assert np.array_equal(boxed.thickness, whole.thickness)
    assert boxed.iterations == whole.iterations
    assert (labels != _OUT).sum() < 0.2 * labels.size  # the box really is a crop
