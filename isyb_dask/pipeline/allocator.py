"""glibc allocator settings for Dask worker processes.

Dask's nanny starts every worker with ``MALLOC_TRIM_THRESHOLD_=65536`` (distributed's
``nanny.pre-spawn-environ``) so that freed memory goes back to the operating system at once.
Setting the trim threshold also freezes glibc's mmap threshold at its 128 KiB start value:
every array above 128 KiB is then a fresh ``mmap`` whose pages are faulted in and zeroed on
first touch, and unmapped on release. The subject task allocates thousands of such
temporaries (one resampled BOLD volume per Gauss-Newton iteration, the candidate voxel lists
of the face masking, ...). The BOLD reference of the 240-volume 1 mm subject, in a plain
process: 17.5 s CPU, 23.6 s with the nanny's setting, 18.4 s with the thresholds set here;
in the participant run's worker it went from 23.8 to 16.0 s wall (``BENCHMARKS.md``).

:func:`keep_heap_for_arrays` restores reuse for these arrays: allocations up to 32 MiB (the
largest mmap threshold glibc accepts on 64-bit) come from the heap, and the heap is trimmed
once 64 MiB at its top are free. Whole images (> 32 MiB) are still mapped and returned on
release, so a worker's memory between subjects stays bounded. Nothing changes on systems
without glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

logger = logging.getLogger(__name__)

#: ``mallopt`` parameter numbers of glibc's ``malloc.h``.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

#: Allocations up to this size come from the heap (glibc's maximum on 64-bit).
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
#: The heap is trimmed when this much memory is free at its top.
TRIM_THRESHOLD_BYTES = 64 * 1024 * 1024

_applied: dict[str, int] = {}


def keep_heap_for_arrays() -> dict[str, int]:
    """Set glibc's mmap and trim thresholds of the current process (see module docstring).

    Returns
    -------
    dict
        The values set (``mmap_threshold``, ``trim_threshold`` in bytes); empty when the C
        library has no ``mallopt`` (not glibc) or refused a value.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        logger.debug("no mallopt in the C library (%s); allocator unchanged", name)
        return {}
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
    ok &= mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
    if not ok:
        logger.debug("mallopt refused the thresholds; allocator unchanged")
        return {}
    _applied.update(mmap_threshold=MMAP_THRESHOLD_BYTES, trim_threshold=TRIM_THRESHOLD_BYTES)
    return dict(_applied)


def allocator_settings() -> dict[str, int]:
    """What :func:`keep_heap_for_arrays` set in this process (empty if never applied)."""
    return dict(_applied)
