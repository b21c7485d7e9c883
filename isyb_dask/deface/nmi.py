"""Normalised mutual information of the removed face (METHODS §4).

NMI is computed between two equal-length samples, the original image ``O[F]`` and the
removed face ``R[F] = O[F] - D[F]`` inside one face mask ``F`` shared by all templates of a
subject. Each sample is cut into equal-width bins over its own minimum..maximum (the last
bin closed, as :func:`numpy.histogram`); entropies use the natural logarithm.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["bin_labels", "normalized_mutual_information", "union_face_mask"]


def bin_labels(values: np.ndarray, bins: int) -> np.ndarray:
    """Equal-width bin index (0..bins-1) of each value over the values' own range.

    A constant sample falls into a single bin (label 0).
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    lo, hi = float(v.min()), float(v.max())
    if not hi > lo:
        return np.zeros(v.shape, dtype=np.int64)
    idx = np.floor((v - lo) / (hi - lo) * bins).astype(np.int64)
    return np.clip(idx, 0, bins - 1)


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0].astype(np.float64)
    p /= p.sum()
    return float(-(p * np.log(p)).sum())


def normalized_mutual_information(
    a: np.ndarray, b: np.ndarray, *, bins: int = 64, average: str = "arithmetic"
) -> float:
    """NMI between two samples binned into ``bins`` equal-width bins each.

    Parameters
    ----------
    a, b
        Samples of equal length (for example ``O[F]`` and ``R[F]``). Pairs with a non-finite
        value are dropped.
    bins
        Number of bins per variable.
    average
        ``"arithmetic"``: MI / ((H(a)+H(b))/2) in [0, 1] (default; scikit-learn's
        ``normalized_mutual_info_score`` default); ``"geometric"``: MI / sqrt(H(a) H(b));
        ``"min"`` / ``"max"``: MI / min or max of the entropies; ``"joint"``: MI / H(a, b);
        ``"studholme"``: (H(a)+H(b)) / H(a, b) in [1, 2].

    Returns
    -------
    float
        NaN for an empty sample. When a normaliser is 0 (a constant sample) the
        [0, 1]-ranged variants return 0 and ``"studholme"`` returns 1.
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"samples differ in length: {a.size} vs {b.size}")
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if a.size == 0:
        return float("nan")
    la, lb = bin_labels(a, bins), bin_labels(b, bins)
    joint = np.bincount(la * bins + lb, minlength=bins * bins)
    ha = _entropy(np.bincount(la, minlength=bins))
    hb = _entropy(np.bincount(lb, minlength=bins))
    hab = _entropy(joint)
    mi = max(ha + hb - hab, 0.0)
    if average == "studholme":
        return (ha + hb) / hab if hab > 0 else 1.0
    norm = {
        "arithmetic": (ha + hb) / 2.0,
        "geometric": float(np.sqrt(ha * hb)),
        "min": min(ha, hb),
        "max": max(ha, hb),
        "joint": hab,
    }.get(average)
    if norm is None:
        raise ValueError(f"unknown average {average!r}")
    if norm <= 0:
        return 0.0
    return float(min(max(mi / norm, 0.0), 1.0))


def union_face_mask(
    original: np.ndarray,
    defaced: Sequence[np.ndarray],
    *,
    epsilon: float = 0.0,
    dilate: int = 0,
) -> np.ndarray:
    """Voxels changed by at least one template: ``OR_t |O - D_t| > epsilon`` (option (i)).

    Parameters
    ----------
    original
        Original image.
    defaced
        Defaced images of the same subject, one per template (same grid).
    epsilon
        Change threshold.
    dilate
        Optional dilation (voxels, 6-connected steps) of the union.
    """
    o = np.asarray(original, dtype=np.float64)
    mask = np.zeros(o.shape, dtype=bool)
    for d in defaced:
        mask |= np.abs(o - np.asarray(d, dtype=np.float64)) > epsilon
    if dilate > 0 and mask.any():
        from scipy import ndimage as ndi

        mask = ndi.binary_dilation(mask, iterations=int(dilate))
    return mask
