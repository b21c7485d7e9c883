"""Subject outcome: ``ok``, ``partial`` or ``failed``, with the failing stages and reasons.

A subject is

* ``failed`` when its T1w cannot be used (missing, unreadable, no head, ...), when every
  stage that ran raised, or when its task died (``KilledWorker``);
* ``partial`` when the T1w was usable and at least one thing failed: a stage, a template of
  the deface stage, a modality whose input is unusable (``inputs:bold``...), or a surface
  metric whose input was present but could not be computed;
* ``ok`` otherwise.

``failed_stages`` lists what failed (``deface:<template>``, ``qc_func``, ``inputs:dwi``,
``metrics:ALFF,fALFF``...), ``error`` joins their messages. Both go to the store's
``participants`` group. ``ok`` and ``partial`` subjects are analysed by the group step
(:data:`ANALYSED`); their failed parts are missing (NaN) in the store, each with a reason.

Surface values that come from a fallback method carry a provenance starting with
:data:`FALLBACK_PREFIX` (e.g. GMV from the warped atlas GM prior); the group step leaves
them out by default (:func:`is_fallback`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from isyb_dask.errors import IsybError

__all__ = [
    "ANALYSED",
    "DATA_ERRORS",
    "FALLBACK_PREFIX",
    "Outcome",
    "is_absent",
    "is_fallback",
    "subject_outcome",
]

OK, PARTIAL, FAILED = "ok", "partial", "failed"
#: Statuses whose subjects enter the group step (failed parts are missing with a reason).
ANALYSED = (OK, PARTIAL)
#: Exceptions a stage may raise on bad data; they are recorded. Anything else (TypeError,
#: AttributeError, NameError, KeyError, IndexError... programming errors) propagates.
DATA_ERRORS: tuple[type[BaseException], ...] = (
    IsybError,
    ValueError,
    np.linalg.LinAlgError,
    ArithmeticError,
    RuntimeError,
    MemoryError,
    OSError,
)
#: Provenance prefix of values computed by a fallback method.
FALLBACK_PREFIX = "fallback:"


@dataclass(frozen=True)
class Outcome:
    """Status of one subject, what failed and why."""

    status: str
    failed_stages: tuple[str, ...]
    error: str


#: Steps of the subject task that build the shared references rather than run a stage.
REFERENCE_STEPS = ("anatomy", "bold_reference")


def is_fallback(provenance: str) -> bool:
    """True for a provenance string that marks a fallback value."""
    return str(provenance).startswith(FALLBACK_PREFIX)


def is_absent(reason: str) -> bool:
    """True for a ``missing`` reason that only says the input was not acquired/given."""
    text = str(reason)
    return text == "" or (text.startswith("no ") and not text.startswith("no vertex"))


def _metric_failures(result: Mapping[str, Any], skip: set[str]) -> dict[str, list[str]]:
    """Failed surface metrics (reason -> metrics), leaving out modalities already reported."""
    modality_metrics = {
        "bold": ("ALFF", "fALFF", "ReHo", "VMHC"),
        "dwi": ("FA_WM", "MD_WM", "FA_GM", "MD_GM"),
        "asl": ("CBF",),
    }
    explained = {m for mod in skip for m in modality_metrics.get(mod, ())}
    out: dict[str, list[str]] = {}
    for metric, reason in (result.get("surface_missing") or {}).items():
        if metric in explained or is_absent(reason):
            continue
        out.setdefault(str(reason), []).append(str(metric))
    return out


def subject_outcome(result: Mapping[str, Any]) -> Outcome:
    """Classify a subject's result (the dict the per-subject task builds).

    Parameters
    ----------
    result
        ``errors`` (stage -> message; ``inputs`` = T1w, ``inputs:<modality>``),
        ``deface`` (template -> row with ``error``), ``surface_missing`` (metric -> reason),
        ``timings`` (stages that ran).

    Returns
    -------
    Outcome
    """
    errors: dict[str, str] = dict(result.get("errors") or {})
    stages: list[str] = []
    messages: list[str] = []
    for key, msg in errors.items():
        stages.append(key)
        messages.append(str(msg))
    for name, row in (result.get("deface") or {}).items():
        err = (row or {}).get("error")
        if err:
            stages.append(f"deface:{name}")
            messages.append(f"deface {name}: {err}")
    bad_modalities = {k.split(":", 1)[1] for k in errors if k.startswith("inputs:")}
    for reason, metrics in _metric_failures(result, bad_modalities).items():
        stages.append("metrics:" + ",".join(metrics))
        messages.append(f"metrics {', '.join(metrics)}: {reason}")
    # the subject references (anatomy, BOLD reference) are steps shared by the stages, not
    # stages: a subject whose every stage failed is failed even if its references were built
    ran = [s for s in (result.get("timings") or {}) if s not in REFERENCE_STEPS]
    all_failed = bool(ran) and all(s in errors for s in ran)
    if "inputs" in errors or all_failed or (not ran and errors):
        status = FAILED
    elif stages:
        status = PARTIAL
    else:
        status = OK
    return Outcome(status, tuple(stages), "; ".join(messages))
