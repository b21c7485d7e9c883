"""The independent segmentation used to check surface placement (testing.surface_check)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from types import SimpleNamespace

import nibabel as nb
import numpy as np
import pytest

pytest.importorskip("ants")


def _three_shells(seed: int = 0) -> SimpleNamespace:
    """Concentric WM core, GM shell, CSF shell at T1w-like intensities, with noise."""
    n = 40
    r = np.linalg.norm(np.indices((n, n, n)) - (n - 1) / 2.0, axis=0)
    wm, gm, csf = r < 8, (r >= 8) & (r < 12), (r >= 12) & (r < 15)
    rng = np.random.default_rng(seed)
    img = np.where(wm, 1000.0, 0.0) + np.where(gm, 720.0, 0.0) + np.where(csf, 310.0, 0.0)
    img = (img + rng.normal(0.0, 20.0, img.shape)).astype(np.float32)
    return SimpleNamespace(canonical=nb.Nifti1Image(img, np.eye(4)), brain_mask=r < 15,
                           truth_gm=gm)


def test_independent_gm_finds_the_gm_shell_and_leaves_no_temporary_files():
    from isyb_dask.testing.surface_check import independent_gm

    before = tempfile.gettempdir()
    listing = {p.name for p in Path(before).glob("antsr*")}
    head = _three_shells()
    gm = independent_gm(head)
    # SNR 36 between classes 290+ apart: the shell is GM, the rest is not, voxel for voxel
    # up to the partial-volume edge (one voxel each side of the two boundaries)
    core = head.truth_gm & (np.abs(np.linalg.norm(
        np.indices(gm.shape) - 19.5, axis=0) - 10.0) < 1.0)
    assert gm[core].mean() > 0.95
    assert gm[~head.brain_mask].max() == 0.0
    assert tempfile.gettempdir() == before
    after = {p.name for p in Path(before).glob("antsr*")}
    assert after == listing
