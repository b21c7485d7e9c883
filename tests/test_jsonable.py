"""The one JSON conversion (io/jsonable.py): numpy, paths and the three non-finite policies."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from isyb_dask.io.jsonable import jsonable


def test_containers_numpy_and_paths_become_json_types():
    obj = {1: (np.float32(0.5), np.int64(3)), "a": np.arange(3), "p": Path("/x/y"),
           "nested": [{"b": np.bool_(True)}]}
    out = jsonable(obj)
    assert out == {"1": [0.5, 3], "a": [0, 1, 2], "p": "/x/y", "nested": [{"b": True}]}
    assert type(out["1"][1]) is int and type(out["nested"][0]["b"]) is bool
    json.dumps(out, allow_nan=False)


def test_nonfinite_policies_and_rounding():
    values = [float("nan"), np.float64("inf"), np.array([-np.inf]), 1 / 3]
    assert jsonable(values) == [None, None, [None], 1 / 3]
    assert jsonable(values, nonfinite="text", digits=10) == ["nan", "inf", ["-inf"], 0.3333333333]
    kept = jsonable(values, nonfinite="keep")
    assert math.isnan(kept[0]) and kept[1] == math.inf and kept[2] == [-math.inf]
