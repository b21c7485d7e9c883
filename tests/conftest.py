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
