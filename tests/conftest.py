"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(os.environ.get("ISYB_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def pytest_report_header(config):  # noqa: D103
    return f"shared data: {SHARED_DATA} ({'present' if SHARED_DATA.is_dir() else 'absent: real-data tests skip'})"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ``../shared/data`` (real MRI files); skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not available")
    return SHARED_DATA


@pytest.fixture(scope="session")
def template_cache(tmp_path_factory) -> Path:
    """One template cache for the session: a template's carry-over registration to the
    built-in head is computed once, as a run with ``--cache-dir`` does (~2.5 s each)."""
    return tmp_path_factory.mktemp("template-cache")


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """A tiny generated study run end to end once per session (both levels).

    Four good subjects (50-volume BOLD), one corrupt and one truncated T1w, two templates (the
    built-in one and the same head given by path without a face mask, which exercises the
    carried-over mask). Returns a dict with paths, exit code and input checksums.
    """
    from isyb_dask.cli.main import main
    from isyb_dask.synth.cohort import generate_study

    root = tmp_path_factory.mktemp("demo")
    bids = generate_study(root / "bids", 6, "chinese", seed=7, bold_volumes=50)
    anat = bids / "sub-0005" / "anat" / "sub-0005_T1w.nii.gz"
    anat.write_bytes(b"corrupted by a bad transfer" * 100)
    anat6 = bids / "sub-0006" / "anat" / "sub-0006_T1w.nii.gz"
    anat6.write_bytes(anat6.read_bytes()[:20000])
    before = {p: _sha(p) for p in bids.rglob("*") if p.is_file()}
    from isyb_dask.atlas import builtin_head_paths

    head, _ = builtin_head_paths()
    out = root / "out"
    args = [str(bids), str(out), "participant", "group", "--workers", "2",
            "--template", f"Western2={head}"]
    code = main(["run", *args])
    return {"bids": bids, "out": out, "args": args, "code": code, "checksums": before}


@pytest.fixture(scope="session")
def generated_1mm_bids(tmp_path_factory) -> Path:
    """One generated 1 mm subject (T1w only, "chinese", seed 3), made once per session.

    A 1 mm head costs ~32 CPU s to generate; the synth, surface and morphometry tests share
    this one. Read-only: tests that change files copy them first.
    """
    from isyb_dask.synth.cohort import generate_study

    root = tmp_path_factory.mktemp("gen1mm")
    return generate_study(root / "bids", 1, "chinese", seed=3, voxel_size=1.0,
                          modalities=("anat",))
