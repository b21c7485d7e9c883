"""Batch-scheduler clusters through dask-jobqueue: safe import, keyword arguments, start.

:func:`isyb_dask.pipeline.cluster.open_client` calls :func:`start_jobqueue` for the batch
kinds (``slurm``, ``pbs``, ``sge``, ``lsf``, ``jobqueue-local``); the cluster is closed by
default (scheduler and workers on loopback) unless the dask configuration or
``ClusterSpec.jobqueue_kwargs`` says otherwise.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from types import ModuleType
from typing import TYPE_CHECKING, Any

import dask
from dask.utils import parse_bytes

from isyb_dask.pipeline.worker_setup import thread_environment

if TYPE_CHECKING:
    from isyb_dask.pipeline.cluster import ClusterSpec

__all__ = [
    "JOBQUEUE_KINDS",
    "LOOPBACK",
    "config_name",
    "import_jobqueue",
    "jobqueue_kwargs",
    "start_jobqueue",
]

logger = logging.getLogger(__name__)

#: Batch schedulers handled through dask-jobqueue (``jobqueue-local`` runs the jobqueue
#: machinery with local processes instead of batch jobs; for tests and laptops).
JOBQUEUE_KINDS: dict[str, str] = {
    "slurm": "SLURMCluster",
    "pbs": "PBSCluster",
    "sge": "SGECluster",
    "lsf": "LSFCluster",
    "jobqueue-local": "local.LocalCluster",
}
LOOPBACK = "127.0.0.1"
_IMPORT_LOCK = threading.Lock()


def import_jobqueue() -> ModuleType:
    """Import ``dask_jobqueue`` without letting it take over SIGINT.

    ``dask_jobqueue.runner`` calls ``signal.signal(SIGINT, lambda *_: sys.exit())`` at import,
    which turns Ctrl-C into ``SystemExit`` in the whole process, and raises ``ValueError``
    when imported outside the main thread (``signal.signal`` only works there). During the
    import, SIGINT registrations are therefore ignored; other signals pass through.

    Returns
    -------
    module
        The ``dask_jobqueue`` package.
    """
    in_main = threading.current_thread() is threading.main_thread()
    if "dask_jobqueue.runner" in sys.modules:
        # Imported before, by someone else: undo its handler if it is still installed.
        handler = signal.getsignal(signal.SIGINT)
        if in_main and getattr(handler, "__module__", "") == "dask_jobqueue.runner":
            signal.signal(signal.SIGINT, signal.default_int_handler)
        import dask_jobqueue
        import dask_jobqueue.local

        return dask_jobqueue
    with _IMPORT_LOCK:
        real_signal = signal.signal
        previous = signal.getsignal(signal.SIGINT)

        def _guarded(signum: int, handler: Any) -> Any:
            if signum == signal.SIGINT or not in_main:
                return signal.getsignal(signum)
            return real_signal(signum, handler)

        signal.signal = _guarded  # type: ignore[assignment]
        try:
            import dask_jobqueue
            import dask_jobqueue.local
        finally:
            signal.signal = real_signal  # type: ignore[assignment]
        if in_main and signal.getsignal(signal.SIGINT) is not previous:  # pragma: no cover
            signal.signal(signal.SIGINT, previous)
    return dask_jobqueue


def _explicit(memory: str | int | None) -> str | int | None:
    """``memory_limit`` unless it is "auto" (meaningless for batch jobs: use the config)."""
    return None if memory in (None, "auto") else memory


def config_name(spec: ClusterSpec) -> str:
    """The ``jobqueue.<name>`` section of ``spec`` in the dask configuration."""
    return "local" if spec.kind == "jobqueue-local" else spec.kind


def jobqueue_kwargs(spec: ClusterSpec, security: Any = None) -> dict[str, Any]:
    """Keyword arguments for the dask-jobqueue cluster of ``spec``.

    Configuration precedence: ``spec.jobqueue_kwargs`` > the explicit spec fields > dask
    config (``jobqueue.yaml``) > the closed defaults of this module (loopback host, one
    process per job, 1 core, 2 GiB when nothing is configured).

    Parameters
    ----------
    spec : ClusterSpec
        A batch-kind spec.
    security : distributed.Security or None
        TLS settings, if any.

    Returns
    -------
    dict
        For ``SLURMCluster(**kwargs)`` and friends.
    """
    name = config_name(spec)
    cfg = dask.config.get(f"jobqueue.{name}", {}) or {}
    extra = dict(spec.jobqueue_kwargs)
    kw: dict[str, Any] = {}
    cores = extra.pop("cores", spec.threads_per_worker or cfg.get("cores") or 1)
    memory = extra.pop("memory", _explicit(spec.memory_limit) or cfg.get("memory"))
    if memory is None:
        memory = "2GiB"
        logger.warning("no memory set for %s jobs (jobqueue.%s.memory); using 2GiB", name, name)
    processes = int(extra.pop("processes", cfg.get("processes") or 1))
    kw.update(cores=int(cores), memory=memory, processes=processes)
    worker_mem = int(parse_bytes(memory) // processes)

    interface = extra.pop("interface", cfg.get("interface"))
    sched_opts = dict(cfg.get("scheduler-options") or {})
    sched_opts.update(extra.pop("scheduler_options", {}) or {})
    worker_args = list(extra.pop("worker_extra_args", cfg.get("worker-extra-args") or []))
    if interface:
        kw["interface"] = interface
    else:
        # Closed by default: scheduler and workers on loopback (single node / tests).
        sched_opts.setdefault("host", LOOPBACK)
        if "--host" not in worker_args:
            worker_args += ["--host", LOOPBACK]
    sched_opts.setdefault("dashboard_address", spec.dashboard_address)
    if "--resources" not in worker_args:
        worker_args += ["--resources", f"MEMORY={worker_mem}"]
    kw["scheduler_options"] = sched_opts
    kw["worker_extra_args"] = worker_args

    prologue = list(extra.pop("job_script_prologue", cfg.get("job-script-prologue") or []))
    if spec.kind != "jobqueue-local":
        # Before the worker starts, so libraries that read these at import obey them.
        # (jobqueue-local runs the command without a shell: no prologue possible there;
        # the ThreadPinning plugin still applies the limits when the worker starts.)
        prologue += [f"export {k}={v}" for k, v in thread_environment(1).items()]
    kw["job_script_prologue"] = prologue
    if spec.local_directory is not None:
        kw["local_directory"] = str(spec.local_directory)
    if security is not None:
        kw["security"] = security
        kw["protocol"] = "tls://"
    kw.update(extra)
    return kw


def start_jobqueue(spec: ClusterSpec, security: Any) -> Any:
    """Start the dask-jobqueue cluster of ``spec`` and keep its job count (or adapt)."""
    jq = import_jobqueue()
    cls_path = JOBQUEUE_KINDS[spec.kind]
    cls: Any = jq
    for part in cls_path.split("."):
        cls = getattr(cls, part)
    cluster = cls(**jobqueue_kwargs(spec, security))
    logger.info("job script:\n%s", cluster.job_script())
    if spec.adapt:
        cluster.adapt(minimum_jobs=spec.adapt[0], maximum_jobs=spec.adapt[1])
    else:
        jobs = spec.jobs or 1
        cluster.scale(jobs=jobs)
        # Keep N jobs, not just start them: a job that ends (walltime, --lifetime, node
        # failure, killed) is replaced by the adaptive loop; a plain scale() never resubmits.
        cluster.adapt(minimum_jobs=jobs, maximum_jobs=jobs)
    return cluster
