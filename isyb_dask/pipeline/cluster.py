"""Start the Dask cluster of a run: a local one, or a batch-scheduler one via dask-jobqueue.

:func:`open_client` is the only entry point the runner needs::

    with open_client(ClusterSpec(kind="slurm", jobs=4), run_dir) as client:
        futures = client.map(work, items, resources=task_resources("deface", mem))

Defaults are closed: the scheduler, the workers and the dashboard listen on 127.0.0.1 unless
the dask configuration (``jobqueue.<kind>.interface`` or ``scheduler-options``) or
``ClusterSpec.jobqueue_kwargs`` says otherwise. ``tls=True`` switches every connection to
mutually authenticated TLS with certificates made for the run (see
:mod:`isyb_dask.pipeline.security`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask
from dask.utils import parse_bytes
from distributed import Client

from isyb_dask.errors import ConfigError
from isyb_dask.pipeline.jobqueue import (
    JOBQUEUE_KINDS,
    LOOPBACK,
    config_name,
    jobqueue_kwargs,
    start_jobqueue,
)
from isyb_dask.pipeline.worker_setup import ThreadPinning, thread_environment

logger = logging.getLogger(__name__)

KINDS: tuple[str, ...] = ("local", *JOBQUEUE_KINDS)

#: Peak memory per task by stage (bytes), measured on 1 mm T1w / 3 mm BOLD with headroom.
#: Override with dask config ``isyb.task-memory.<stage>`` (e.g. "3GiB").
STAGE_MEMORY: dict[str, int] = {
    "subject": parse_bytes("2.5GiB"),  # one task running every participant-level stage
    "participant": parse_bytes("2.5GiB"),  # alias of "subject"
    "deface": parse_bytes("1.5GiB"),
    "qc_anat": parse_bytes("1GiB"),
    "qc_func": parse_bytes("1.5GiB"),
    "metrics": parse_bytes("2.5GiB"),
    "group": parse_bytes("2GiB"),
    "light": 0,
}


@dataclass(frozen=True)
class ClusterSpec:
    """How to run the Dask cluster of one ``isyb run``.

    Parameters
    ----------
    kind : str
        ``local`` (default: a ``distributed.LocalCluster`` of worker processes), ``slurm``,
        ``pbs``, ``sge``, ``lsf`` (dask-jobqueue) or ``jobqueue-local`` (dask-jobqueue's
        machinery with local processes; for tests).
    workers : int or None
        Local worker processes; ``None`` = ``cores // threads_per_worker``.
    threads_per_worker : int or None
        Threads per worker process (tasks it runs at once). Jobqueue: cores per job.
        ``None`` = 1 locally, ``jobqueue.<kind>.cores`` for batch jobs.
    memory_limit : str, int or None
        Memory per worker ("4GiB", bytes, or "auto" locally). Jobqueue: memory per job.
        ``None`` = "auto" locally, ``jobqueue.<kind>.memory`` for batch jobs.
    jobs : int or None
        Batch jobs to start (``cluster.scale(jobs=N)``). Batch kinds only.
    adapt : tuple of int or None
        ``(MIN, MAX)`` for an adaptive cluster (``adapt(minimum_jobs=, maximum_jobs=)``
        for batch kinds, workers for ``local``). Exclusive with ``jobs``.
    tls : bool
        Mutual TLS between client, scheduler and workers with per-run certificates.
    local_directory : Path or None
        Workers' scratch directory (spill files, face-bearing intermediates). ``None`` =
        dask's ``temporary-directory`` / ``jobqueue.<kind>.local-directory``.
    dashboard_address : str
        Where the dashboard listens; loopback by default (reach it via an SSH tunnel).
    jobqueue_kwargs : Mapping
        Extra keyword arguments for the dask-jobqueue cluster (override the config file).
    worker_timeout : float or None
        Seconds to wait for the first worker(s); ``None`` = 120 locally, 900 for batch.
    """

    kind: str = "local"
    workers: int | None = None
    threads_per_worker: int | None = None
    memory_limit: str | int | None = None
    jobs: int | None = None
    adapt: tuple[int, int] | None = None
    tls: bool = False
    local_directory: Path | None = None
    dashboard_address: str = f"{LOOPBACK}:8787"
    jobqueue_kwargs: Mapping[str, Any] = field(default_factory=dict)
    worker_timeout: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"--cluster must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.jobs is not None and self.adapt is not None:
            raise ConfigError("use either --jobs or --adapt, not both")
        if self.kind == "local" and self.jobs is not None:
            raise ConfigError("--jobs is for batch clusters; use --workers with --cluster local")
        for name in ("workers", "threads_per_worker", "jobs"):
            value = getattr(self, name)
            if value is not None and int(value) < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        if self.adapt is not None:
            lo, hi = self.adapt
            if lo < 0 or hi < max(lo, 1):
                raise ConfigError(f"--adapt MIN:MAX needs 0 <= MIN <= MAX, MAX >= 1; got {lo}:{hi}")

    @property
    def is_jobqueue(self) -> bool:
        """Whether this spec runs through dask-jobqueue."""
        return self.kind in JOBQUEUE_KINDS


def parse_adapt(text: str) -> tuple[int, int]:
    """Parse ``--adapt MIN:MAX``.

    Parameters
    ----------
    text : str
        ``"MIN:MAX"``, e.g. ``"0:20"``.

    Returns
    -------
    tuple of int
        ``(MIN, MAX)``.

    Raises
    ------
    ConfigError
        If the text is not two non-negative integers separated by ``:``.
    """
    try:
        lo, hi = (int(part) for part in text.split(":"))
    except ValueError as exc:
        raise ConfigError(f"--adapt expects MIN:MAX (e.g. 0:20), got {text!r}") from exc
    if lo < 0 or hi < max(lo, 1):
        raise ConfigError(f"--adapt MIN:MAX needs 0 <= MIN <= MAX, MAX >= 1; got {text!r}")
    return lo, hi


# --------------------------------------------------------------------------- resources
def worker_memory_bytes(spec: ClusterSpec) -> int:
    """Memory (bytes) of one worker of ``spec``: the ``MEMORY`` resource it advertises.

    Parameters
    ----------
    spec : ClusterSpec
        The cluster specification.

    Returns
    -------
    int
        Bytes: the job memory divided by processes per job for batch kinds, the local
        worker's memory limit otherwise.
    """
    if spec.is_jobqueue:
        kw = jobqueue_kwargs(spec)
        return int(parse_bytes(kw["memory"]) // int(kw["processes"]))
    from distributed.system import MEMORY_LIMIT
    from distributed.worker_memory import parse_memory_limit

    n_workers = _local_workers(spec)
    limit = spec.memory_limit if spec.memory_limit is not None else "auto"
    threads = spec.threads_per_worker or 1
    total = parse_memory_limit(limit, threads, total_cores=n_workers * threads, logger=logger)
    return int(total if total else MEMORY_LIMIT // n_workers)


def task_resources(stage: str, worker_memory: int | None = None) -> dict[str, float]:
    """Dask ``resources=`` for a task of ``stage`` so that tasks fit their worker.

    Workers started by :func:`open_client` advertise ``MEMORY`` = their memory limit in
    bytes; a task asks for its stage's peak memory, so a worker only runs as many tasks at
    once as fit in its memory. The request is capped at ``worker_memory`` so a task can
    always be placed (a task that then exceeds the worker's limit is killed by the nanny
    and retried / reported by the runner).

    Parameters
    ----------
    stage : str
        One of :data:`STAGE_MEMORY` (``participant``, ``deface``, ``qc_anat``, ``qc_func``,
        ``metrics``, ``group``, ``light``).
    worker_memory : int or None
        Memory of the smallest worker (:func:`worker_memory_bytes`). None = the value
        :func:`open_client` publishes while its client is open (dask config
        ``isyb.worker-memory``), or no cap outside of it.

    Returns
    -------
    dict
        ``{"MEMORY": bytes}``; empty for ``light`` tasks.

    Raises
    ------
    ConfigError
        For an unknown stage.
    """
    if stage not in STAGE_MEMORY:
        raise ConfigError(f"unknown stage {stage!r}; known: {', '.join(STAGE_MEMORY)}")
    override = dask.config.get(f"isyb.task-memory.{stage}", None)
    need = int(parse_bytes(override)) if override is not None else STAGE_MEMORY[stage]
    if worker_memory is None:
        worker_memory = dask.config.get("isyb.worker-memory", None)
    if worker_memory is not None:
        need = min(need, int(worker_memory))
    return {"MEMORY": float(need)} if need > 0 else {}


# --------------------------------------------------------------------------- cluster builders
def _local_workers(spec: ClusterSpec) -> int:
    from dask.system import CPU_COUNT

    if spec.workers is not None:
        return int(spec.workers)
    threads = spec.threads_per_worker or 1
    return max(1, CPU_COUNT // threads)


def _start_local(spec: ClusterSpec, security: Any) -> Any:
    from distributed import LocalCluster

    n_workers = _local_workers(spec)
    mem = worker_memory_bytes(spec)
    kwargs: dict[str, Any] = {
        "n_workers": 0 if spec.adapt else n_workers,
        "threads_per_worker": spec.threads_per_worker or 1,
        "processes": True,
        "host": LOOPBACK,
        "dashboard_address": spec.dashboard_address,
        "memory_limit": spec.memory_limit if spec.memory_limit is not None else "auto",
        "resources": {"MEMORY": mem},
        "env": thread_environment(1),
        "death_timeout": 60,
    }
    if spec.local_directory is not None:
        kwargs["local_directory"] = str(spec.local_directory)
    if security is not None:
        kwargs["security"] = security
        kwargs["protocol"] = "tls://"
    cluster = LocalCluster(**kwargs)
    if spec.adapt:
        cluster.adapt(minimum=spec.adapt[0], maximum=spec.adapt[1])
    return cluster


def _expected_workers(spec: ClusterSpec) -> int:
    """Workers to wait for before handing the client out."""
    if spec.adapt is not None:
        return spec.adapt[0] if not spec.is_jobqueue else min(spec.adapt[0], 1)
    if spec.is_jobqueue:
        return 1  # start as soon as one job runs; the others join while tasks execute
    return _local_workers(spec)


@contextlib.contextmanager
def open_client(spec: ClusterSpec, run_dir: Path) -> Iterator[Client]:
    """Start the cluster described by ``spec``, yield a connected client, then close all.

    Parameters
    ----------
    spec : ClusterSpec
        Cluster kind and size.
    run_dir : Path
        The run's directory (TLS certificates go to ``run_dir/tls``; job logs of batch
        kinds to ``run_dir/logs/dask-jobs`` unless configured).

    Yields
    ------
    distributed.Client
        Connected, with the thread-pinning plugin registered and at least the expected
        workers present (all local workers; one batch job; ``MIN`` for ``--adapt``).

    Raises
    ------
    ConfigError
        If the workers do not come up within ``spec.worker_timeout``.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    security = None
    if spec.tls:
        from isyb_dask.pipeline.security import run_security

        security = run_security(run_dir)
    if spec.is_jobqueue and "log_directory" not in spec.jobqueue_kwargs:
        name = config_name(spec)
        if dask.config.get(f"jobqueue.{name}.log-directory", None) is None:
            log_dir = run_dir / "logs" / "dask-jobs"
            log_dir.mkdir(parents=True, exist_ok=True)
            spec = _with_jobqueue_kwargs(spec, log_directory=str(log_dir))

    with contextlib.ExitStack() as stack:
        cluster = start_jobqueue(spec, security) if spec.is_jobqueue else _start_local(
            spec, security
        )
        stack.callback(_close_quietly, cluster)
        client = Client(cluster, security=security) if security else Client(cluster)
        stack.callback(_close_quietly, client)
        client.register_plugin(ThreadPinning())
        n_expected = _expected_workers(spec)
        timeout = spec.worker_timeout
        if timeout is None:
            timeout = 900.0 if spec.is_jobqueue else 120.0
        if n_expected > 0:
            try:
                client.wait_for_workers(n_workers=n_expected, timeout=timeout)
            except TimeoutError as exc:
                raise ConfigError(
                    f"no Dask worker joined within {timeout:.0f} s ({spec.kind}); check the "
                    f"batch queue and the job logs under {run_dir / 'logs' / 'dask-jobs'}"
                ) from exc
        print(f"Dask dashboard: {client.dashboard_link}", flush=True)
        # task_resources() caps requests at this while the client is open
        mem = worker_memory_bytes(spec)
        with dask.config.set({"isyb.worker-memory": mem}):
            yield client


def _with_jobqueue_kwargs(spec: ClusterSpec, **extra: Any) -> ClusterSpec:
    from dataclasses import replace

    return replace(spec, jobqueue_kwargs={**extra, **dict(spec.jobqueue_kwargs)})


def _close_quietly(obj: Any) -> None:
    try:
        obj.close()
    except Exception as exc:  # noqa: BLE001 - closing must not mask the run's own error
        logger.debug("closing %r failed: %s", obj, exc)


def describe(spec: ClusterSpec) -> str:
    """One-line human description of ``spec`` for logs.

    Parameters
    ----------
    spec : ClusterSpec
        The cluster specification.

    Returns
    -------
    str
        E.g. ``"slurm: 2 jobs, 1 thread each, TLS"``.
    """
    if spec.is_jobqueue:
        size = f"adapt {spec.adapt[0]}:{spec.adapt[1]} jobs" if spec.adapt else f"{spec.jobs or 1} jobs"
    else:
        size = f"{_local_workers(spec)} workers"
    threads = spec.threads_per_worker or 1
    return f"{spec.kind}: {size}, {threads} thread{'s' * (threads > 1)} each" + (
        ", TLS" if spec.tls else ""
    )


__all__ = [
    "KINDS",
    "STAGE_MEMORY",
    "ClusterSpec",
    "describe",
    "import_jobqueue",
    "jobqueue_kwargs",
    "open_client",
    "parse_adapt",
    "task_resources",
    "worker_memory_bytes",
]
