"""Fuzz tests: write the case counts at the end of the session (scripts/fuzz.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reliability"))

import fuzzing  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _case_counts():
    yield
    fuzzing.flush_counts()
