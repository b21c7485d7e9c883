"""Tests of isyb_dask.pipeline.allocator: arrays come from the heap in Dask-like workers."""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import subprocess
import sys

import pytest

from isyb_dask.pipeline.allocator import MMAP_THRESHOLD_BYTES, TRIM_THRESHOLD_BYTES

_GLIBC = sys.platform.startswith("linux") and hasattr(
    ctypes.CDLL(ctypes.util.find_library("c")), "mallinfo2"
)

# In a child started like a Dask worker (the nanny's MALLOC_TRIM_THRESHOLD_), count the
# mmapped chunks (mallinfo2().hblks) while a 1 MiB array is alive, before and after tuning.
_CHILD = r"""
import ctypes, ctypes.util, json, sys
import numpy as np

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.mallinfo2.restype = MallInfo2

def mapped_while_alive():
    before = libc.mallinfo2().hblks
    a = np.ones(1 << 17)  # 1 MiB of float64
    during = libc.mallinfo2().hblks
    del a
    return during - before

out = {"plain": mapped_while_alive()}
if sys.argv[1] == "tune":
    from isyb_dask.pipeline.allocator import keep_heap_for_arrays
    out["applied"] = keep_heap_for_arrays()
    mapped_while_alive()  # first use may still grow the heap
out["after"] = mapped_while_alive()
print(json.dumps(out))
"""


def _child(mode: str) -> dict:
    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": "65536"}
    run = subprocess.run([sys.executable, "-c", _CHILD, mode], env=env, capture_output=True,
                         text=True, check=True)
    return json.loads(run.stdout)


@pytest.mark.skipif(not _GLIBC, reason="glibc with mallinfo2 only")
def test_dask_trim_setting_maps_every_array_and_tuning_restores_the_heap():
    untuned = _child("keep")
    # the nanny's setting freezes the mmap threshold at 128 KiB: a 1 MiB array is mapped
    assert untuned["plain"] == 1 and untuned["after"] == 1
    tuned = _child("tune")
    assert tuned["plain"] == 1
    assert tuned["applied"] == {"mmap_threshold": MMAP_THRESHOLD_BYTES,
                                "trim_threshold": TRIM_THRESHOLD_BYTES}
    assert tuned["after"] == 0  # from the heap: no fresh mapping to fault in
