"""The independent segmentation used to check surface placement (testing.surface_check)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from types import SimpleNamespace

import nibabel as nb
import numpy as np
import pytest

from isyb_dask.testing import shell_phantom

pytest.importorskip("ants")


def _three_shells(seed: int = 0) -> SimpleNamespace:
    """WM ball (r 8 mm), GM shell (4 mm), CSF shell (3 mm) at T1w-like intensities, noisy."""
    n = 40
    gm, wm = shell_phantom(n, 8.0, 4.0)
    brain, _ = shell_phantom(n, 0.0, 15.0)  # ball of radius 15 mm: the brain mask
    csf = np.clip(brain - gm - wm, 0.0, 1.0)
    rng = np.random.default_rng(seed)
    img = 1000.0 * wm + 720.0 * gm + 310.0 * csf + rng.normal(0.0, 20.0, wm.shape)
    return SimpleNamespace(canonical=nb.Nifti1Image(img.astype(np.float32), np.eye(4)),
                           brain_mask=brain > 0.5, truth_gm=gm, truth_wm=wm)


def test_independent_gm_finds_the_gm_shell_and_leaves_no_temporary_files():
    from isyb_dask.testing.surface_check import independent_gm

    before = tempfile.gettempdir()
    listing = {p.name for p in Path(before).glob("antsr*")}
    head = _three_shells()
    gm = independent_gm(head)
    # noise SD 20 between classes 280+ apart: voxels wholly inside the shell are GM
    # (measured 0.997), the WM ball's are not (0.001)
    core = head.truth_gm == 1.0
    assert gm[core].mean() > 0.99
    assert gm[head.truth_wm == 1.0].mean() < 0.01
    assert gm[~head.brain_mask].max() == 0.0
    assert tempfile.gettempdir() == before
    after = {p.name for p in Path(before).glob("antsr*")}
    assert after == listing
