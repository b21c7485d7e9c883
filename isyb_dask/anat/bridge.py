"""The bridge between the packaged template (MNI152NLin2009aSym) and the surfaces' space.

The fsLR 32k S1200 surfaces (:func:`isyb_dask.metrics.fslr.load_fslr32k`) are in
MNI152NLin6Asym (the HCP ``MNINonLinear`` space); the only template image shipped with the
software is nilearn's MNI152NLin2009aSym T1 brain with its GM/WM probability maps. No
NLin6Asym image may be downloaded at run time, so the NLin6Asym side is built from the
surfaces themselves: the S1200 white and pial surfaces are rasterised into a cortical
ribbon (fraction of each 2 mm voxel between the two surfaces) and the 2009a GM prior is
registered to it by ANTs SyN (Mattes mutual information, identity start, restricted to a
shell around the ribbon so that cerebellar and deep grey matter, which the surfaces do not
describe, take no part).
The result is one pair of dense fields, computed once (~1 min on one core) and cached:

* ``to_2009a``: on the NLin6Asym 2 mm grid, maps NLin6Asym points to 2009aSym points;
* ``to_nlin6``: on the 2009aSym 2 mm grid, the inverse map.

The accuracy is measured (and stored in the cache's ``bridge.json``) as the mean 2009a GM
prior at the S1200 midthickness vertices, before and after the bridge.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nibabel as nb
import numpy as np
from scipy import ndimage as ndi

from isyb_dask.atlas import default_cache_dir
from isyb_dask.anat.warpfield import (
    DenseField,
    ants_from_array,
    field_from_ants,
    seeded_registration,
)

__all__ = [
    "BRIDGE_VERSION",
    "NLIN6_GRID",
    "Bridge",
    "bridge_dir",
    "cached_bridge",
    "get_bridge",
    "rasterise_ribbon",
    "sample_volume",
    "template_maps",
]

BRIDGE_VERSION = "1"
#: The FSL MNI152 2 mm box (91 x 109 x 91) of MNI152NLin6Asym, as a RAS grid.
NLIN6_GRID: tuple[tuple[int, int, int], np.ndarray] = (
    (91, 109, 91),
    np.array([[2.0, 0, 0, -90.0], [0, 2.0, 0, -126.0], [0, 0, 2.0, -72.0], [0, 0, 0, 1.0]]),
)


@dataclass(frozen=True, eq=False)
class Bridge:
    """Cached NLin6Asym <-> 2009aSym fields and their measured accuracy."""

    to_2009a: DenseField
    to_nlin6: DenseField
    accuracy: dict


def sample_volume(
    data: np.ndarray, affine: np.ndarray, xyz: np.ndarray, order: int = 1
) -> np.ndarray:
    """Values of a 3-D map at world points ``(N, 3)`` (0 outside the grid)."""
    inv = np.linalg.inv(affine)
    ijk = np.asarray(xyz, dtype=np.float64) @ inv[:3, :3].T + inv[:3, 3]
    return ndi.map_coordinates(np.asarray(data, dtype=np.float32), ijk.T, order=order,
                               mode="constant", cval=0.0)


def _nilearn(name: str) -> Path:
    from importlib.resources import files

    return Path(str(files("nilearn") / "datasets" / "data" / name))


def template_maps(step_mm: float = 2.0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The nilearn MNI152NLin2009aSym T1 brain and GM/WM priors, block-averaged.

    Returns ``{"t1": (data, affine), "gm": ..., "wm": ..., "brain": ...}`` at ``step_mm``
    (an integer multiple of 1 mm); priors scaled to [0, 1]. Read once per process and step
    (every subject's normalisation uses them): the arrays are read-only, copy to modify.
    """
    return dict(_template_maps(int(round(step_mm))))


@functools.lru_cache(maxsize=4)
def _template_maps(f: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for key, name in (("t1", "t1"), ("gm", "gm"), ("wm", "wm")):
        img = nb.load(str(_nilearn(f"mni_icbm152_{name}_tal_nlin_sym_09a_converted.nii.gz")))
        data = np.asarray(img.dataobj, dtype=np.float32)
        data = data / max(float(data.max()), 1e-6)
        shape = tuple(n // f for n in data.shape)
        data = data[: shape[0] * f, : shape[1] * f, : shape[2] * f]
        data = data.reshape(shape[0], f, shape[1], f, shape[2], f).mean(axis=(1, 3, 5))
        aff = img.affine.copy()
        aff[:3, 3] = aff[:3, :3] @ np.full(3, (f - 1) / 2.0) + aff[:3, 3]
        aff[:3, :3] = aff[:3, :3] * f
        out[key] = (data.astype(np.float32), aff)
    brain = ndi.binary_fill_holes(out["t1"][0] > 0.05)
    out["brain"] = (brain.astype(np.float32), out["t1"][1])
    for data, aff in out.values():
        data.setflags(write=False)
        aff.setflags(write=False)
    return out


def _surface_points(coords: np.ndarray, faces: np.ndarray, n_sub: int) -> np.ndarray:
    """Vertices plus barycentric sub-samples of every triangle (spacing ~ edge / n_sub)."""
    pts = [coords]
    tri = coords[faces]
    for a in range(n_sub + 1):
        for b in range(n_sub + 1 - a):
            c = n_sub - a - b
            if max(a, b, c) == n_sub:
                continue  # a vertex, already included
            pts.append((a * tri[:, 0] + b * tri[:, 1] + c * tri[:, 2]) / n_sub)
    return np.concatenate(pts)


def _inside(
    coords: np.ndarray, faces: np.ndarray, shape: tuple[int, ...], affine: np.ndarray
) -> np.ndarray:
    """Voxels on or inside a closed surface mesh (dense shell, then hole filling)."""
    inv = np.linalg.inv(affine)
    ijk = np.rint(_surface_points(coords, faces, 4) @ inv[:3, :3].T + inv[:3, 3]).astype(np.int64)
    ok = np.all((ijk >= 0) & (ijk < np.asarray(shape)), axis=1)
    shell = np.zeros(shape, dtype=bool)
    shell[tuple(ijk[ok].T)] = True
    return ndi.binary_fill_holes(shell)


def rasterise_ribbon(
    fslr, shape: tuple[int, int, int], affine: np.ndarray, factor: int = 2
) -> np.ndarray:
    """Fraction of each voxel between the white and pial surfaces (both hemispheres).

    Rasterised on a grid ``factor`` times finer than ``(shape, affine)`` and block-averaged.
    """
    fine_aff = affine.copy()
    fine_aff[:3, :3] = affine[:3, :3] / factor
    fine_aff[:3, 3] = affine[:3, 3] - affine[:3, :3] @ np.full(3, (factor - 1) / (2.0 * factor))
    fine_shape = tuple(n * factor for n in shape)
    ribbon = np.zeros(fine_shape, dtype=bool)
    for hemi in ("L", "R"):
        sl = fslr.hemi_slice(hemi)
        tri = fslr.hemi_faces(hemi)
        pial = _inside(fslr.coords["pial"][sl], tri, fine_shape, fine_aff)
        white = _inside(fslr.coords["white"][sl], tri, fine_shape, fine_aff)
        ribbon |= pial & ~ndi.binary_erosion(white)
    r = ribbon.reshape(shape[0], factor, shape[1], factor, shape[2], factor)
    return r.mean(axis=(1, 3, 5)).astype(np.float32)


def _measure(fslr, gm: tuple[np.ndarray, np.ndarray], mapping=None) -> float:
    mid = fslr.coords["midthickness"][fslr.cortex]
    pts = mid if mapping is None else mapping(mid)
    return float(sample_volume(gm[0], gm[1], pts).mean())


def _compute(cache: Path, seed: int) -> None:
    import ants

    from isyb_dask.metrics.fslr import load_fslr32k

    fslr = load_fslr32k()
    shape, aff6 = NLIN6_GRID
    ribbon = rasterise_ribbon(fslr, shape, aff6)
    tmpl = template_maps(2.0)
    gm9, aff9 = tmpl["gm"]
    shell = ndi.binary_dilation(ribbon > 0.0, iterations=2)
    fixed = ants_from_array(ribbon, aff6)
    moving = ants_from_array(gm9, aff9)
    with tempfile.TemporaryDirectory(prefix="isyb-bridge-") as tmp:
        reg = seeded_registration(
            fixed, moving, type_of_transform="SyN", initial_transform="identity",
            mask=ants_from_array(shell.astype(np.float32), aff6),
            aff_metric="mattes", aff_iterations=(300, 200, 50), aff_shrink_factors=(4, 2, 1),
            aff_smoothing_sigmas=(2, 1, 0), syn_metric="mattes", reg_iterations=(60, 40, 20),
            flow_sigma=3, random_seed=seed, outprefix=str(Path(tmp) / "b_"),
        )
        to_2009a = field_from_ants(ribbon, aff6, reg["fwdtransforms"])
        to_nlin6 = field_from_ants(gm9, aff9, reg["invtransforms"], whichtoinvert=[True, False])
        warped = ants.apply_transforms(fixed, moving, reg["fwdtransforms"]).numpy()
    gm1 = template_maps(1.0)["gm"]
    accuracy = {
        "measure": "mean MNI152NLin2009aSym GM prior (nilearn, 1 mm) at the S1200 "
                   "midthickness vertices (cortex only)",
        "before": _measure(fslr, gm1),
        "after": _measure(fslr, gm1, to_2009a),
        "ribbon_dice_after": None,
    }
    a, b = warped > 0.5, ribbon > 0.5
    accuracy["ribbon_dice_after"] = float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))
    a0 = sample_volume(gm9, aff9, _grid(shape, aff6)) > 0.5
    accuracy["ribbon_dice_before"] = float(2 * (a0 & b.ravel()).sum() / max(a0.sum() + b.sum(), 1))
    cache.mkdir(parents=True, exist_ok=True)
    to_2009a.save(cache / "nlin6_to_2009a.nii.gz")
    to_nlin6.save(cache / "2009a_to_nlin6.nii.gz")
    (cache / "bridge.json").write_text(json.dumps(
        {"version": BRIDGE_VERSION, "seed": seed, "accuracy": accuracy,
         "registration": "ANTs SyN (Mattes, identity start, affine 300/200/50, SyN 60/40/20), "
                         "fixed = S1200 ribbon "
                         "fraction on the NLin6Asym 2 mm grid, moving = 2009aSym GM prior"},
        indent=2))


def _grid(shape, affine) -> np.ndarray:
    from isyb_dask.anat.warpfield import grid_points

    return grid_points(shape, affine).reshape(-1, 3)


def bridge_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Folder of the cached bridge below a cache root (default: the default cache)."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / f"bridge-v{BRIDGE_VERSION}"


def cached_bridge(cache_dir: str | os.PathLike[str] | None = None) -> Bridge | None:
    """The bridge if it is already in the cache, else None (never computes it)."""
    cache = bridge_dir(cache_dir)
    if not (cache / "bridge.json").exists():
        return None
    meta = json.loads((cache / "bridge.json").read_text())
    return Bridge(
        to_2009a=DenseField.load(cache / "nlin6_to_2009a.nii.gz"),
        to_nlin6=DenseField.load(cache / "2009a_to_nlin6.nii.gz"),
        accuracy=meta["accuracy"],
    )


def get_bridge(cache_dir: str | os.PathLike[str] | None = None, *, seed: int = 1) -> Bridge:
    """Return the NLin6Asym <-> 2009aSym bridge, computing and caching it on first use.

    Parameters
    ----------
    cache_dir
        Cache root (default ``$ISYB_CACHE_DIR`` or ``~/.cache/isyb-dask``); the bridge lives
        in ``bridge-v<N>/`` (:func:`bridge_dir`), built in a private folder and moved into
        place atomically.
    seed
        ANTs seed of the one-off registration.
    """
    cache = bridge_dir(cache_dir)
    if not (cache / "bridge.json").exists():
        root = cache.parent
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / f".bridge-build-{os.getpid()}-{os.urandom(4).hex()}"
        _compute(tmp, seed)
        try:
            os.rename(tmp, cache)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    bridge = cached_bridge(cache_dir)
    if bridge is None:
        raise RuntimeError(f"the NLin6Asym bridge could not be placed in {cache}")
    return bridge
