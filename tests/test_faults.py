"""Fault tolerance of ``isyb run`` (through the command line, as users run it).

* a worker process killed mid-run: the run completes, every subject completed exactly once;
* the client and its cluster SIGKILLed mid-run: re-running the same command computes only the
  missing subjects and ends with a store equal to an uninterrupted run's;
* a corpus of 28 kinds of bad input: each such subject ends ``failed`` (T1w broken) or
  ``partial`` (T1w fine, another modality broken) with a message naming the file and the
  problem, odd-but-valid T1w (single-volume 4-D, three repaired NaN/Inf voxels) are
  accepted, the good subjects finish, the exit code is 1; no Inf or complex value anywhere
  in the store or the derivatives;
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

from isyb_dask.testing import read_store_groups

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
N_GOOD = 3
STAGES_YAML = "stages: [qc_anat, qc_func]\n"
#: The corpus run: the metrics stage reads the T1w, BOLD, DWI and ASL (every validation
#: applies); qc_anat would only repeat the T1w work, so it is left out to keep the run short.
CORPUS_YAML = "stages: [qc_func, metrics]\nmetrics:\n  write_mni: false\n"


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


def _assert_same_store(a: Path, b: Path) -> None:
    sa, sb = read_store_groups(a), read_store_groups(b)
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


def _copy_one_good_subject(src: Path, dst: Path, keep: str = "sub-0001") -> None:
    """Copy the study with only its good subject ``keep``: a run over the copy then computes
    one good subject, not ``N_GOOD`` (each costs a full subject run; one is enough to show the
    good neighbours of bad subjects finish unaffected)."""
    others = {f"sub-{i:04d}" for i in range(1, N_GOOD + 1)} - {keep}
    shutil.copytree(src, dst, ignore=lambda _d, names: [n for n in names if n in others])
    tsv = dst / "participants.tsv"
    lines = tsv.read_text().rstrip("\n").split("\n")
    tsv.write_text("\n".join(ln for ln in lines if ln.split("\t")[0] not in others) + "\n")


def _new_subject(bids: Path, subject: str, source: Path) -> Path:
    """Create ``subject`` with a copy of ``source``'s T1w sidecar; return its T1w path."""
    anat = bids / subject / "anat"
    anat.mkdir(parents=True, exist_ok=True)
    sidecar = source.with_name(source.name.replace(".nii.gz", ".json"))
    if sidecar.exists():
        shutil.copy(sidecar, anat / f"{subject}_T1w.json")
    return anat / f"{subject}_T1w.nii.gz"


def _patch_header(path: Path, data: np.ndarray, aff: np.ndarray, *, pixdim=None,
                  sform_code=None, qform_code=None) -> None:
    """Write ``data`` and overwrite header fields in the bytes (nibabel would fix them)."""
    img = nib.Nifti1Image(data, aff)
    img.header.set_sform(aff, code=1)
    img.header.set_data_offset(352)
    raw = bytearray(img.header.binaryblock) + bytearray(4)
    raw += np.asarray(data, dtype=img.get_data_dtype()).tobytes(order="F")
    if pixdim is not None:
        raw[80:92] = np.asarray(pixdim, dtype=img.header.endianness + "f4").tobytes()
    if qform_code is not None:
        raw[252:254] = np.asarray(qform_code, dtype=img.header.endianness + "i2").tobytes()
    if sform_code is not None:
        raw[254:256] = np.asarray(sform_code, dtype=img.header.endianness + "i2").tobytes()
    path.write_bytes(gzip.compress(bytes(raw)))


def make_good_variants(bids: Path, good: str) -> dict[str, str]:
    """Inputs that must be accepted: subject -> what to check."""
    src = _t1w(bids, good)
    img = nib.load(src)
    data = np.asarray(img.dataobj, dtype=np.float32)
    out = {}
    p = _new_subject(bids, "sub-9101", src)  # a 4-D T1w with a single volume
    nib.save(nib.Nifti1Image(data[..., None], img.affine), p)
    out["sub-9101"] = "single-volume 4-D T1w"
    p = _new_subject(bids, "sub-9102", src)  # 3 NaN voxels: repaired and recorded
    arr = data.copy()
    arr[10, 10, 10] = arr[20, 20, 20] = np.nan
    arr[15, 15, 15] = np.inf
    nib.save(nib.Nifti1Image(arr, img.affine), p)
    out["sub-9102"] = "repaired"
    tsv = bids / "participants.tsv"
    lines = tsv.read_text().rstrip("\n").split("\n")
    ncol = len(lines[0].split("\t"))
    lines += ["\t".join([s] + ["n/a"] * (ncol - 1)) for s in out]
    tsv.write_text("\n".join(lines) + "\n")
    return out


def scan_for_inf_and_complex(out: Path) -> list[str]:
    """Every Inf or complex value in the store and the derivatives of a run (none allowed)."""
    import zarr

    problems = []

    def check(where: str, arr) -> None:
        arr = np.asarray(arr)
        if arr.dtype.kind == "c":
            problems.append(f"{where}: complex dtype {arr.dtype}")
        elif arr.dtype.kind == "f" and np.isinf(arr).any():
            problems.append(f"{where}: {int(np.isinf(arr).sum())} Inf values")

    root = zarr.open_group(str(out / "results.zarr"), mode="r")

    def walk(group, prefix=""):
        for name, arr in group.arrays():
            check(f"results.zarr/{prefix}{name}", arr[...])
        for name, sub in group.groups():
            walk(sub, f"{prefix}{name}/")

    walk(root)
    for path in sorted(out.rglob("*")):
        if not path.is_file() or "results.zarr" in path.parts:
            continue
        rel = str(path.relative_to(out))
        if path.name.endswith((".nii", ".nii.gz")):
            img = nib.load(path)
            if img.get_data_dtype().kind == "c":
                problems.append(f"{rel}: complex dtype")
            else:
                check(rel, img.get_fdata(dtype=np.float32))
        elif path.name.endswith(".gii"):
            for i, da in enumerate(nib.load(path).darrays):
                check(f"{rel}[{i}]", da.data)
        elif path.suffix == ".npy":
            check(rel, np.load(path))
        elif path.suffix == ".json":
            def bad_constant(token):
                if "Infinity" in token:
                    problems.append(f"{rel}: {token} in JSON")
                return float("nan")

            json.loads(path.read_text(), parse_constant=bad_constant)
        elif path.suffix == ".tsv":
            text = path.read_text().lower()
            if "inf" in text.replace("info", ""):
                import pandas as pd

                frame = pd.read_csv(path, sep="\t")
                num = frame.select_dtypes("number")
                if np.isinf(num.to_numpy(dtype=float)).any():
                    problems.append(f"{rel}: Inf in the table")
    return problems


def make_bad_corpus(bids: Path, good: str) -> dict[str, tuple[str, ...]]:
    """Add one subject per kind of bad input to ``bids``, derived from subject ``good``.

    Returns
    -------
    dict
        Subject label -> (expected status, words of which at least one must appear in its
        error message). ``partial``: the T1w is fine, another modality is broken.
    """
    src = _t1w(bids, good)
    img = nib.load(src)
    data = np.asarray(img.dataobj, dtype=np.float32)
    aff = img.affine
    raw = src.read_bytes()
    rng = np.random.default_rng(5)
    cases: dict[str, tuple[str, tuple[str, ...]]] = {}

    def add(n: int, expect: tuple[str, ...], status: str = "failed") -> tuple[str, Path]:
        subject = f"sub-{9000 + n:04d}"
        cases[subject] = (status, expect)
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
    subject, p = add(16, ("repetitiontime",), status="partial")
    shutil.copy(src, p)
    func = bids / subject / "func"
    func.mkdir(parents=True)
    save(func / f"{subject}_task-rest_bold.nii.gz",
         rng.normal(100, 5, size=(8, 8, 8, 12)).astype(np.float32))
    (func / f"{subject}_task-rest_bold.json").write_text(json.dumps({"TaskName": "rest"}))
    # a 3-D "BOLD" (good T1w)
    subject, p = add(17, ("wrong dimensionality", "volumes"), status="partial")
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
    # --- issue 14: faults that used to pass silently or be misnamed
    _, p = add(19, ("non-finite voxels",))  # Inf in the brightest 1 % of the head
    arr = data.copy()
    arr[arr > np.percentile(arr, 99)] = np.inf
    save(p, arr)
    _, p = add(20, ("complex-valued",))
    save(p, data.astype(np.complex64))
    _, p = add(21, ("rgb colour data",))
    rgb = np.zeros(data.shape, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgb["R"] = np.clip(data / max(float(data.max()), 1.0) * 255, 0, 255).astype(np.uint8)
    nib.save(nib.Nifti1Image(rgb, aff), p)
    _, p = add(22, ("invalid voxel size",))  # pixdim 0 and no qform/sform
    _patch_header(p, data, aff, pixdim=(0.0, 0.0, 0.0), sform_code=0, qform_code=0)
    _, p = add(23, ("invalid voxel size pixdim = (nan",))
    _patch_header(p, data, aff, pixdim=(np.nan, np.nan, np.nan))
    _, p = add(24, ("sform and qform disagree",))  # qform 10 mm away from the sform: fails
    mis = nib.Nifti1Image(data, aff)
    shifted = aff.copy()
    shifted[:3, 3] += 10.0
    mis.header.set_sform(aff, code=1)
    mis.header.set_qform(shifted, code=1)
    nib.save(mis, p)
    _, p = add(25, ("non-finite voxels (30",))  # 30 % NaN: not "no head in the field of view"
    arr = data.copy()
    arr.reshape(-1)[: int(0.3 * arr.size)] = np.nan
    save(p, arr)
    # other modalities broken, T1w fine: partial subjects
    subject, p = add(26, ("too short",), status="partial")  # BOLD shorter than the nuisance model
    shutil.copy(src, p)
    func = bids / subject / "func"
    func.mkdir(parents=True)
    save(func / f"{subject}_task-rest_bold.nii.gz",
         rng.normal(100, 5, size=(8, 8, 8, 9)).astype(np.float32))
    (func / f"{subject}_task-rest_bold.json").write_text(json.dumps({"RepetitionTime": 2.0}))
    subject, p = add(27, ("b-vectors",), status="partial")  # bvec count != volumes
    shutil.copy(src, p)
    dwi = bids / subject / "dwi"
    dwi.mkdir(parents=True)
    save(dwi / f"{subject}_dwi.nii.gz", rng.normal(100, 5, size=(8, 8, 8, 7)).astype(np.float32))
    (dwi / f"{subject}_dwi.bval").write_text("0 1000 1000 1000 1000 1000 1000\n")
    (dwi / f"{subject}_dwi.bvec").write_text("\n".join(" ".join(["0.577"] * 6) for _ in range(3)) + "\n")
    subject, p = add(28, ("aslcontext",), status="partial")  # ASL without aslcontext.tsv
    shutil.copy(src, p)
    perf = bids / subject / "perf"
    perf.mkdir(parents=True)
    save(perf / f"{subject}_asl.nii.gz", rng.normal(100, 5, size=(8, 8, 8, 4)).astype(np.float32))
    (perf / f"{subject}_asl.json").write_text(json.dumps(
        {"ArterialSpinLabelingType": "PCASL", "PostLabelingDelay": 1.8, "LabelingDuration": 1.8,
         "M0Type": "Absent", "MagneticFieldStrength": 3}))
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
    """The corpus (28 kinds of bad input, 2 odd-but-valid T1w) through qc_func and metrics
    (every input validation applies): T1w faults fail the subject, faults of another modality make it partial, each
    message names the file and the fault; good subjects finish; no input byte changes; no
    Inf or complex value anywhere in the store or the derivatives."""
    bids = tmp_path / "bids"
    _copy_one_good_subject(study["bids"], bids)
    cases = make_bad_corpus(bids, "sub-0001")
    accepted = make_good_variants(bids, "sub-0001")
    assert len(cases) >= 27
    cfg = tmp_path / "config.yaml"
    cfg.write_text(CORPUS_YAML)
    before = _checksums(bids)
    res = _run(bids, tmp_path / "out", cfg)
    log = res.stdout[-4000:] + res.stderr[-4000:]
    assert res.returncode == 1, log  # some subjects failed
    assert _checksums(bids) == before, "inputs changed"
    table = _participants(tmp_path / "out")
    assert table["sub-0001"] == ("ok", ""), table["sub-0001"]
    gaps = []
    for subject, (expected, words) in cases.items():
        status, error = table[subject]
        if subject in KNOWN_GAPS and status == "ok":
            gaps.append(f"{subject}: {KNOWN_GAPS[subject]}")
            continue
        assert status == expected, (subject, table[subject])
        assert "Traceback" not in error
        assert any(w in error.lower() for w in words), (subject, error, words)
        if expected == "failed" and subject != "sub-9015":  # 9015 has no T1w file
            assert f"{subject}/anat/{subject}_T1w.nii.gz: " in error, (subject, error)
        assert "no head in the field of view" not in error or subject == "sub-9014", error
    assert len(cases) - len(gaps) >= 27
    # odd but valid inputs are accepted; a repair is recorded in the store and the sidecars
    for subject in accepted:
        assert table[subject] == ("ok", ""), (subject, table[subject])
    part = xr.open_zarr(tmp_path / "out" / "results.zarr", group="participants",
                        consolidated=False).load()
    repairs = dict(zip(part["subject"].values, part["repairs"].values))
    assert str(repairs["sub-9102"]).startswith("sub-9102/anat/sub-9102_T1w.nii.gz: 3 non-finite")
    assert str(repairs["sub-0001"]) == ""
    sidecar = json.loads((tmp_path / "out" / "sub-9102" / "anat" /
                          "sub-9102_label-GM_probseg.json").read_text())
    assert sidecar["provenance"]["sources"][0]["repair"]["voxels"] == 3
    surf_prov = xr.open_zarr(tmp_path / "out" / "results.zarr", group="surface",
                             consolidated=False)["provenance"].load()
    gmv_prov = str(surf_prov.sel(subject="sub-9102", metric="GMV").item())
    # the subject anatomy's segmentation, not a fallback: the value is in the group maps
    assert "segmentation" in gmv_prov and not gmv_prov.startswith("fallback"), gmv_prov
    assert "repaired input: sub-9102/anat/sub-9102_T1w.nii.gz: 3 non-finite voxels" in gmv_prov
    # partial subjects: failed stage in the store, the T1w results kept
    failed_stages = dict(zip(part["subject"].values, part["failed_stages"].values))
    assert str(failed_stages["sub-9027"]) == "inputs:dwi"
    surf = xr.open_zarr(tmp_path / "out" / "results.zarr", group="surface",
                        consolidated=False).load()
    miss = surf["missing"].sel(subject="sub-9027")
    assert str(miss.sel(metric="FA_WM").item()).startswith("DWI unusable: sub-9027/dwi/")
    assert np.isfinite(surf["value"].sel(subject="sub-9027", metric="GMV").values).any()
    # the command line lists them
    q = subprocess.run([sys.executable, "-m", "isyb_dask.cli.main", "query", str(tmp_path / "out"),
                        "--failures", "--format", "csv"], cwd=REPO, env=_env(),
                       capture_output=True, text=True, check=True)
    listed = {line.split(",")[0] for line in q.stdout.splitlines()[1:]}
    assert set(cases) <= listed and "sub-9102" in listed and "sub-0001" not in listed
    # the good subject is unaffected by its bad neighbours
    ref = _participants(study["reference"])
    assert table["sub-0001"] == ref["sub-0001"]
    assert scan_for_inf_and_complex(tmp_path / "out") == []
    if gaps:  # everything else checked above; report what the pipeline does not catch yet
        pytest.xfail("not detected yet: " + "; ".join(gaps))


def test_no_inf_or_complex_in_a_full_run(demo_run):
    """Every stage and both levels (the session's demo run): no Inf, no complex value."""
    assert scan_for_inf_and_complex(demo_run["out"]) == []


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
    _copy_one_good_subject(study["bids"], bids)
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
    # the scheduler gives up on a task after its first worker death (allowed-failures 0, not
    # the other tests' 3); the run's own retries (runner.TASK_RETRIES) still resubmit it, so
    # the bounded-retry path is the same, with fewer deaths (this run: 97 s -> 30 s)
    env = dict(_env(), DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES="0")
    t0 = time.monotonic()
    res = subprocess.run(_cmd(bids, tmp_path / "out", study["cfg"], "--memory-limit", "1500MB"),
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
                         check=False)
    assert res.returncode != 0
    assert time.monotonic() - t0 < 600
    table = _participants(tmp_path / "out")
    status, error = table["sub-0999"]
    assert status == "failed"
    assert "KilledWorker" in error and "died" in error, error
    ref = _participants(study["reference"])
    assert table["sub-0001"] == ref["sub-0001"]  # the other subject finished normally
    assert _checksums(bids) == before


def test_the_scan_finds_inf_and_complex(tmp_path):
    """The scanner itself: an Inf in the store, a complex NIfTI, an Inf NIfTI voxel and an
    ``Infinity`` in a sidecar are each reported."""
    from isyb_dask.io import store as results_store

    out = tmp_path / "out"
    results_store.init_store(out / "results.zarr", ["sub-01"], templates=["a"], anat_iqms=["snr"],
                             func_iqms=["fd"], surface_metrics=["GMV"], hemi=["L", "R"])
    assert scan_for_inf_and_complex(out) == []
    results_store.write_subject(out / "results.zarr", "qc_anat", "sub-01", {"snr": np.inf})
    anat = out / "sub-01" / "anat"
    anat.mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.ones((3, 3, 3), np.complex64), np.eye(4)), anat / "c.nii.gz")
    arr = np.ones((3, 3, 3), np.float32)
    arr[1, 1, 1] = -np.inf
    nib.save(nib.Nifti1Image(arr, np.eye(4)), anat / "i.nii.gz")
    (anat / "i.json").write_text('{"x": Infinity}')
    found = scan_for_inf_and_complex(out)
    assert len(found) == 4, found
    assert any("qc_anat/snr" in f for f in found)
