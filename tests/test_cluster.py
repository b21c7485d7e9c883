"""Tests of isyb_dask.pipeline.cluster and worker_setup: closed local cluster, pinned threads,
memory resources, the dask-jobqueue code path and its SIGINT/thread incompatibilities."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path
from urllib.parse import urlparse

import dask
import pytest
import yaml

from isyb_dask.errors import ConfigError
from isyb_dask.pipeline.cluster import (
    STAGE_MEMORY,
    ClusterSpec,
    open_client,
    parse_adapt,
    task_resources,
    worker_memory_bytes,
)
from isyb_dask.pipeline.jobqueue import import_jobqueue, jobqueue_kwargs
from isyb_dask.pipeline.worker_setup import THREAD_ENV_VARS, current_thread_limits

REPO = Path(__file__).resolve().parents[1]
GiB = 2**30


def _sigint_default() -> None:
    # a suite started as a background job of a non-interactive shell inherits SIGINT
    # ignored, and Python then installs no KeyboardInterrupt handler in its children
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _run_python(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False,
        preexec_fn=_sigint_default,
    )


# ----------------------------------------------------------------------------- spec validation
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"kind": "kubernetes"}, "--cluster must be one of"),
        ({"kind": "slurm", "jobs": 2, "adapt": (0, 4)}, "either --jobs or --adapt"),
        ({"kind": "local", "jobs": 2}, "--jobs is for batch clusters"),
        ({"workers": 0}, "workers must be >= 1"),
        ({"kind": "slurm", "adapt": (3, 2)}, "MIN <= MAX"),
    ],
)
def test_spec_rejects_bad_values(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        ClusterSpec(**kwargs)


def test_parse_adapt():
    assert parse_adapt("0:20") == (0, 20)
    assert parse_adapt("2:2") == (2, 2)
    for bad in ("4", "a:b", "5:1", "0:0"):
        with pytest.raises(ConfigError, match="--adapt"):
            parse_adapt(bad)


# ----------------------------------------------------------------------------- resources
def test_task_resources_cap_and_override():
    assert task_resources("subject") == {"MEMORY": float(STAGE_MEMORY["subject"])}
    # capped at the worker's memory so the task can always be placed
    assert task_resources("metrics", worker_memory=GiB) == {"MEMORY": float(GiB)}
    assert task_resources("qc_anat", worker_memory=8 * GiB) == {"MEMORY": float(GiB)}
    assert task_resources("light") == {}
    with dask.config.set({"isyb.task-memory.deface": "3GiB"}):
        assert task_resources("deface") == {"MEMORY": float(3 * GiB)}
    with pytest.raises(ConfigError, match="unknown stage"):
        task_resources("bogus")


def test_worker_memory_of_batch_jobs_is_split_between_processes():
    spec = ClusterSpec(kind="slurm", jobs=1, memory_limit="8GiB",
                       jobqueue_kwargs={"processes": 2, "cores": 2})
    assert worker_memory_bytes(spec) == 4 * GiB
    # "auto" (the CLI default) means: take it from jobqueue.yaml
    with dask.config.set({"jobqueue.slurm.memory": "6GiB"}):
        assert worker_memory_bytes(ClusterSpec(kind="slurm", jobs=1, memory_limit="auto")) == 6 * GiB


# ----------------------------------------------------------------------------- local cluster
def _listening_ips(pids: list[int]) -> set[str]:
    import psutil

    ips = set()
    for pid in pids:
        for conn in psutil.Process(pid).net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN:
                ips.add(conn.laddr.ip)
    return ips


def _probe() -> dict:
    from threadpoolctl import threadpool_info

    info = current_thread_limits()
    info["pools"] = sorted({p["num_threads"] for p in threadpool_info()})
    from isyb_dask.pipeline.allocator import allocator_settings

    info["allocator"] = allocator_settings()
    return info


def test_local_cluster_is_loopback_only_and_pins_threads(tmp_path, capsys):
    spec = ClusterSpec(workers=2, threads_per_worker=1, memory_limit="1GiB",
                       dashboard_address="127.0.0.1:0")
    with open_client(spec, tmp_path) as client:
        sched = urlparse(client.scheduler.address)
        assert sched.scheme == "tcp" and sched.hostname == "127.0.0.1"
        assert urlparse(client.dashboard_link).hostname == "127.0.0.1"
        workers = client.run(lambda dask_worker: dask_worker.address)
        assert len(workers) == 2
        assert {urlparse(a).hostname for a in workers} == {"127.0.0.1"}
        # every socket the worker processes and this (scheduler) process listen on
        import os

        pids = list(client.run(lambda: os.getpid()).values()) + [os.getpid()]
        ips = _listening_ips(pids)
        assert ips and ips <= {"127.0.0.1", "::1"}, ips
        # native thread pools inside a task: 1 thread each (2 workers x 1 thread = 2 cores)
        probes = client.gather([client.submit(_probe, pure=False, workers=[w]) for w in workers])
        for probe in probes:
            assert probe["simpleitk"] == 1
            assert {probe["env"][v] for v in THREAD_ENV_VARS} == {"1"}
            assert probe["pools"] in ([], [1])
            if sys.platform.startswith("linux"):  # glibc heap for arrays (allocator.py)
                assert probe["allocator"].get("mmap_threshold") == 32 * 1024 * 1024
        # the MEMORY resource is the worker's memory limit
        res = client.run(lambda dask_worker: dask_worker.state.total_resources)
        assert {r["MEMORY"] for r in res.values()} == {GiB}
        # and task_resources() is capped at it while the client is open
        assert task_resources("metrics") == {"MEMORY": float(GiB)}
    assert "Dask dashboard: http://127.0.0.1:" in capsys.readouterr().out
    assert dask.config.get("isyb.worker-memory", None) is None  # unset on exit


def _hold(seconds: float) -> tuple[float, float]:
    t0 = time.time()
    time.sleep(seconds)
    return t0, time.time()


def test_memory_resource_limits_concurrency(tmp_path):
    """Two 0.6 GiB tasks never run together on a 1 GiB worker, although it has 2 threads."""
    spec = ClusterSpec(workers=1, threads_per_worker=2, memory_limit="1GiB",
                       dashboard_address="127.0.0.1:0")
    with open_client(spec, tmp_path) as client:
        need = {"MEMORY": 0.6 * GiB}
        spans = client.gather([client.submit(_hold, 0.5, resources=need, pure=False)
                               for _ in range(2)])
        free = client.gather([client.submit(_hold, 0.5, pure=False) for _ in range(2)])
    (_, a1), (b0, _) = sorted(spans)
    assert b0 >= a1 - 0.01  # serialised by the resource
    (_, c1), (d0, _) = sorted(free)
    assert d0 < c1  # without the resource, both threads are used


def test_jobqueue_code_path_with_local_jobs(tmp_path):
    """dask-jobqueue machinery (job scripts, scale(jobs=)), with jobs run as local processes."""
    spec = ClusterSpec(kind="jobqueue-local", jobs=1, threads_per_worker=1, memory_limit="1GiB",
                       dashboard_address="127.0.0.1:0")
    with open_client(spec, tmp_path) as client:
        assert urlparse(client.scheduler.address).hostname == "127.0.0.1"
        info = client.run(lambda dask_worker: (dask_worker.address,
                                               dask_worker.state.total_resources))
        ((addr, res),) = info.values()
        assert urlparse(addr).hostname == "127.0.0.1"
        assert res == {"MEMORY": GiB}
        # (jobs are fresh interpreters without tests/ on sys.path: use a package function)
        probe = client.submit(current_thread_limits, pure=False).result(timeout=60)
        assert probe["simpleitk"] == 1 and probe["env"]["OMP_NUM_THREADS"] == "1"
    assert (tmp_path / "logs" / "dask-jobs").is_dir()


# ----------------------------------------------------------------------------- jobqueue.yaml
@pytest.mark.parametrize("kind", ["slurm", "pbs", "sge", "lsf"])
def test_example_jobqueue_yaml_makes_valid_job_scripts(kind):
    jq = import_jobqueue()
    job_cls = {"slurm": jq.slurm.SLURMJob, "pbs": jq.pbs.PBSJob, "sge": jq.sge.SGEJob,
               "lsf": jq.lsf.LSFJob}[kind]
    conf = yaml.safe_load((REPO / "cluster" / f"jobqueue-{kind}.yaml").read_text())
    flat = {f"jobqueue.{kind}.{key}": value for key, value in conf["jobqueue"][kind].items()}
    with dask.config.set(flat):
        kw = jobqueue_kwargs(ClusterSpec(kind=kind, jobs=2))
        sched_opts = kw.pop("scheduler_options")
        script = job_cls(scheduler="tcp://127.0.0.1:8786", name="isyb-test", **kw).job_script()
    assert sched_opts["host"] == "127.0.0.1"
    assert sched_opts["dashboard_address"].startswith("127.0.0.1:")
    assert "--lifetime 110m" in script and "--lifetime-stagger 5m" in script
    assert "--host 127.0.0.1" in script
    assert f"--resources MEMORY={10 * GiB}" in script  # 10 GiB job, one process
    assert "--nthreads 4" in script
    assert "export OMP_NUM_THREADS=1" in script
    assert "export ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=1" in script
    assert "--local-directory $TMPDIR" in script


def test_interface_from_config_replaces_loopback():
    with dask.config.set({"jobqueue.slurm.interface": "ib0"}):
        kw = jobqueue_kwargs(ClusterSpec(kind="slurm", jobs=1, memory_limit="2GiB"))
    assert kw["interface"] == "ib0"
    assert "host" not in kw["scheduler_options"]
    assert "--host" not in kw["worker_extra_args"]


# ----------------------------------------------------------------------------- SIGINT / threads
def test_jobqueue_import_keeps_ctrl_c():
    """dask_jobqueue.runner replaces SIGINT with sys.exit; import_jobqueue must not."""
    out = _run_python(
        """
        import os, signal, sys
        import isyb_dask.pipeline.jobqueue as c
        assert "dask_jobqueue" not in sys.modules, "imported eagerly"
        before = signal.getsignal(signal.SIGINT)
        jq = c.import_jobqueue()
        assert hasattr(jq, "SLURMCluster")
        assert signal.getsignal(signal.SIGINT) is before
        try:
            os.kill(os.getpid(), signal.SIGINT)
            import time; time.sleep(1)
            print("no interrupt")
        except KeyboardInterrupt:
            print("KeyboardInterrupt")
        except SystemExit:
            print("SystemExit")
        """
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "KeyboardInterrupt"


def test_plain_jobqueue_import_really_breaks_ctrl_c():
    """Guards the test above: the incompatibility it works around is real in this stack."""
    out = _run_python(
        """
        import os, signal
        import dask_jobqueue
        try:
            os.kill(os.getpid(), signal.SIGINT)
            import time; time.sleep(1)
        except KeyboardInterrupt:
            print("KeyboardInterrupt")
        except SystemExit:
            print("SystemExit")
        """
    )
    assert out.stdout.strip() == "SystemExit"


def test_jobqueue_import_from_worker_thread():
    out = _run_python(
        """
        import signal, threading
        import isyb_dask.pipeline.jobqueue as c
        box = {}
        def go():
            try:
                box["mod"] = c.import_jobqueue().__name__
            except Exception as exc:
                box["err"] = repr(exc)
        t = threading.Thread(target=go); t.start(); t.join()
        print(box.get("mod"), box.get("err"))
        print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)
        """
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["dask_jobqueue", "None", "True"]


@pytest.mark.slow
def test_jobs_are_kept_when_one_ends(tmp_path):
    """--jobs N keeps N jobs: a job that dies (walltime, node failure) is resubmitted."""
    import os
    import signal

    spec = ClusterSpec(kind="jobqueue-local", jobs=1, threads_per_worker=1, memory_limit="1GiB",
                       dashboard_address="127.0.0.1:0")
    with open_client(spec, tmp_path) as client:
        (first,) = client.run(lambda dask_worker: dask_worker.address).values()
        job_pids = [int(job.job_id) for job in client.cluster.workers.values()]
        assert len(job_pids) == 1
        os.kill(job_pids[0], signal.SIGKILL)
        deadline = time.monotonic() + 120
        replaced = None
        while time.monotonic() < deadline:
            # the killed worker may still be listed for a moment: ignore its broken comm
            addrs = set(client.run(lambda dask_worker: dask_worker.address,
                                   on_error="ignore").values())
            if addrs and first not in addrs:
                replaced = addrs
                break
            time.sleep(1)
        assert replaced, "the dead job was not replaced"
        assert client.submit(current_thread_limits, pure=False).result(timeout=60)["simpleitk"] == 1
