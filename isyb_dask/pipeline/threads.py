"""Keep each task inside its share of the machine's cores."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import SimpleITK as sitk

__all__ = ["limit_threads"]


@contextlib.contextmanager
def limit_threads(n: int) -> Iterator[None]:
    """Limit SimpleITK and BLAS/OpenMP thread pools to ``n`` threads inside the block.

    ITK uses every core by default and BLAS libraries start their own pools: with N
    single-threaded Dask workers on N cores that oversubscribes the machine (SimpleITK FAQ;
    CoBrALab/RABIES#251). A fixed thread count also makes registration deterministic.
    """
    from threadpoolctl import threadpool_limits

    previous = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(n))
    try:
        with threadpool_limits(limits=int(n)):
            yield
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(previous)
