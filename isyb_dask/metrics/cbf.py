"""Cerebral blood flow from single-PLD ASL, ASL white-paper model (METHODS §13).

Model (Alsop et al. 2015), CBF in ml/100 g/min, times in seconds:

* (p)CASL: ``CBF = 6000 lambda dM exp(PLD_k / T1b) / (2 alpha T1b M0 (1 - exp(-tau / T1b)))``
* PASL (QUIPSS II / Q2TIPS): ``CBF = 6000 lambda dM exp(TI_k / T1b) / (2 alpha TI1 M0)``

``dM = mean(control) - mean(label)`` over the control/label volumes (plus any ``deltam``
volumes, averaged in with the pair differences). Constants: ``lambda = 0.9`` ml/g; ``T1b =
1.65`` s at 3 T, 1.35 s at 1.5 T, ``(110 B0 + 1316)`` ms at other fields (ASLPrep);
``alpha = 0.85`` (PCASL), 0.68 (CASL), 0.98 (PASL) unless the sidecar gives
``LabelingEfficiency``. Background suppression: when the sidecar says
``BackgroundSuppression: true`` and ``bs_efficiency`` is given, ``alpha`` is multiplied by
``bs_efficiency ** BackgroundSuppressionNumberPulses`` (1 pulse if the count is missing);
default off, as the white paper gives no per-pulse factor.

Per-slice timing for 2-D readouts (``MRAcquisitionType == "2D"``): slice ``k`` was read
``SliceTiming[k]`` seconds after the first, so its effective delay is ``PLD + SliceTiming[k]``
(``TI + SliceTiming[k]`` for PASL). ``SliceTiming`` is mapped to the slice axis given by
``SliceEncodingDirection`` (default ``k``; a ``-`` sign reverses the list, BIDS).

M0: a separate M0 image (``M0Type: Separate``), the mean of the ``m0scan`` volumes of the
series (``Included``), or the scalar ``M0Estimate`` (``Estimate``), multiplied by
``m0_scale`` (vendor scaling). Voxels with ``|M0| < 1e-6``, outside the mask or non-finite
are 0. Negative CBF (noise) is kept.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from isyb_dask.errors import InputError

__all__ = [
    "VOLUME_TYPES",
    "PARTITION_COEFFICIENT",
    "read_aslcontext",
    "blood_t1",
    "labeling_efficiency",
    "slice_delays",
    "cbf_from_asl",
]

VOLUME_TYPES = ("control", "label", "m0scan", "deltam", "cbf", "norf")
PARTITION_COEFFICIENT = 0.9
_ALPHA = {"PCASL": 0.85, "CASL": 0.68, "PASL": 0.98}


def read_aslcontext(path: str | os.PathLike[str]) -> list[str]:
    """Read a BIDS ``*_aslcontext.tsv``.

    Parameters
    ----------
    path
        TSV file with a ``volume_type`` column.

    Returns
    -------
    list of str
        Lower-case volume types, one per volume.

    Raises
    ------
    InputError
        If the file is missing, lacks the column or holds an unknown type.
    """
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
    except OSError as exc:
        raise InputError(f"cannot read aslcontext {path}: {exc}") from exc
    if not rows or "volume_type" not in rows[0]:
        raise InputError(f"{path}: no 'volume_type' column")
    types = [str(r["volume_type"]).strip().lower() for r in rows]
    bad = sorted({t for t in types if t not in VOLUME_TYPES})
    if bad:
        raise InputError(f"{path}: unknown volume_type(s) {bad}; expected {VOLUME_TYPES}")
    return types


def _field(meta: Mapping[str, Any], name: str) -> Any:
    if name not in meta or meta[name] is None:
        raise InputError(f"ASL sidecar lacks the required field {name!r}")
    return meta[name]


def _seconds(meta: Mapping[str, Any], name: str, *, select: Sequence[int] | None = None,
             first: bool = False) -> float:
    """A time field in seconds; lists must be constant (over ``select`` if they list volumes)."""
    val = _field(meta, name)
    try:
        arr = np.atleast_1d(np.asarray(val, dtype=np.float64)).ravel()
    except (TypeError, ValueError) as exc:
        raise InputError(f"ASL sidecar field {name!r} is not numeric: {val!r}") from exc
    if first:
        arr = arr[:1]
    elif select is not None and arr.size > 1 and max(select, default=-1) < arr.size:
        arr = arr[list(select)]
    if arr.size == 0 or not np.all(np.isfinite(arr)):
        raise InputError(f"ASL sidecar field {name!r} is not a finite number: {val!r}")
    if not np.allclose(arr, arr[0]):
        raise InputError(f"ASL sidecar field {name!r} varies across volumes ({val!r}): "
                         "multi-delay ASL is not supported by the single-PLD model")
    sec = float(arr[0])
    if not 0 <= sec < 30:
        raise InputError(f"ASL sidecar field {name!r} = {sec} is not a time in seconds")
    return sec


def blood_t1(field_strength: float) -> float:
    """Arterial blood T1 in seconds for a field strength in tesla.

    Parameters
    ----------
    field_strength
        B0 in T.

    Returns
    -------
    float
        1.65 s at 3 T, 1.35 s at 1.5 T (white paper), else ``(110 B0 + 1316) / 1000``.
    """
    b0 = float(field_strength)
    if abs(b0 - 3.0) < 0.05:
        return 1.65
    if abs(b0 - 1.5) < 0.05:
        return 1.35
    return (110.0 * b0 + 1316.0) / 1000.0


def labeling_efficiency(meta: Mapping[str, Any], bs_efficiency: float | None = None) -> float:
    """Labelling efficiency alpha, with the optional background-suppression factor.

    Parameters
    ----------
    meta
        ASL sidecar.
    bs_efficiency
        Per-pulse inversion efficiency of background suppression; ``None`` = no correction.

    Returns
    -------
    float
        Effective alpha.
    """
    kind = str(_field(meta, "ArterialSpinLabelingType")).upper()
    if kind not in _ALPHA:
        raise InputError(f"ASL sidecar field 'ArterialSpinLabelingType' = {kind!r} is not one "
                         f"of {sorted(_ALPHA)}")
    alpha = float(meta.get("LabelingEfficiency") or _ALPHA[kind])
    if bs_efficiency is not None and bool(meta.get("BackgroundSuppression", False)):
        n_pulses = int(meta.get("BackgroundSuppressionNumberPulses") or 1)
        alpha *= float(bs_efficiency) ** n_pulses
    return alpha


def slice_delays(meta: Mapping[str, Any], shape: Sequence[int]) -> np.ndarray:
    """Per-voxel extra delay (s) of a 2-D multi-slice readout, broadcastable to ``shape``.

    Parameters
    ----------
    meta
        Sidecar with ``MRAcquisitionType`` and, for 2-D, ``SliceTiming``.
    shape
        3-D grid shape.

    Returns
    -------
    numpy.ndarray
        Zeros for 3-D readouts; for 2-D the slice times along the slice axis.
    """
    if str(meta.get("MRAcquisitionType", "")).upper() != "2D":
        return np.zeros((1, 1, 1))
    times = np.asarray(_field(meta, "SliceTiming"), dtype=np.float64).ravel()
    direction = str(meta.get("SliceEncodingDirection", "k"))
    axis = {"i": 0, "j": 1, "k": 2}.get(direction.rstrip("-"))
    if axis is None:
        raise InputError(f"ASL sidecar field 'SliceEncodingDirection' = {direction!r} invalid")
    if times.size != shape[axis]:
        raise InputError(f"ASL sidecar field 'SliceTiming' has {times.size} entries for "
                         f"{shape[axis]} slices")
    if direction.endswith("-"):
        times = times[::-1]
    out_shape = [1, 1, 1]
    out_shape[axis] = times.size
    return (times - times.min()).reshape(out_shape)


def _m0_image(data: np.ndarray, types: list[str], m0: np.ndarray | float | None,
              meta: Mapping[str, Any]) -> np.ndarray:
    if m0 is not None:
        return np.broadcast_to(np.asarray(m0, dtype=np.float64), data.shape[:3])
    idx = [i for i, t in enumerate(types) if t == "m0scan"]
    if idx:
        return data[..., idx].astype(np.float64).mean(-1)
    if str(meta.get("M0Type", "")).lower() == "estimate":
        est = float(_field(meta, "M0Estimate"))
        return np.full(data.shape[:3], est)
    raise InputError("ASL: no M0 (no separate M0 scan, no m0scan volume in aslcontext and no "
                     "'M0Estimate' in the sidecar)")


def cbf_from_asl(
    data: np.ndarray,
    volume_types: Sequence[str],
    m0: np.ndarray | float | None,
    meta: Mapping[str, Any],
    *,
    mask: np.ndarray | None = None,
    m0_scale: float = 1.0,
    partition: float = PARTITION_COEFFICIENT,
    bs_efficiency: float | None = None,
) -> np.ndarray:
    """CBF map (ml/100 g/min) from a single-delay ASL series.

    Parameters
    ----------
    data
        ``(X, Y, Z, T)`` ASL series (or ``(X, Y, Z)`` with a single ``deltam`` volume).
    volume_types
        One of ``control, label, m0scan, deltam, cbf, norf`` per volume (aslcontext).
    m0
        Separate M0 image on the ASL grid (or scalar); ``None`` = use the ``m0scan`` volumes
        or ``M0Estimate``.
    meta
        BIDS sidecar: ``ArterialSpinLabelingType``, ``PostLabelingDelay``,
        ``MagneticFieldStrength``, ``LabelingDuration`` (CASL/PCASL) or
        ``BolusCutOffDelayTime`` (PASL), ``MRAcquisitionType``/``SliceTiming`` for per-slice
        delays, optional ``LabelingEfficiency``, ``BackgroundSuppression*``.
    mask
        Boolean brain mask; CBF is 0 outside.
    m0_scale
        Factor applied to M0 (vendor scaling).
    partition
        Blood-brain partition coefficient lambda (ml/g).
    bs_efficiency
        Per-pulse background-suppression efficiency; ``None`` = off.

    Returns
    -------
    numpy.ndarray
        float32 ``(X, Y, Z)`` CBF.

    Raises
    ------
    InputError
        On a missing/invalid sidecar field (named), inconsistent volume types or no M0.
    """
    data = np.asarray(data)
    if data.ndim == 3:
        data = data[..., None]
    if data.ndim != 4:
        raise InputError(f"ASL series must be 3-D or 4-D, got shape {data.shape}")
    types = [str(t).strip().lower() for t in volume_types]
    if len(types) != data.shape[-1]:
        raise InputError(f"aslcontext lists {len(types)} volumes, the ASL series has "
                         f"{data.shape[-1]}")
    kind = str(_field(meta, "ArterialSpinLabelingType")).upper()
    alpha = labeling_efficiency(meta, bs_efficiency)
    t1b = blood_t1(float(_field(meta, "MagneticFieldStrength")))
    ctrl = [i for i, t in enumerate(types) if t == "control"]
    lab = [i for i, t in enumerate(types) if t == "label"]
    dm_idx = [i for i, t in enumerate(types) if t == "deltam"]
    pld = _seconds(meta, "PostLabelingDelay", select=sorted(ctrl + lab + dm_idx))
    delay = pld + slice_delays(meta, data.shape[:3])
    if len(ctrl) != len(lab):
        raise InputError(f"ASL: {len(ctrl)} control but {len(lab)} label volumes")
    diffs = []
    if ctrl:
        diffs.append((data[..., ctrl].astype(np.float64) - data[..., lab]).sum(-1))
    if dm_idx:
        diffs.append(data[..., dm_idx].astype(np.float64).sum(-1))
    if not diffs:
        raise InputError("ASL: no control/label pair and no deltam volume in aslcontext")
    delta_m = sum(diffs) / (len(ctrl) + len(dm_idx))

    m0_img = _m0_image(data, types, m0, meta) * float(m0_scale)
    if kind in ("PCASL", "CASL"):
        tau = _seconds(meta, "LabelingDuration", select=sorted(ctrl + lab + dm_idx))
        if tau <= 0:
            raise InputError("ASL sidecar field 'LabelingDuration' must be > 0")
        denom_const = 2.0 * alpha * t1b * (1.0 - np.exp(-tau / t1b))
    else:
        if meta.get("BolusCutOffFlag") is False:
            raise InputError("ASL sidecar: PASL without bolus cut-off ('BolusCutOffFlag' "
                             "false) cannot be quantified with the single-TI model")
        ti1 = _seconds(meta, "BolusCutOffDelayTime", first=True)  # Q2TIPS lists [TI1, TI1s]
        if ti1 <= 0:
            raise InputError("ASL sidecar field 'BolusCutOffDelayTime' must be > 0")
        denom_const = 2.0 * alpha * ti1
    factor = 6000.0 * partition * np.exp(delay / t1b) / denom_const

    valid = np.isfinite(m0_img) & (np.abs(m0_img) >= 1e-6) & np.isfinite(delta_m)
    if mask is not None:
        mask = np.asarray(mask, bool)
        if mask.shape != data.shape[:3]:
            raise InputError(f"ASL mask shape {mask.shape} does not match {data.shape[:3]}")
        valid &= mask
    cbf = np.zeros(data.shape[:3])
    full = np.broadcast_to(factor, data.shape[:3])
    cbf[valid] = full[valid] * delta_m[valid] / m0_img[valid]
    return cbf.astype(np.float32)
