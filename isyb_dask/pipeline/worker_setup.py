"""Pin the thread pools of native libraries inside Dask workers.

SimpleITK/ITK, OpenMP and the BLAS libraries each start one thread per core by default. A
Dask worker already runs ``nthreads`` tasks at once, so N workers on N cores would otherwise
run N x cores native threads and thrash (SimpleITK FAQ, CoBrALab/RABIES#251). This module
gives every worker a fixed budget:

* environment variables for the worker *process* (set by the nanny before the process
  starts, so they are honoured by libraries read at import time), see
  :func:`thread_environment`;
* a :class:`ThreadPinning` worker plugin that, when the worker starts, sets the same
  variables in ``os.environ``, limits already-loaded BLAS/OpenMP pools with ``threadpoolctl``
  and sets SimpleITK's global default thread count. The same plugin sets the glibc
  allocator thresholds of :mod:`isyb_dask.pipeline.allocator` (arrays reuse heap memory
  instead of a fresh ``mmap`` each).

Nothing here runs at import time.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

logger = logging.getLogger(__name__)

#: Environment variables that size native thread pools.
THREAD_ENV_VARS: tuple[str, ...] = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS",
)


def thread_environment(threads: int) -> dict[str, str]:
    """Environment variables that limit native thread pools to ``threads``.

    Parameters
    ----------
    threads : int
        Threads each task may use (>= 1).

    Returns
    -------
    dict of str to str
        Variable name to value, for a nanny's ``env`` or a job script prologue.

    Raises
    ------
    ValueError
        If ``threads`` < 1.
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    return {name: str(int(threads)) for name in THREAD_ENV_VARS}


def apply_thread_limits(threads: int) -> dict[str, Any]:
    """Limit native thread pools of the *current process* to ``threads``.

    Sets the variables of :func:`thread_environment`, limits BLAS/OpenMP pools that are
    already loaded (``threadpoolctl``, when installed) and SimpleITK's global default
    number of threads (when SimpleITK is installed).

    Parameters
    ----------
    threads : int
        Threads each task may use (>= 1).

    Returns
    -------
    dict
        What was applied: ``threads``, ``simpleitk`` (new global default or None),
        ``threadpools`` (number of native pools limited).
    """
    os.environ.update(thread_environment(threads))
    applied: dict[str, Any] = {"threads": threads, "simpleitk": None, "threadpools": 0}
    try:
        from threadpoolctl import threadpool_info, threadpool_limits

        # Not used as a context manager: the limit stays for the life of the process.
        threadpool_limits(limits=threads)
        applied["threadpools"] = len(threadpool_info())
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn/scipy
        logger.debug("threadpoolctl not installed; BLAS pools limited by environment only")
    try:
        import SimpleITK as sitk

        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
        applied["simpleitk"] = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    except ImportError:  # pragma: no cover - SimpleITK is a hard dependency
        logger.debug("SimpleITK not installed")
    return applied


def current_thread_limits() -> dict[str, Any]:
    """Report the thread limits in effect in the current process (for tests and logs).

    Returns
    -------
    dict
        ``simpleitk`` (global default thread count), ``env`` (the thread variables) and
        ``pid``.
    """
    import SimpleITK as sitk

    return {
        "simpleitk": sitk.ProcessObject.GetGlobalDefaultNumberOfThreads(),
        "env": {name: os.environ.get(name) for name in THREAD_ENV_VARS},
        "pid": os.getpid(),
    }


class ThreadPinning(WorkerPlugin):
    """Worker plugin that pins native thread pools when a worker starts.

    Parameters
    ----------
    threads_per_task : int or None
        Threads each task may use. ``None`` (default) gives every task one native thread:
        a worker with ``nthreads`` slots then runs at most ``nthreads`` native threads,
        i.e. exactly the cores it was given. Set it higher only for workers whose task
        concurrency is limited otherwise (e.g. by the ``MEMORY`` resource).
    """

    name = "isyb-thread-pinning"
    idempotent = True

    def __init__(self, threads_per_task: int | None = None) -> None:
        if threads_per_task is not None and threads_per_task < 1:
            raise ValueError(f"threads_per_task must be >= 1, got {threads_per_task}")
        self.threads_per_task = threads_per_task

    def threads_for(self, nthreads: int) -> int:
        """Threads per task for a worker running ``nthreads`` tasks at once.

        Parameters
        ----------
        nthreads : int
            The worker's thread count (tasks it runs concurrently).

        Returns
        -------
        int
            The per-task budget (>= 1).
        """
        if self.threads_per_task is not None:
            return self.threads_per_task
        return 1

    def setup(self, worker: Any) -> None:
        """Apply the limits in the worker process (called by distributed)."""
        threads = self.threads_for(int(worker.state.nthreads))
        applied = apply_thread_limits(threads)
        logger.info("isyb: pinned native threads to %d per task (%s)", threads, applied)
        from isyb_dask.pipeline.allocator import keep_heap_for_arrays

        logger.info("isyb: allocator thresholds %s", keep_heap_for_arrays() or "unchanged")
