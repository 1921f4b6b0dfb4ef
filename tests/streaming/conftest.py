"""Shared fixtures for the streaming tests: the committed vectors and the C++ verify tool (the
selfie teacher, `selfie_model`, is in tests/conftest.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

VECTORS = Path(__file__).resolve().parents[1] / "vectors"


@pytest.fixture(scope="session")
def vectors_dir() -> Path:
    return VECTORS


@pytest.fixture(scope="session")
def verify_tool() -> Path:
    if not (shutil.which("cmake") and (shutil.which("c++") or shutil.which("g++"))):
        pytest.skip("cmake and a C++ compiler are needed for the C++ decoder tests")
    from mobdistill.runtime.update_verify import find_verify_tool

    return find_verify_tool(build=True)
