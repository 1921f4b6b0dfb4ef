"""Shared fixtures for the streaming tests: the committed vectors, the C++ verify tool, and the
selfie teacher (fetched by the set-up, `make teacher`, never by a test)."""

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


@pytest.fixture(scope="session")
def selfie_model() -> Path:
    """The cached selfie segmenter; a missing one fails (not skips) with how to fetch it."""
    from mobdistill.server import teachers

    path = teachers.cache_dir() / "selfie_segmentation.tflite"
    if not path.is_file():
        pytest.fail(f"the selfie teacher is not in {path.parent}: run `make teacher` (set-up "
                    "fetches it once; tests use no network)")
    return path
