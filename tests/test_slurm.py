"""The SLURM code path on a real (single-node) SLURM: ``cluster/local-slurm/start.sh``.

Skipped where ``sbatch`` is absent or ``sinfo`` fails, so ``make test`` passes on a laptop;
``.ci/run`` starts the local SLURM first. Two one-core jobs; results must equal those of a
LocalCluster, with and without TLS.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from isyb_dask.pipeline.cluster import ClusterSpec, open_client, task_resources
from isyb_dask.testing import read_store_groups

pytestmark = pytest.mark.slurm


def _slurm_usable() -> str | None:
    if shutil.which("sbatch") is None:
        return "sbatch not on PATH"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                             timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"sinfo failed: {exc}"
    if out.returncode != 0:
        return f"sinfo failed: {out.stderr.strip()}"
    if not any(s.strip("*~#") in {"idle", "mixed", "allocated", "completing"}
               for s in out.stdout.split()):
        return f"no usable SLURM node (states: {out.stdout.split()})"
    return None


@pytest.fixture(scope="module")
def slurm(tmp_path_factory) -> Path:
    """Skip unless SLURM answers; yields a directory the jobs can write to."""
    reason = _slurm_usable()
    if reason:
        pytest.skip(reason)
    return tmp_path_factory.mktemp("slurm")


def _slurm_spec(tls: bool) -> ClusterSpec:
    return ClusterSpec(kind="slurm", jobs=2, threads_per_worker=1, memory_limit="2GiB", tls=tls,
                       dashboard_address="127.0.0.1:0", worker_timeout=180,
                       jobqueue_kwargs={"walltime": "00:20:00"})


# ----------------------------------------------------------------------------- tiny graph
def _make_subject_task():
    """The per-subject task, built as a closure so that it is pickled by value: SLURM jobs
    are fresh interpreters without tests/ on sys.path (a by-reference pickle of a function
    of this module would make the worker fail to deserialize it and exit)."""

    def subject_task(store: str, index: int, seed: int) -> dict:
        """Synthetic per-subject work: smooth a random volume with SimpleITK, write a region."""
        import os

        import numpy as np
        import SimpleITK as sitk
        import zarr

        rng = np.random.default_rng(seed + index)
        vol = rng.normal(100.0, 10.0, size=(24, 24, 24)).astype(np.float32)
        img = sitk.SmoothingRecursiveGaussian(sitk.GetImageFromArray(vol), 1.5)
        out = sitk.GetArrayFromImage(img).astype(np.float32)
        arr = zarr.open_array(store, mode="r+")
        arr[index] = out.mean(axis=(1, 2))  # one chunk per subject: never shared
        return {"index": index, "sum": float(out.sum()),
                "sitk_threads": sitk.ProcessObject.GetGlobalDefaultNumberOfThreads(),
                "pid": os.getpid(), "job": os.environ.get("SLURM_JOB_ID")}

    return subject_task


def _run_tiny(spec: ClusterSpec, run_dir: Path, n: int = 6) -> tuple[np.ndarray, list[dict]]:
    import zarr

    store = run_dir / "tiny.zarr"
    zarr.create_array(store, shape=(n, 24), chunks=(1, 24), dtype="float32", fill_value=np.nan,
                      overwrite=True)
    with open_client(spec, run_dir) as client:
        futures = client.map(_make_subject_task(), [str(store)] * n, range(n), [7] * n,
                             resources=task_resources("light") or None, retries=2, pure=False)
        infos = client.gather(futures)
    return zarr.open_array(store, mode="r")[:], infos


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_tiny_graph_on_slurm_equals_local(slurm, tmp_path, tls):
    local, _ = _run_tiny(ClusterSpec(workers=2, memory_limit="1GiB",
                                     dashboard_address="127.0.0.1:0"), tmp_path / "local")
    remote, infos = _run_tiny(_slurm_spec(tls), slurm / f"tiny-{tls}")
    np.testing.assert_array_equal(remote, local)
    assert np.isfinite(remote).all()
    jobs = {i["job"] for i in infos}
    assert None not in jobs and len(jobs) >= 1  # ran inside SLURM jobs
    assert {i["sitk_threads"] for i in infos} == {1}
    if tls:
        assert (slurm / f"tiny-{tls}" / "tls" / "worker-key.pem").stat().st_mode & 0o077 == 0
    logs = list((slurm / f"tiny-{tls}" / "logs" / "dask-jobs").glob("*.err"))
    assert logs, "job logs go under the run directory"


# ----------------------------------------------------------------------------- the pipeline
@pytest.mark.slow
def test_pipeline_on_slurm_with_tls_equals_local(slurm, tmp_path):
    runner = pytest.importorskip("isyb_dask.pipeline.runner")
    from isyb_dask.config import RunConfig
    from isyb_dask.synth.cohort import generate_study

    bids = generate_study(tmp_path / "bids", 2, "chinese", 3, voxel_size=4.0,
                          modalities=("anat",))
    cfg = RunConfig(stages=("qc_anat",))
    local = runner.run_pipeline(bids, tmp_path / "local", cfg, levels=("participant",),
                                cluster=ClusterSpec(workers=2, dashboard_address="127.0.0.1:0"))
    remote = runner.run_pipeline(bids, slurm / "pipeline-tls", cfg, levels=("participant",),
                                 cluster=_slurm_spec(tls=True))
    assert local.exit_code == 0 and remote.exit_code == 0, (local.failed, remote.failed)
    assert remote.processed == 2
    a, b = read_store_groups(tmp_path / "local"), read_store_groups(slurm / "pipeline-tls")
    assert a.keys() == b.keys() and "participants" in a
    for name in a:
        xr.testing.assert_identical(a[name], b[name])
    assert [str(v) for v in b["participants"]["status"].values] == ["ok", "ok"]
