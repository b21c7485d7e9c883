"""Plain-JSON form of results: one conversion for artefacts, sidecars and generated data.

Every JSON file the package writes goes through :func:`jsonable`: numpy scalars and arrays,
paths and tuples become JSON types; what happens to non-finite floats is the caller's
choice, because the readers differ (the result artefact wants ``null`` for "no value",
generated BIDS sidecars must be strict JSON and keep ``"inf"``/``"nan"`` readable).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import numpy as np

__all__ = ["jsonable"]

NonFinite = Literal["null", "text", "keep"]


def jsonable(obj: Any, *, nonfinite: NonFinite = "null", digits: int | None = None) -> Any:
    """``obj`` with every container, numpy value and path turned into JSON types.

    Parameters
    ----------
    obj
        Nested dicts (keys become strings), lists, tuples, numpy arrays and scalars, paths,
        and JSON scalars.
    nonfinite
        Non-finite floats: ``"null"`` -> ``None``; ``"text"`` -> ``"nan"``/``"inf"``/``"-inf"``;
        ``"keep"`` -> left as floats (``json.dumps`` then writes ``NaN``/``Infinity``).
    digits
        Round finite floats to this many decimals (``None``: keep them exact).

    Returns
    -------
    Any
        A structure ``json.dumps`` accepts.
    """
    if isinstance(obj, dict):
        return {str(k): jsonable(v, nonfinite=nonfinite, digits=digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v, nonfinite=nonfinite, digits=digits) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist(), nonfinite=nonfinite, digits=digits)
    if isinstance(obj, np.generic):
        return jsonable(obj.item(), nonfinite=nonfinite, digits=digits)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float):
        if not math.isfinite(obj):
            return {"null": None, "text": str(obj), "keep": obj}[nonfinite]
        return round(obj, digits) if digits is not None else obj
    return obj
