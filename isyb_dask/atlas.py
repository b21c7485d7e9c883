"""Reference atlas: the built-in head template with brain and tissue maps on its grid.

The built-in head template is pydeface's ``mean_reg2mean`` (a head with a face, MIT licensed)
with its face mask. It comes without a brain mask or tissue maps, and it is not in MNI world
coordinates (about 25 mm off). nilearn ships the MNI152 2009a symmetric T1 brain with GM and WM
probability maps (BSD-3). This module registers those MNI maps onto the head template once
(12-parameter affine, Mattes mutual information restricted to the MNI brain) and caches the
result, so every stage can use:

- a brain mask, GM/WM/CSF probabilities on the head grid (deface guarantee, QC priors, synth);
- the head-to-MNI world affine (T1w -> head -> MNI chains for the surface metrics);
- the MNI maps themselves.

Nothing is downloaded: all inputs are package data files.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import nibabel as nb
import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from isyb_dask.registration import matrix_ras, sitk_to_array, to_sitk

__all__ = ["ReferenceAtlas", "get_reference_atlas", "builtin_head_paths", "ATLAS_VERSION"]

ATLAS_VERSION = "1"


@dataclass(frozen=True)
class ReferenceAtlas:
    """Paths of the reference atlas files (see module docstring).

    All maps except the ``mni_*`` ones lie on the head template grid.
    """

    head: Path
    face_mask: Path
    brain_mask: Path
    gm_prob: Path
    wm_prob: Path
    csf_prob: Path
    mni_t1_brain: Path
    mni_brain_mask: Path
    mni_gm_prob: Path
    mni_wm_prob: Path
    head_to_mni: Path

    def head_to_mni_affine(self) -> np.ndarray:
        """4x4 affine mapping head-template world mm (RAS) to MNI world mm (RAS)."""
        return np.loadtxt(self.head_to_mni)


def builtin_head_paths() -> tuple[Path, Path]:
    """Paths of pydeface's head template and face mask (1 = keep, 0 = face)."""
    base = files("pydeface") / "data"
    return Path(str(base / "mean_reg2mean.nii.gz")), Path(str(base / "facemask.nii.gz"))


def _nilearn_path(name: str) -> Path:
    return Path(str(files("nilearn") / "datasets" / "data" / name))


def default_cache_dir() -> Path:
    """The cache root: ``$ISYB_CACHE_DIR``, else ``$XDG_CACHE_HOME/isyb-dask`` (``~/.cache``)."""
    env = os.environ.get("ISYB_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "isyb-dask"


def _mni_brain_mask(t1: np.ndarray) -> np.ndarray:
    mask = t1 > 0
    mask = ndi.binary_closing(mask, iterations=2)
    mask = ndi.binary_fill_holes(mask)
    lab, n = ndi.label(mask)
    if n > 1:
        sizes = ndi.sum(mask, lab, range(1, n + 1))
        mask = lab == (1 + int(np.argmax(sizes)))
    return mask


def _register_mni_to_head(head: sitk.Image, mni: sitk.Image, mni_mask: sitk.Image) -> sitk.Transform:
    """Affine (fixed = head, moving = MNI brain) with a small multi-start over translations."""
    best = None
    centre = sitk.CenteredTransformInitializer(
        head, mni, sitk.AffineTransform(3), sitk.CenteredTransformInitializerFilter.MOMENTS
    )
    # The head's centre of mass includes face and neck: try shifts up and back.
    for dz in (0.0, 15.0, 30.0):
        for dy in (0.0, -15.0):
            init = sitk.AffineTransform(centre)
            t = np.array(init.GetTranslation()) + np.array([0.0, -dy, -dz])  # LPS: +y is posterior
            init.SetTranslation(t.tolist())
            reg = sitk.ImageRegistrationMethod()
            reg.SetMetricAsMattesMutualInformation(32)
            reg.SetMetricMovingMask(mni_mask)
            reg.SetMetricSamplingStrategy(reg.REGULAR)
            reg.SetMetricSamplingPercentage(0.2, seed=1)
            reg.SetInterpolator(sitk.sitkLinear)
            reg.SetOptimizerAsRegularStepGradientDescent(2.0, 1e-4, 150, relaxationFactor=0.6)
            reg.SetOptimizerScalesFromPhysicalShift()
            reg.SetShrinkFactorsPerLevel([4, 2])
            reg.SetSmoothingSigmasPerLevel([2.0, 1.0])
            reg.SetInitialTransform(init, inPlace=False)
            out = reg.Execute(head, mni)
            metric = reg.GetMetricValue()
            if best is None or metric < best[0]:
                best = (metric, out)
    assert best is not None
    return best[1]


def _build(cache: Path) -> None:
    head_path, face_path = builtin_head_paths()
    head_img = nb.load(str(head_path))
    mni_t1 = nb.load(str(_nilearn_path("mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")))
    mni_gm = nb.load(str(_nilearn_path("mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz")))
    mni_wm = nb.load(str(_nilearn_path("mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz")))
    t1 = np.asarray(mni_t1.dataobj, dtype=np.float32)
    gm = np.asarray(mni_gm.dataobj, dtype=np.float32)
    wm = np.asarray(mni_wm.dataobj, dtype=np.float32)
    gm = gm / max(gm.max(), 1e-6)
    wm = wm / max(wm.max(), 1e-6)
    brain = _mni_brain_mask(t1)
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0) * brain

    mni_dir = cache / "mni"
    mni_dir.mkdir(parents=True, exist_ok=True)
    maps = {"brain_mask": brain.astype(np.uint8), "gm_prob": gm * brain, "wm_prob": wm * brain}
    for name, arr in maps.items():
        hdr_dtype = np.uint8 if name == "brain_mask" else np.float32
        nb.save(nb.Nifti1Image(arr.astype(hdr_dtype), mni_t1.affine), str(mni_dir / f"mni_{name}.nii.gz"))

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    head_s = to_sitk(head_img)
    mni_s = to_sitk(t1, mni_t1.affine)
    mask_s = sitk.Cast(to_sitk(brain.astype(np.float32), mni_t1.affine) > 0.5, sitk.sitkUInt8)
    transform = _register_mni_to_head(head_s, mni_s, mask_s)
    head_to_mni = matrix_ras(transform)

    def warp(arr: np.ndarray, interp: int) -> np.ndarray:
        moving = to_sitk(arr.astype(np.float32), mni_t1.affine)
        out = sitk.Resample(moving, head_s, transform, interp, 0.0, sitk.sitkFloat32)
        return sitk_to_array(out)

    gm_h = np.clip(warp(gm * brain, sitk.sitkLinear), 0, 1)
    wm_h = np.clip(warp(wm * brain, sitk.sitkLinear), 0, 1)
    brain_h = warp(brain.astype(np.float32), sitk.sitkLinear) > 0.5
    csf_h = np.clip(warp(csf, sitk.sitkLinear), 0, 1) * brain_h
    head_dir = cache / "head"
    head_dir.mkdir(parents=True, exist_ok=True)
    for name, arr, dt in (
        ("brain_mask", brain_h, np.uint8),
        ("gm_prob", gm_h, np.float32),
        ("wm_prob", wm_h, np.float32),
        ("csf_prob", csf_h, np.float32),
    ):
        nb.save(nb.Nifti1Image(arr.astype(dt), head_img.affine), str(head_dir / f"head_{name}.nii.gz"))
    np.savetxt(cache / "head_to_mni.txt", head_to_mni)
    (cache / "atlas.json").write_text(
        json.dumps(
            {
                "version": ATLAS_VERSION,
                "head": str(head_path),
                "mni": "nilearn mni_icbm152_t1_tal_nlin_sym_09a_converted",
                "registration": "affine, Mattes MI (32 bins), MNI brain mask, shrink 4/2",
            },
            indent=2,
        )
    )


def get_reference_atlas(cache_dir: str | os.PathLike[str] | None = None) -> ReferenceAtlas:
    """Return the reference atlas, computing and caching it on first use (~10-20 s).

    Parameters
    ----------
    cache_dir
        Folder of the cache; defaults to ``$ISYB_CACHE_DIR`` or ``~/.cache/isyb-dask``.
        Concurrent callers are safe: the atlas is built in a private folder and moved into
        place atomically; a loser of the race keeps the winner's copy.
    """
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache = root / f"atlas-v{ATLAS_VERSION}"
    if not (cache / "atlas.json").exists():
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / f".atlas-build-{os.getpid()}-{os.urandom(4).hex()}"
        _build(tmp)
        try:
            os.rename(tmp, cache)
        except OSError:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    head_path, face_path = builtin_head_paths()
    return ReferenceAtlas(
        head=head_path,
        face_mask=face_path,
        brain_mask=cache / "head" / "head_brain_mask.nii.gz",
        gm_prob=cache / "head" / "head_gm_prob.nii.gz",
        wm_prob=cache / "head" / "head_wm_prob.nii.gz",
        csf_prob=cache / "head" / "head_csf_prob.nii.gz",
        mni_t1_brain=_nilearn_path("mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"),
        mni_brain_mask=cache / "mni" / "mni_brain_mask.nii.gz",
        mni_gm_prob=cache / "mni" / "mni_gm_prob.nii.gz",
        mni_wm_prob=cache / "mni" / "mni_wm_prob.nii.gz",
        head_to_mni=cache / "head_to_mni.txt",
    )
