"""Shared test fixtures. Tests run offline with the real embedded assets at small scale."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def benchmarks_dir() -> Path:
    """The local benchmark mirror (``<org>/<name>/<config>/<split>.jsonl``): $SALAD_BENCHMARKS."""
    default = Path(__file__).resolve().parents[2] / "shared" / "benchmarks"
    path = Path(os.environ.get("SALAD_BENCHMARKS", default))
    assert path.is_dir(), f"benchmark mirror not found at {path}; set SALAD_BENCHMARKS"
    return path
