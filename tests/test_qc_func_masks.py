"""Tests of isyb_dask.qc.func_masks (3dAutomask-like brain mask)."""

from __future__ import annotations

import nibabel as nb
import numpy as np
import pytest
from scipy import ndimage as ndi

from isyb_dask.qc.func_masks import automask, clip_level


def _epi_phantom(seed=0, shape=(48, 52, 30)):
    rng = np.random.default_rng(seed)
    ijk = np.indices(shape).astype(float)
    r = np.sqrt(((ijk[0] - 24) / 17) ** 2 + ((ijk[1] - 26) / 20) ** 2 + ((ijk[2] - 15) / 11) ** 2)
    brain = r < 1
    ventricle = (np.abs(ijk[0] - 24) < 3) & (np.abs(ijk[1] - 26) < 5) & (np.abs(ijk[2] - 15) < 3)
    img = np.where(brain, 800.0 + 150.0 * np.sin(ijk[1] / 6.0), 0.0)
    img[ventricle] = 150.0  # dark, enclosed: must be filled
    img[24, 2:6, 15] = 900.0  # 1-voxel-thin protrusion (peeled away)
    # Rayleigh background noise (magnitude image)
    img += np.hypot(rng.normal(0, 20, shape), rng.normal(0, 20, shape))
    return img, brain


def test_clip_level_between_background_and_brain() -> None:
    img, brain = _epi_phantom()
    clip = clip_level(img)
    assert np.percentile(img[~brain], 99) < clip < np.percentile(img[brain], 5)


def test_automask_recovers_phantom_brain() -> None:
    img, brain = _epi_phantom()
    mask = automask(img).astype(bool)
    dice = 2 * (mask & brain).sum() / (mask.sum() + brain.sum())
    assert dice > 0.97
    assert mask[24, 26, 15]  # ventricle filled
    assert not mask[24, 3, 15]  # protrusion removed
    assert ndi.label(mask)[1] == 1
    assert not (ndi.binary_fill_holes(mask) & ~mask).any()


def test_automask_errors() -> None:
    with pytest.raises(ValueError):
        automask(np.zeros((10, 10, 10)))
    with pytest.raises(ValueError):
        automask(np.ones((10, 10)))
    tiny = np.zeros((20, 20, 20))
    tiny[9:12, 9:12, 9:12] = 100.0
    with pytest.raises(ValueError):
        automask(tiny)


def test_automask_real_bold(shared_data) -> None:
    img = nb.load(shared_data / "func" / "xa30_sub1_bold_task-fa_20vol.nii.gz")
    mean = np.asarray(img.dataobj, dtype=np.float32).mean(axis=3)
    mask = automask(mean).astype(bool)
    vol_ml = mask.sum() * np.prod(img.header.get_zooms()[:3]) / 1000.0
    # adult intracranial brain + CSF in an EPI: roughly 1.0-1.7 litres
    assert 900.0 < vol_ml < 1900.0, vol_ml
    assert ndi.label(mask)[1] == 1
    assert mean[mask].mean() > 4 * mean[~mask].mean()
