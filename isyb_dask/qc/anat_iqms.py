"""Anatomical (T1w) IQMs from an image and its masks (METHODS §5.2-§5.3, current MRIQC).

:func:`anat_iqms` is a pure function: given the harmonized INU-corrected image, the original
image (for the FWHM), the head, brain, air and rotation masks and the CSF/GM/WM PVMs, it
returns the flat dict of MRIQC-named IQMs:

``snr_csf``, ``snr_wm``, ``snr_gm``, ``snr_total``, ``cnr``, ``fber``, ``efc``, ``fwhm_x``,
``fwhm_y``, ``fwhm_z``, ``fwhm_avg`` and ``summary_{bg,csf,gm,wm}_{mean,median,p05,p95,
stdv,mad,k,n}``, plus the MRIQC IQMs that come free with the same inputs: ``cjv``,
``wm2max``, ``snrd_*`` (Dietrich SNR), ``icvs_*`` (volume fractions), ``qi_1`` (artifact
fraction of the hat), ``inu_med`` / ``inu_range`` (N4 field in the brain). Not computed:
``qi_2``, ``rpve_*``, ``tpm_overlap_*``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from isyb_dask.qc.common import cjv, cnr, efc, fber, snr, snr_dietrich, volume_fractions
from isyb_dask.qc.fwhm import fwhm_afni
from isyb_dask.qc.summary import STAT_KEYS, summary_stats_regions

__all__ = ["ANAT_IQMS", "anat_iqms", "harmonize"]

_REGIONS = ("bg", "csf", "gm", "wm")

#: Every IQM name returned by :func:`anat_iqms`, in table order.
ANAT_IQMS: tuple[str, ...] = (
    "cjv",
    "cnr",
    "efc",
    "fber",
    "fwhm_avg",
    "fwhm_x",
    "fwhm_y",
    "fwhm_z",
    "icvs_csf",
    "icvs_gm",
    "icvs_wm",
    "inu_med",
    "inu_range",
    "qi_1",
    "snr_csf",
    "snr_gm",
    "snr_total",
    "snr_wm",
    "snrd_csf",
    "snrd_gm",
    "snrd_total",
    "snrd_wm",
    *(f"summary_{r}_{k}" for r in _REGIONS for k in sorted(STAT_KEYS)),
    "wm2max",
)


def harmonize(inu: np.ndarray, factor: float) -> np.ndarray:
    """MRIQC's IQM input: INU-corrected data times ``factor``, NaN and negatives set to 0.

    Parameters
    ----------
    inu
        INU-corrected image.
    factor
        ``1000 / median(WM)`` (see :func:`isyb_dask.qc.air_masks.wm_harmonize_factor`).

    Returns
    -------
    numpy.ndarray
        float32 image.
    """
    out = np.nan_to_num(np.asarray(inu, dtype=np.float32) * np.float32(factor))
    out[out < 0] = 0
    return out


def anat_iqms(
    data: np.ndarray,
    original: np.ndarray,
    *,
    head: np.ndarray,
    brain: np.ndarray,
    air: np.ndarray,
    rotation: np.ndarray | None,
    pvms: Sequence[np.ndarray],
    zooms: Sequence[float],
    artifacts: np.ndarray | None = None,
    bias: np.ndarray | None = None,
) -> dict[str, float]:
    """Compute the T1w IQMs exactly as current MRIQC does from the same inputs.

    Parameters
    ----------
    data
        Harmonized INU-corrected image (:func:`harmonize`), used by every IQM but FWHM.
    original
        Conformed original image (not INU-corrected), used by the FWHM.
    head
        Head mask (FBER foreground).
    brain
        Brain mask (FWHM mask).
    air
        Final air mask (background statistics); an empty mask gives ``nan`` background
        statistics and CNR.
    rotation
        Rotation / zero-padding mask (excluded from FBER background and EFC).
    pvms
        CSF, GM, WM partial-volume maps.
    zooms
        Voxel sizes (mm).
    artifacts
        Artifact mask (for ``qi_1``; NaN when None).
    bias
        N4 bias field (for ``inu_med``, ``inu_range`` over the brain; NaN when None).

    Returns
    -------
    dict
        IQM name -> float (keys :data:`ANAT_IQMS`).
    """
    csf, gm, wm = pvms
    regions = {"csf": csf, "gm": gm, "wm": wm}
    stats = summary_stats_regions(data, regions)
    if np.any(np.asarray(air) > 0):
        stats["bg"] = summary_stats_regions(data, {"bg": np.asarray(air, dtype=np.uint8)})["bg"]
    else:
        stats["bg"] = {k: float("nan") for k in STAT_KEYS}
        stats["bg"]["n"] = 0.0
    out: dict[str, float] = {}
    snrs = []
    for tissue in ("csf", "wm", "gm"):
        st = stats[tissue]
        val = snr(st["median"], st["stdv"], st["n"])
        out[f"snr_{tissue}"] = val
        snrs.append(val)
    out["snr_total"] = float(np.mean(snrs))
    out["cnr"] = cnr(
        stats["wm"]["median"],
        stats["gm"]["median"],
        stats["bg"]["stdv"],
        stats["wm"]["stdv"],
        stats["gm"]["stdv"],
    )
    # MRIQC passes medians and MADs to cjv().
    out["cjv"] = cjv(
        stats["wm"]["median"], stats["gm"]["median"], stats["wm"]["mad"], stats["gm"]["mad"]
    )
    snrds = []
    for tissue in ("csf", "wm", "gm"):
        val = snr_dietrich(stats[tissue]["median"], stats["bg"]["mad"], stats["bg"]["stdv"])
        out[f"snrd_{tissue}"] = val
        snrds.append(val)
    out["snrd_total"] = float(np.mean(snrds))
    icvs = volume_fractions(regions)
    out.update({f"icvs_{k}": v for k, v in icvs.items()})
    nan = float("nan")
    air_n = float(np.count_nonzero(air))
    if artifacts is None:
        out["qi_1"] = nan
    else:
        art_n = float(np.count_nonzero(artifacts))
        out["qi_1"] = art_n / (air_n + art_n) if air_n >= 1 else -1.0
    if bias is None:
        out["inu_med"] = out["inu_range"] = nan
    else:
        inside = np.asarray(bias)[np.asarray(brain) > 0]
        p05, p95 = np.percentile(inside, [5.0, 95.0])
        out["inu_med"] = float(np.median(inside))
        out["inu_range"] = float(abs(p95 - p05))
    out["fber"] = fber(data, head, rotation)
    out["efc"] = efc(data, rotation)
    out["wm2max"] = float(stats["wm"]["median"] / np.percentile(data.reshape(-1), 99.95))
    fx, fy, fz, favg = fwhm_afni(original, brain, tuple(float(z) for z in zooms[:3]))
    out.update({"fwhm_x": fx, "fwhm_y": fy, "fwhm_z": fz, "fwhm_avg": favg})
    for region in _REGIONS:
        for key in STAT_KEYS:
            out[f"summary_{region}_{key}"] = float(stats[region][key])
    return {name: out[name] for name in ANAT_IQMS}
