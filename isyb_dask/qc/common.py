"""Image-quality metrics shared by the anatomical and functional QC (METHODS §5.2, §5.3, §6).

Pure numpy implementations of the *current* MRIQC definitions (nipreps/mriqc >= 23.1,
``mriqc/qc/anatomical.py`` and ``mriqc/interfaces/anatomical.py``): the IQM formulas, and
the component / rotation masks they use. Every function takes arrays and returns Python
floats / arrays; nothing touches files. The weighted region statistics they start from are
in :mod:`isyb_dask.qc.summary`, AFNI's FWHM estimate in :mod:`isyb_dask.qc.fwhm`.

Conventions (identical to MRIQC unless stated):

* ``snr`` uses the region *median* (MRIQC's code does; its docstring says mean).
* FBER/EFC are rounded to 4 decimals; FBER is -1 when the background energy is < 1e-3.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

__all__ = [
    "DIETRICH_FACTOR",
    "GAUSSIAN_3_4",
    "cjv",
    "cnr",
    "efc",
    "fber",
    "maybe_round",
    "snr",
    "snr_dietrich",
    "volume_fractions",
]

#: Normal quantile at 3/4 (``scipy.stats.norm.ppf(0.75)``), the MAD consistency constant.
GAUSSIAN_3_4 = 0.6744897501960817


def maybe_round(value: float, decimals: int | None) -> float:
    """``value`` as a float rounded to ``decimals`` places (not rounded when None)."""
    value = float(value)
    return value if decimals is None else round(value, decimals)


def snr(median: float, stdv: float, n: float) -> float:
    """Single-region SNR = median / (stdv * sqrt(n / (n - 1))) (MRIQC ``snr``).

    Parameters
    ----------
    median
        Region median (MRIQC passes the median as the "mean" argument).
    stdv
        Region (weighted population) standard deviation.
    n
        Region size (sum of weights).

    Returns
    -------
    float
        The SNR (``nan`` when ``n <= 1`` or ``stdv == 0``).
    """
    if n <= 1 or stdv == 0:
        return float("nan")
    return float(median / (stdv * math.sqrt(n / (n - 1.0))))


def cnr(mu_wm: float, mu_gm: float, sigma_air: float, sigma_wm: float, sigma_gm: float) -> float:
    """CNR = |mu_wm - mu_gm| / sqrt(sigma_air^2 + sigma_wm^2 + sigma_gm^2) (MRIQC ``cnr``).

    Parameters
    ----------
    mu_wm, mu_gm
        WM and GM location (MRIQC passes the medians).
    sigma_air, sigma_wm, sigma_gm
        Standard deviations of air, WM and GM.

    Returns
    -------
    float
        The contrast-to-noise ratio.
    """
    return float(abs(mu_wm - mu_gm) / math.sqrt(sigma_air**2 + sigma_wm**2 + sigma_gm**2))


#: 1 / sqrt(2 / (4 - pi)): Rayleigh correction of the air SD (Dietrich et al. 2007, A.12).
DIETRICH_FACTOR = 0.6551364


def snr_dietrich(median: float, mad_air: float, sigma_air: float) -> float:
    """Dietrich SNR (MRIQC ``snr_dietrich``): 0.6551364 * median / MAD(air).

    Falls back to the air SD when MAD(air) <= 1 (typical of zero-filled backgrounds) and
    returns -1 when that SD is <= 1e-3 as well.

    Parameters
    ----------
    median
        Tissue median.
    mad_air, sigma_air
        MAD and SD of the air region.

    Returns
    -------
    float
        The SNR.
    """
    if mad_air > 1.0:
        return float(DIETRICH_FACTOR * median / mad_air)
    return float(DIETRICH_FACTOR * median / sigma_air) if sigma_air > 1e-3 else -1.0


def volume_fractions(pvms: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Intracranial volume fractions: sum of each PVM over the sum of all (MRIQC ``icvs_*``).

    Parameters
    ----------
    pvms
        Tissue name -> partial-volume map.

    Returns
    -------
    dict
        Tissue name -> fraction (they sum to 1).
    """
    sums = {k: float(np.asarray(v, dtype=np.float64).sum()) for k, v in pvms.items()}
    total = sum(sums.values())
    return {k: v / total for k, v in sums.items()}


def cjv(mu_wm: float, mu_gm: float, sigma_wm: float, sigma_gm: float) -> float:
    """Coefficient of joint variation (sigma_wm + sigma_gm) / |mu_wm - mu_gm|.

    Parameters
    ----------
    mu_wm, mu_gm
        WM and GM location.
    sigma_wm, sigma_gm
        WM and GM standard deviations.

    Returns
    -------
    float
        The CJV (lower is better).
    """
    return float((sigma_wm + sigma_gm) / abs(mu_wm - mu_gm))


def fber(
    data: np.ndarray,
    head_mask: np.ndarray,
    rotation_mask: np.ndarray | None = None,
    *,
    decimals: int | None = 4,
) -> float:
    """Foreground-background energy ratio (MRIQC ``fber``).

    FBER = median(|x|^2 in head) / median(|x|^2 outside the head and the rotation mask).

    Parameters
    ----------
    data
        Image intensities.
    head_mask
        Foreground (head for T1w, brain for BOLD); voxels > 0 are foreground.
    rotation_mask
        Zero-padding voxels (> 0) excluded from the background.
    decimals
        Rounding of the result (MRIQC: 4).

    Returns
    -------
    float
        The ratio, or -1.0 when the background median energy is below 1e-3 (or the
        background is empty).
    """
    data = np.asarray(data, dtype=np.float64)
    head = np.asarray(head_mask) > 0
    fg_mu = np.median(np.abs(data[head]) ** 2)
    air = ~head
    if rotation_mask is not None:
        air &= ~(np.asarray(rotation_mask) > 0)
    if not air.any():
        return -1.0
    bg_mu = np.median(np.abs(data[air]) ** 2)
    if bg_mu < 1.0e-3:
        return -1.0
    return maybe_round(fg_mu / bg_mu, decimals)


def efc(
    data: np.ndarray, rotation_mask: np.ndarray | None = None, *, decimals: int | None = 4
) -> float:
    """Entropy focus criterion normalised by its maximum (MRIQC ``efc``).

    Over the N voxels outside the rotation mask, b = sqrt(sum x^2),
    E = sum (x/b) ln((x + 1e-16)/b), EFC = E / (N (1/sqrt N) ln(1/sqrt N)).

    Parameters
    ----------
    data
        Image intensities (MRIQC passes non-negative data).
    rotation_mask
        Zero-padding voxels (> 0) left out.
    decimals
        Rounding of the result (MRIQC: 4).

    Returns
    -------
    float
        EFC in [0, 1] for non-negative data.
    """
    data = np.asarray(data, dtype=np.float64)
    keep = np.ones(data.shape, dtype=bool)
    if rotation_mask is not None:
        keep = ~(np.asarray(rotation_mask) > 0)
    x = data[keep]
    n_vox = float(x.size)
    x = x[x != 0]  # zero voxels contribute exactly 0 to the sum
    efc_max = n_vox * (1.0 / math.sqrt(n_vox)) * math.log(1.0 / math.sqrt(n_vox))
    b_max = math.sqrt(float(np.dot(x, x)))
    entropy = float(np.sum((x / b_max) * np.log((x + 1e-16) / b_max)))
    return maybe_round(entropy / efc_max, decimals)
