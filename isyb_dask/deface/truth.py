"""Ground-truth defacing scores on generated heads (true face region known).

``face_coverage``: fraction of the true face's skin layer that the defacing obscured, i.e.
where ``|O - D|`` exceeds 10 % of the head's robust intensity (99th percentile of the head
voxels). The skin layer is the tissue of the true face region (above the skin threshold)
within :data:`SKIN_MM` (6 mm) of the air: what a face surface is made of, so neither air
in front of the face nor deep tissue (bone, sinuses) that no surface method touches dilutes
it.

``face_relief_mm``: millimetres of the original facial relief left after defacing. The skin
surface is found along the anterior axis (the most anterior voxel above the skin threshold in
each sagittal-coronal column over the true face region) in the original and the defaced
image, in the columns whose original front skin point lies in the true face region. Its
relief is the height minus a 15 mm Gaussian-smoothed version of itself (the
nose, lips, eyes and brow, without the overall head shape). The relief left is
``max(0, beta) * RMS(relief_O)`` with ``beta`` the least-squares slope of the defaced relief
on the original one: 0 mm when nothing of the original shape remains, the full RMS when the
face is untouched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import nibabel as nb
import numpy as np
from nibabel.affines import voxel_sizes
from scipy import ndimage as ndi

from isyb_dask.blocks import padded_box

__all__ = [
    "OriginalFace", "face_truth_metrics", "original_face", "score_defaced",
    "subject_truth_metrics", "truth_face_mask_path",
]

_OBSCURED_FRACTION = 0.10
#: Depth (mm) of the facial skin layer whose coverage is scored.
SKIN_MM = 6.0
_RELIEF_FWHM_MM = 15.0


def truth_face_mask_path(bids_dir: str | Path, subject: str) -> Path | None:
    """``derivatives/synth-truth/sub-X/anat/sub-X_desc-face_mask.nii.gz`` if it exists."""
    sub = subject if subject.startswith("sub-") else f"sub-{subject}"
    path = Path(bids_dir) / "derivatives" / "synth-truth" / sub / "anat" / f"{sub}_desc-face_mask.nii.gz"
    return path if path.exists() else None


def _canonical(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    img = nb.as_closest_canonical(nb.Nifti1Image(np.asarray(data, dtype=np.float32), affine))
    return np.asarray(img.dataobj, dtype=np.float64), img.affine


def _skin_threshold(o: np.ndarray) -> float:
    """Half-way between background and the median of the bright (tissue) voxels."""
    hi = float(np.percentile(o, 99))
    bg = float(np.median(o[o < 0.05 * hi])) if np.any(o < 0.05 * hi) else 0.0
    tissue = float(np.median(o[o > 0.2 * hi])) if np.any(o > 0.2 * hi) else hi
    return bg + 0.3 * (tissue - bg)


def _front(vol: np.ndarray, thr: float, cols: np.ndarray, vox_y: float) -> np.ndarray:
    """Anterior skin depth (mm, along +y) per (x, z) column; NaN outside ``cols``."""
    above = vol > thr
    ny = vol.shape[1]
    idx = ny - 1 - np.argmax(above[:, ::-1, :], axis=1)
    has = above.any(axis=1) & cols
    return np.where(has, idx * vox_y, np.nan)


@dataclass
class OriginalFace:
    """What the scores need from the original head and its true face, computed once.

    Built by :func:`original_face`; every template's defaced image of the subject is scored
    against it by :func:`score_defaced`.
    """

    original: np.ndarray  # canonical (RAS) original, float64
    affine: np.ndarray  # affine of the input grid (to make the defaced image canonical)
    threshold: float  # skin threshold
    tissue: np.ndarray  # skin layer of the true face region (bool, canonical)
    scale: float  # robust head intensity (99th percentile)
    cols: np.ndarray  # (x, z) columns whose original front skin point is in the face
    vox_y: float
    sigma: np.ndarray  # relief smoothing, voxels along x and z
    relief_original: np.ndarray  # relief of the original front skin (NaN outside cols)


def _skin_depth_near(head: np.ndarray, face: np.ndarray, vox: np.ndarray) -> np.ndarray:
    """Distance (mm) to the air for the voxels of ``face``, exact up to :data:`SKIN_MM`.

    The transform runs on the face's bounding box grown by SKIN_MM (+1 voxel): any air
    voxel within SKIN_MM of a face voxel lies in that box, so ``depth <= SKIN_MM`` is decided
    exactly; deeper voxels get a distance > SKIN_MM (not their true depth).
    """
    filled = ndi.binary_fill_holes(head)
    depth = np.full(head.shape, np.inf, dtype=np.float64)
    if not face.any():
        return depth
    box = padded_box(face, np.ceil(SKIN_MM / vox).astype(int) + 1)
    depth[box] = ndi.distance_transform_edt(filled[box], sampling=vox)
    return depth


def original_face(original: np.ndarray, truth_mask: np.ndarray,
                  affine: np.ndarray) -> OriginalFace:
    """The original head's part of the scores (skin layer, front skin, its relief).

    Parameters
    ----------
    original
        Original T1w.
    truth_mask
        True face region (1 = face) on the same grid.
    affine
        Voxel-to-world affine of the grid (used to find the anterior axis).

    Returns
    -------
    OriginalFace

    Raises
    ------
    ValueError
        If the arrays differ in shape.
    """
    if np.shape(original) != np.shape(truth_mask):
        raise ValueError(f"face truth: shapes differ (original {np.shape(original)}, "
                         f"mask {np.shape(truth_mask)})")
    o, aff = _canonical(original, affine)
    f, _ = _canonical(truth_mask, affine)
    face = f > 0.5
    thr = _skin_threshold(o)
    head = o > thr
    vox = voxel_sizes(aff)
    # the face's skin layer: tissue of the true face region within SKIN_MM of the air
    tissue = face & head & (_skin_depth_near(head, face, vox) <= SKIN_MM)
    scale = float(np.percentile(o[head], 99)) if head.any() else 1.0
    # columns whose original front skin point lies inside the true face region
    h_all = _front(o, thr, np.ones(face.any(axis=1).shape, bool), vox[1])
    iy = np.nan_to_num(h_all / vox[1], nan=0).astype(int)
    cols = np.isfinite(h_all) & np.take_along_axis(face, iy[:, None, :], axis=1)[:, 0, :]
    cols = ndi.binary_erosion(cols, iterations=1) if cols.sum() > 20 else cols
    sigma = _RELIEF_FWHM_MM / 2.3548 / np.array([vox[0], vox[2]])
    h_o = _front(o, thr, cols, vox[1])
    return OriginalFace(original=o, affine=np.asarray(affine, dtype=np.float64),
                        threshold=thr, tissue=tissue, scale=scale, cols=cols,
                        vox_y=float(vox[1]), sigma=sigma, relief_original=_relief(h_o, sigma))


def _relief(h: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Height minus its Gaussian-smoothed self over the finite columns (NaN elsewhere)."""
    filled = np.where(np.isfinite(h), h, 0.0)
    w = ndi.gaussian_filter(np.isfinite(h).astype(float), sigma)
    smooth = ndi.gaussian_filter(filled, sigma) / np.maximum(w, 1e-6)
    return h - smooth


def score_defaced(ref: OriginalFace, defaced: np.ndarray) -> dict[str, float]:
    """Coverage of the true face region and facial relief left in one defaced image.

    Parameters
    ----------
    ref
        The original's part (:func:`original_face`).
    defaced
        Defaced T1w on the original's grid.

    Returns
    -------
    dict
        ``face_coverage`` (0..1), ``face_relief_mm`` (mm), ``face_relief_original_mm``
        (RMS relief of the original face, mm), ``face_truth_voxels`` (skin-layer voxels).

    Raises
    ------
    ValueError
        If the defaced image is not on the original's grid.
    """
    d, _ = _canonical(defaced, ref.affine)
    if d.shape != ref.original.shape:
        raise ValueError(f"face truth: shapes differ (original {ref.original.shape}, "
                         f"defaced {np.shape(defaced)})")
    obscured = np.abs(ref.original - d) > _OBSCURED_FRACTION * ref.scale
    n = int(ref.tissue.sum())
    coverage = float(obscured[ref.tissue].mean()) if n else float("nan")
    r_o = ref.relief_original
    ok = np.isfinite(r_o)
    if ok.sum() < 10:
        return {"face_coverage": coverage, "face_relief_mm": float("nan"),
                "face_relief_original_mm": float("nan"), "face_truth_voxels": n}
    h_d = _front(d, ref.threshold, ref.cols, ref.vox_y)
    # same columns as the original; a column left without skin is at the grid's back
    r_d = _relief(np.where(ok, np.where(np.isfinite(h_d), h_d, 0.0), np.nan), ref.sigma)
    both = ok & np.isfinite(r_d)
    a, b = r_o[both], r_d[both]
    rms = float(np.sqrt(np.mean(a * a)))
    beta = float(np.dot(a, b) / np.dot(a, a)) if np.dot(a, a) > 0 else 0.0
    return {"face_coverage": coverage, "face_relief_mm": max(0.0, min(beta, 1.0)) * rms,
            "face_relief_original_mm": rms, "face_truth_voxels": n}


def face_truth_metrics(
    original: np.ndarray,
    defaced: np.ndarray,
    truth_mask: np.ndarray,
    affine: np.ndarray,
) -> dict[str, float]:
    """Coverage of the true face region and facial relief left after defacing.

    One image pair: :func:`original_face` then :func:`score_defaced` (several templates of
    one subject share the first, as :func:`subject_truth_metrics` does).

    Parameters
    ----------
    original, defaced
        Original and defaced T1w, same grid.
    truth_mask
        True face region (1 = face) on the same grid.
    affine
        Voxel-to-world affine of the grid (used to find the anterior axis).

    Returns
    -------
    dict
        ``face_coverage`` (0..1), ``face_relief_mm`` (mm), ``face_relief_original_mm``
        (RMS relief of the original face, mm), ``face_truth_voxels`` (skin-layer voxels).

    Raises
    ------
    ValueError
        If the arrays differ in shape.
    """
    if not (np.shape(original) == np.shape(defaced) == np.shape(truth_mask)):
        raise ValueError(
            f"face truth: shapes differ (original {np.shape(original)}, defaced "
            f"{np.shape(defaced)}, mask {np.shape(truth_mask)})"
        )
    return score_defaced(original_face(original, truth_mask, affine), defaced)


def subject_truth_metrics(
    original_path: str | Path,
    defaced: Mapping[str, str | Path],
    truth_mask_path: str | Path,
    *,
    original_image: nb.spatialimages.SpatialImage | None = None,
) -> dict[str, dict[str, float]]:
    """:func:`face_truth_metrics` for every template's defaced file of one subject.

    ``original_image`` is the already loaded original (the subject anatomy's), so the input
    is not read a second time.
    """
    o_img = original_image if original_image is not None else nb.load(str(original_path))
    o = np.asarray(o_img.dataobj, dtype=np.float64)
    t_img = nb.load(str(truth_mask_path))
    if t_img.shape[:3] != o_img.shape[:3] or not np.allclose(t_img.affine, o_img.affine, atol=1e-3):
        raise ValueError(f"{Path(truth_mask_path).name}: not on the grid of {Path(original_path).name}")
    t = np.asarray(t_img.dataobj, dtype=np.float64)
    out: dict[str, dict[str, float]] = {}
    if not defaced:
        return out
    ref = original_face(o, t, o_img.affine)  # once per subject, shared by the templates
    for name, path in defaced.items():
        d = np.asarray(nb.load(str(path)).dataobj, dtype=np.float64)
        if d.shape[:3] != o.shape[:3]:
            raise ValueError(f"{Path(path).name}: not on the grid of {Path(original_path).name}")
        out[name] = score_defaced(ref, d)
    return out


def add_truth_metrics(rows: dict[str, dict], t1w: str | Path, subject: str,
                      out_dir: str | Path, *,
                      original_image: nb.spatialimages.SpatialImage | None = None) -> bool:
    """Add ``face_coverage``/``face_relief_mm`` to the deface rows when truth exists.

    Looks for the generator's true face region next to the raw data
    (``<bids>/derivatives/synth-truth/sub-X/anat/``) and scores every template whose
    defaced T1w was written. Returns True when the truth was found.
    """
    from isyb_dask.io.outputs import deface_path

    t1w = Path(t1w)
    sub = subject if subject.startswith("sub-") else f"sub-{subject}"
    roots = [p.parent for p in t1w.parents if p.name == sub]
    mask = truth_face_mask_path(roots[0], sub) if roots else None
    if mask is None:
        return False
    defaced = {}
    for name, row in rows.items():
        path = deface_path(out_dir, subject, "defaced", name, mkdir=False)
        if row.get("error") is None and Path(path).exists():
            defaced[name] = path
    for name, vals in subject_truth_metrics(t1w, defaced, mask,
                                            original_image=original_image).items():
        rows[name].update(vals)
    return True
