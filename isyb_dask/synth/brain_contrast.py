"""T1w tissue contrast of the synthetic brain, calibrated to a real MPRAGE.

The head template is an average of many registered heads. Averaging blurs each sulcus into
its neighbours, so inside the brain the template's intensity is a poor T1w: regressed on the
atlas tissue fractions, its class means are CSF 0.65 and GM 0.82 of WM, where a single 3 T
MPRAGE has about 0.3 and 0.7 (the real XA30 volunteer in ``../shared/data``, weighted by our
own posteriors after N4: CSF 0.305 and GM 0.715 of WM; its prescan-normalised copy 0.306
and 0.710). A segmentation of such a head sees CSF and GM as almost one class, and the
cortex it finds is fuzzier than any real head's.

:func:`calibrate_brain_contrast` keeps the template's own texture (what the tissue fractions
do not explain) and replaces the part they explain, ``sum_k a_k p_k``, by ``sum_k m_k p_k``
with the MPRAGE class means ``m_k`` (the template's WM mean times
:data:`MPRAGE_RELATIVE_MEANS`), weighted by the brain mask so that scalp, face and neck are
untouched. The tissue fractions (the truth maps) do not change.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["MPRAGE_RELATIVE_MEANS", "calibrate_brain_contrast", "fit_class_means"]

#: T1w class means relative to WM: rounded from the XA30 volunteer's (see module docstring).
MPRAGE_RELATIVE_MEANS: dict[str, float] = {"gm": 0.72, "wm": 1.0, "csf": 0.31}

_CLASSES = ("gm", "wm", "csf")


def fit_class_means(
    t1: np.ndarray, fractions: dict[str, np.ndarray], brain: np.ndarray
) -> dict[str, float]:
    """Least-squares class means of ``t1`` on the tissue fractions, inside ``brain > 0.5``.

    Parameters
    ----------
    t1
        Intensity image.
    fractions
        ``{"gm", "wm", "csf"}`` fractions on the same grid.
    brain
        Brain mask or probability.

    Returns
    -------
    dict
        Mean intensity of each pure class.

    Raises
    ------
    ValueError
        If the brain mask is empty.
    """
    inside = np.asarray(brain) > 0.5
    if not inside.any():
        raise ValueError("fit_class_means: the brain mask is empty")
    design = np.stack([np.asarray(fractions[k])[inside] for k in _CLASSES], axis=1)
    coef, *_ = np.linalg.lstsq(design.astype(np.float64),
                               np.asarray(t1)[inside].astype(np.float64), rcond=None)
    return {k: float(c) for k, c in zip(_CLASSES, coef)}


def calibrate_brain_contrast(
    t1: np.ndarray,
    fractions: dict[str, np.ndarray],
    brain: np.ndarray,
    relative: dict[str, float] | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Give the brain of ``t1`` the class means of a real MPRAGE (see module docstring).

    Parameters
    ----------
    t1
        Template intensity (float).
    fractions
        ``{"gm", "wm", "csf"}`` tissue fractions on the same grid.
    brain
        Brain probability (the weight of the change, clipped to 0-1).
    relative
        Class means relative to WM (default :data:`MPRAGE_RELATIVE_MEANS`).

    Returns
    -------
    tuple
        The new float32 intensity (never negative) and ``{"template_means", "target_means"}``.
    """
    relative = dict(MPRAGE_RELATIVE_MEANS if relative is None else relative)
    fitted = fit_class_means(t1, fractions, brain)
    target = {k: fitted["wm"] * relative[k] / relative["wm"] for k in _CLASSES}
    delta = np.zeros(np.shape(t1), dtype=np.float32)
    for k in _CLASSES:
        delta += np.float32(target[k] - fitted[k]) * np.asarray(fractions[k], dtype=np.float32)
    weight = np.clip(np.asarray(brain, dtype=np.float32), 0.0, 1.0)
    out = np.clip(np.asarray(t1, dtype=np.float32) + weight * delta, 0.0, None)
    return out, {"template_means": fitted, "target_means": target}
