"""A subject's artefact into its regions of the results store (one writer, one pass).

The subject task writes its result JSON and its surface values (``.npy``) next to its
derivatives; :func:`store_result` copies them into the subject's regions of every store group
(``participants``, ``deface``, ``qc_anat``, ``qc_func``, ``surface``) in one
:func:`isyb_dask.io.store.write_subject_groups` call. The runner also uses it to refill a
rebuilt store from the artefacts of subjects that are already complete.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from isyb_dask.io import store as results_store
from isyb_dask.outcome import subject_outcome

__all__ = ["store_result", "surface_values_path"]


def surface_values_path(out_dir: Path, subject: str) -> Path:
    """Path of a subject's surface values (metric x vertex, float32 ``.npy``)."""
    return Path(out_dir) / subject / f"{subject}_desc-surface_values.npy"


def store_result(store_path: Path, out_dir: Path, subject: str, result: dict[str, Any], *,
                 templates: Sequence[str], surface_metrics: Sequence[str]) -> None:
    """Write one subject's artefact into its regions of the store, every group in one pass."""
    outcome = subject_outcome(result)
    repairs = result.get("repairs") or {}
    groups: dict[str, dict[str, Any]] = {
        "participants": {"status": outcome.status, "error": outcome.error,
                         "failed_stages": ";".join(outcome.failed_stages),
                         "repairs": "; ".join(repairs.values())},
    }
    deface = result.get("deface") or {}
    if deface:
        values: dict[str, Any] = {}
        for var in results_store.DEFACE_VARIABLES:
            row = []
            for name in templates:
                val = (deface.get(name) or {}).get(var)
                row.append(np.nan if val is None else float(val))
            values[var] = row
        values["error"] = [str((deface.get(name) or {}).get("error") or "") for name in templates]
        groups["deface"] = values
    for group in ("qc_anat", "qc_func"):
        vals = result.get(group) or {}
        clean: dict[str, Any] = {k: (np.nan if v is None else float(v)) for k, v in vals.items()
                                 if isinstance(v, (int, float, type(None), np.generic))}
        if group == "qc_anat" and result.get("qc_anat_route"):
            clean["harmonization_route"] = result["qc_anat_route"]
        if clean:
            groups[group] = clean
    if "stores" in result:
        missing = result.get("surface_missing", {})
        prov = result.get("surface_provenance", {})
        groups["surface"] = {"value": np.load(surface_values_path(out_dir, subject)),
                             "missing": [missing.get(m, "") for m in surface_metrics],
                             "provenance": [prov.get(m, "") for m in surface_metrics]}
    results_store.write_subject_groups(store_path, subject, groups)
