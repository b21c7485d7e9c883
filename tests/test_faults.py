"""Fault tolerance of ``isyb run`` (through the command line, as users run it).

* a worker process killed mid-run: the run completes, every subject completed exactly once;
* the client and its cluster SIGKILLed mid-run: re-running the same command computes only the
  missing subjects and ends with a store equal to an uninterrupted run's;
* a corpus of >= 15 kinds of bad input: each such subject ends ``failed`` with a message
  naming the problem, the good subjects finish, the exit code is non-zero;
* inputs are byte-identical after every run.

The study is generated (``isyb_dask.synth.cohort.generate_study``) at 3 mm with T1w only and
the runs use the ``qc_anat`` stage only, to keep each run around a minute on 2 cores.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import xarray as xr

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
N_GOOD = 3
STAGES_YAML = "stages: [qc_anat, qc_func]\n"


# ----------------------------------------------------------------------------- helpers
def _checksums(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file()
    }


def _cmd(bids: Path, out: Path, cfg: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "isyb_dask.cli.main", "run", str(bids), str(out),
            "participant", "--config", str(cfg), "--workers", "2", *extra]


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES"] = "3"
    return env


def _run(bids: Path, out: Path, cfg: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(_cmd(bids, out, cfg), cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=timeout, check=False)


def _participants(out: Path) -> dict[str, tuple[str, str]]:
    ds = xr.open_zarr(out / "results.zarr", group="participants", consolidated=False).load()
    return {str(s): (str(st), str(err)) for s, st, err in
            zip(ds["subject"].values, ds["status"].values, ds["error"].values)}


def _store(out: Path) -> dict[str, xr.Dataset]:
    import zarr

    root = zarr.open_group(out / "results.zarr", mode="r")
    groups = {}
    for name, _ in root.groups():
        ds = xr.open_zarr(out / "results.zarr", group=name, consolidated=False).load()
        ds.attrs = {}
        groups[name] = ds
    return groups


def _assert_same_store(a: Path, b: Path) -> None:
    sa, sb = _store(a), _store(b)
    assert sorted(sa) == sorted(sb)
    for name in sa:
        xr.testing.assert_identical(sa[name], sb[name])


def _completions(out: Path, subject: str) -> int:
    """How many times the subject's task ran to the end (lines written by the task)."""
    log = out / "logs" / f"{subject}.log"
    if not log.exists():
        return 0
    return sum(f"subject {subject}: " in line for line in log.read_text().splitlines())


def _starts(out: Path, subject: str) -> int:
    """How many times a stage of the subject started (lines written by the task)."""
    log = out / "logs" / f"{subject}.log"
    if not log.exists():
        return 0
    return sum(" start " in line for line in log.read_text().splitlines())


def _wait_for(pred, timeout: float, proc: subprocess.Popen | None = None) -> None:
    t0 = time.monotonic()
    while not pred():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"run ended early with code {proc.returncode}")
        if time.monotonic() - t0 > timeout:
            raise AssertionError("condition not reached in time")
        time.sleep(0.5)


def _worker_processes(pid: int) -> list:
    import psutil

    procs = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            cmd = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "spawn_main" in cmd and "resource_tracker" not in cmd:
            procs.append(child)
    return procs


# ----------------------------------------------------------------------------- bad-input corpus
#: Bad inputs the pipeline does not detect (none at present); the corpus test would report
#: them as xfail after checking every other case.
KNOWN_GAPS: dict[str, str] = {}
def _t1w(bids: Path, subject: str) -> Path:
    return bids / subject / "anat" / f"{subject}_T1w.nii.gz"


def _new_subject(bids: Path, subject: str, source: Path) -> Path:
    """Create ``subject`` with a copy of ``source``'s T1w sidecar; return its T1w path."""
    anat = bids / subject / "anat"
    anat.mkdir(parents=True, exist_ok=True)
    sidecar = source.with_name(source.name.replace(".nii.gz", ".json"))
    if sidecar.exists():
        shutil.copy(sidecar, anat / f"{subject}_T1w.json")
    return anat / f"{subject}_T1w.nii.gz"


def make_bad_corpus(bids: Path, good: str) -> dict[str, tuple[str, ...]]:
    """Add one subject per kind of bad input to ``bids``, derived from subject ``good``.

    Returns
    -------
    dict
        Subject label -> words of which at least one must appear in its error message.
    """
    src = _t1w(bids, good)
    img = nib.load(src)
    data = np.asarray(img.dataobj, dtype=np.float32)
    aff = img.affine
    raw = src.read_bytes()
    rng = np.random.default_rng(5)
    cases: dict[str, tuple[str, ...]] = {}

    def add(n: int, expect: tuple[str, ...]) -> tuple[str, Path]:
        subject = f"sub-{9000 + n:04d}"
        cases[subject] = expect
        return subject, _new_subject(bids, subject, src)

    def save(path: Path, arr: np.ndarray, affine: np.ndarray = aff, zooms=None) -> None:
        out = nib.Nifti1Image(arr, affine)
        if zooms is not None:
            out.header.set_zooms(zooms)
        nib.save(out, path)

    _, p = add(1, ("not a readable nifti", "corrupt"))  # random bytes
    p.write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    _, p = add(2, ("truncated", "corrupt", "not a readable"))  # gzip cut in the middle
    p.write_bytes(raw[: len(raw) // 2])
    _, p = add(3, ("not a readable nifti",))  # a text file with an image name
    p.write_bytes(gzip.compress(b"participant_id\tage\nsub-01\t22\n"))
    _, p = add(4, ("empty file",))
    p.write_bytes(b"")
    _, p = add(5, ("wrong dimensionality",))  # 4-D with several volumes
    save(p, np.stack([data, data], axis=-1))
    _, p = add(6, ("wrong dimensionality", "degenerate"))  # a single 2-D slice
    save(p, data[:, :, data.shape[2] // 2])
    _, p = add(7, ("constant image",))
    save(p, np.full_like(data, 100.0))
    _, p = add(8, ("constant image", "no finite"))  # all zeros
    save(p, np.zeros_like(data))
    _, p = add(9, ("no finite values",))
    save(p, np.full_like(data, np.nan))
    _, p = add(10, ("no finite values", "constant"))  # +inf everywhere but one NaN
    arr = np.full_like(data, np.inf)
    arr[0, 0, 0] = np.nan
    save(p, arr)
    _, p = add(11, ("implausible geometry",))  # singular affine (a zero column)
    bad = aff.copy()
    bad[:3, 2] = 0
    singular = nib.Nifti1Image(data, None)  # qform cannot hold a singular matrix: sform only
    singular.header.set_sform(bad, code=1)
    singular.header.set_qform(None, code=0)
    nib.save(singular, p)
    _, p = add(12, ("implausible voxel size",))  # 50 mm voxels
    save(p, data, np.diag([50.0, 50.0, 50.0, 1.0]), zooms=(50.0, 50.0, 50.0))
    _, p = add(13, ("degenerate spatial shape", "wrong dimensionality"))  # 1 x N x M slab
    save(p, data[:1])
    _, p = add(14, ("head mask", "head"))  # no head in the field of view: faint air only
    air = np.abs(rng.normal(0, 1.0, size=data.shape)).astype(np.float32)
    air[10:12, 10:12, 10:12] = 50.0  # a speck, not a head
    save(p, air)
    # a subject folder without its T1w (only a BOLD run)
    subject, p = add(15, ("no t1w",))
    p.with_name(f"{subject}_T1w.json").unlink(missing_ok=True)
    shutil.rmtree(p.parent)
    func = bids / subject / "func"
    func.mkdir(parents=True)
    save(func / f"{subject}_task-rest_bold.nii.gz",
         rng.normal(100, 5, size=(8, 8, 8, 12)).astype(np.float32))
    (func / f"{subject}_task-rest_bold.json").write_text(json.dumps({"RepetitionTime": 2.0}))
    # BOLD whose sidecar lacks RepetitionTime (good T1w)
    subject, p = add(16, ("repetitiontime",))
    shutil.copy(src, p)
    func = bids / subject / "func"
    func.mkdir(parents=True)
    save(func / f"{subject}_task-rest_bold.nii.gz",
         rng.normal(100, 5, size=(8, 8, 8, 12)).astype(np.float32))
    (func / f"{subject}_task-rest_bold.json").write_text(json.dumps({"TaskName": "rest"}))
    # a 3-D "BOLD" (good T1w)
    subject, p = add(17, ("wrong dimensionality", "volumes"))
    shutil.copy(src, p)
    func = bids / subject / "func"
    func.mkdir(parents=True)
    save(func / f"{subject}_task-rest_bold.nii.gz", data)
    (func / f"{subject}_task-rest_bold.json").write_text(json.dumps({"RepetitionTime": 2.0}))
    # an uncompressed NIfTI whose data block is cut short
    _, p = add(18, ("truncated", "corrupt"))
    tmp = p.with_name("tmp_T1w.nii")
    save(tmp, data)
    blob = tmp.read_bytes()
    tmp.unlink()
    p.write_bytes(gzip.compress(blob[: 352 + (len(blob) - 352) // 3]))
    # participants.tsv lists them too (BIDS); values are irrelevant
    tsv = bids / "participants.tsv"
    lines = tsv.read_text().rstrip("\n").split("\n")
    ncol = len(lines[0].split("\t"))
    for subject in cases:
        lines.append("\t".join([subject] + ["n/a"] * (ncol - 1)))
    tsv.write_text("\n".join(lines) + "\n")
    return cases


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def study(tmp_path_factory) -> dict[str, Path]:
    """A good 3-subject study, its config, and an uninterrupted reference run."""
    from isyb_dask.synth.cohort import generate_study

    root = tmp_path_factory.mktemp("faults")
    bids = generate_study(root / "bids", N_GOOD, "chinese", 11, voxel_size=3.0,
                          modalities=("anat",))
    cfg = root / "config.yaml"
    cfg.write_text(STAGES_YAML)
    before = _checksums(bids)
    ref = _run(bids, root / "reference", cfg)
    assert ref.returncode == 0, ref.stdout[-3000:] + ref.stderr[-3000:]
    assert _checksums(bids) == before
    return {"root": root, "bids": bids, "cfg": cfg, "reference": root / "reference"}


# ----------------------------------------------------------------------------- tests
def test_bad_inputs_fail_alone_with_named_problems(study, tmp_path):
    bids = tmp_path / "bids"
    shutil.copytree(study["bids"], bids)
    cases = make_bad_corpus(bids, "sub-0001")
    assert len(cases) >= 15
    before = _checksums(bids)
    res = _run(bids, tmp_path / "out", study["cfg"])
    log = res.stdout[-4000:] + res.stderr[-4000:]
    assert res.returncode != 0, log
    assert _checksums(bids) == before, "inputs changed"
    table = _participants(tmp_path / "out")
    for subject in [f"sub-{i:04d}" for i in range(1, N_GOOD + 1)]:
        assert table[subject] == ("ok", ""), (subject, table[subject])
    gaps = []
    for subject, words in cases.items():
        status, error = table[subject]
        if subject in KNOWN_GAPS and status == "ok":
            gaps.append(f"{subject}: {KNOWN_GAPS[subject]}")
            continue
        assert status == "failed", (subject, table[subject])
        assert "Traceback" not in error
        assert any(w in error.lower() for w in words), (subject, error, words)
    assert len(cases) - len(gaps) >= 15
    # the good subjects are unaffected by their bad neighbours
    ref = _participants(study["reference"])
    assert {s: table[s] for s in ref} == ref
    if gaps:  # everything else checked above; report what the pipeline does not catch yet
        pytest.xfail("not detected yet: " + "; ".join(gaps))


def test_killed_worker_run_completes_each_subject_once(study, tmp_path):
    out = tmp_path / "out"
    before = _checksums(study["bids"])
    proc = subprocess.Popen(_cmd(study["bids"], out, study["cfg"]), cwd=REPO, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # a subject task has started on a worker: kill that worker's process
        _wait_for(lambda: any(out.glob("logs/sub-*.log")) and _worker_processes(proc.pid),
                  300, proc)
        time.sleep(1.0)
        victims = _worker_processes(proc.pid)
        victims[0].send_signal(signal.SIGKILL)
        stdout, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stdout[-3000:]
    for subject in [f"sub-{i:04d}" for i in range(1, N_GOOD + 1)]:
        assert _completions(out, subject) == 1, subject
    _assert_same_store(out, study["reference"])
    assert _checksums(study["bids"]) == before


def test_sigkilled_run_resumes_missing_subjects_only(study, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen(_cmd(study["bids"], out, study["cfg"]), cwd=REPO, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    done = lambda: [s for s in (f"sub-{i:04d}" for i in range(1, N_GOOD + 1))
                    if (out / s / f"{s}_desc-isyb_results.json").exists()]
    try:
        _wait_for(lambda: len(done()) >= 1, 400, proc)
        os.killpg(proc.pid, signal.SIGKILL)  # client, scheduler and workers at once
        proc.wait(timeout=30)
        first = done()
        starts = {s: _starts(out, s) for s in first}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert 1 <= len(first) < N_GOOD, "kill came too late to test resuming"
    res = _run(study["bids"], out, study["cfg"])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "already complete" in res.stdout
    # subjects complete before the kill are not recomputed; the others ran to the end once
    for subject in first:
        assert _starts(out, subject) == starts[subject], f"{subject} was recomputed"
    for subject in set(done()) - set(first):
        assert _completions(out, subject) >= 1
    _assert_same_store(out, study["reference"])


def test_subject_that_keeps_killing_its_worker_ends_failed(study, tmp_path):
    """A subject too big for the worker's memory: the nanny kills the worker on every attempt;
    after the bounded retries it ends ``failed`` with the error, and the run does not block."""
    from scipy import ndimage as ndi

    bids = tmp_path / "bids"
    shutil.copytree(study["bids"], bids)
    src = nib.load(_t1w(bids, "sub-0001"))
    big = ndi.zoom(np.asarray(src.dataobj, dtype=np.float32), 3, order=1)  # 1 mm, 27x voxels
    aff = src.affine.copy()
    aff[:3, :3] /= 3
    path = _new_subject(bids, "sub-0999", _t1w(bids, "sub-0001"))
    nib.save(nib.Nifti1Image(big, aff), path)
    tsv = bids / "participants.tsv"
    lines = tsv.read_text().rstrip("\n").split("\n")
    lines.append("\t".join(["sub-0999"] + ["n/a"] * (len(lines[0].split("\t")) - 1)))
    tsv.write_text("\n".join(lines) + "\n")
    before = _checksums(bids)
    t0 = time.monotonic()
    res = subprocess.run(_cmd(bids, tmp_path / "out", study["cfg"], "--memory-limit", "700MB"),
                         cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600,
                         check=False)
    assert res.returncode != 0
    assert time.monotonic() - t0 < 600
    table = _participants(tmp_path / "out")
    status, error = table["sub-0999"]
    assert status == "failed"
    assert "KilledWorker" in error and "died" in error, error
    ref = _participants(study["reference"])
    assert {s: table[s] for s in ref} == ref  # the others finished normally
    assert _checksums(bids) == before
