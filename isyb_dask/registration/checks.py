"""Plausibility of a template-to-subject transform (scales, shears, rotation, reflection)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import SimpleITK as sitk

from isyb_dask.registration.grid import _as_affine, _lps_matrix, matrix_ras

__all__ = ["PlausibilityLimits", "check_transform"]


@dataclass(frozen=True)
class PlausibilityLimits:
    """Bounds that a template-to-subject transform must satisfy to be trusted.

    Attributes
    ----------
    scale_range
        Allowed range of each axis scale (QR decomposition of the linear part).
    max_shear
        Largest allowed absolute shear coefficient.
    max_rotation_deg
        Largest allowed rotation angle (after reorientation to the closest canonical
        orientation, real head tilts are well below this).
    """

    scale_range: tuple[float, float] = (0.6, 1.6)
    max_shear: float = 0.25
    max_rotation_deg: float = 45.0


def check_transform(
    transform: sitk.Transform, limits: PlausibilityLimits | None = None
) -> tuple[bool, dict[str, Any]]:
    """Decompose the linear part of a transform and compare it with plausibility limits.

    The linear part ``A`` is split as ``A = Q R`` (QR, ``R`` with a positive diagonal):
    ``scales = diag(R)``, ``shears = (R01/R00, R02/R00, R12/R11)`` and the rotation angle
    of ``Q``; ``det(A) < 0`` (a reflection) is always implausible.

    Returns
    -------
    (bool, dict)
        Plausible or not, and the measured quantities plus ``violations``.
    """
    limits = limits or PlausibilityLimits()
    m = _lps_matrix(_as_affine(transform))
    a = m[:3, :3]
    det = float(np.linalg.det(a))
    q, r = np.linalg.qr(a)
    signs = np.sign(np.diag(r))
    signs[signs == 0] = 1.0
    q = q * signs
    r = (r.T * signs).T
    scales = np.diag(r).astype(float)
    shears = np.array([r[0, 1] / r[0, 0], r[0, 2] / r[0, 0], r[1, 2] / r[1, 1]])
    if np.linalg.det(q) > 0:
        cos = np.clip((np.trace(q) - 1.0) / 2.0, -1.0, 1.0)
        rot = float(np.degrees(np.arccos(cos)))
    else:
        rot = float("nan")
    violations = []
    if det <= 0:
        violations.append("reflection or singular matrix")
    lo, hi = limits.scale_range
    if np.any(scales < lo) or np.any(scales > hi):
        violations.append(f"scale outside [{lo}, {hi}]")
    if np.any(np.abs(shears) > limits.max_shear):
        violations.append(f"shear above {limits.max_shear}")
    if not (rot <= limits.max_rotation_deg):
        violations.append(f"rotation above {limits.max_rotation_deg} deg")
    if not np.all(np.isfinite(m)):
        violations.append("non-finite parameters")
    checks = {
        "scales": [round(float(s), 5) for s in scales],
        "shears": [round(float(s), 5) for s in shears],
        "rotation_deg": round(rot, 3),
        "translation_mm": [round(float(t), 3) for t in (matrix_ras(transform)[:3, 3])],
        "determinant": round(det, 5),
        "violations": violations,
    }
    return not violations, checks
