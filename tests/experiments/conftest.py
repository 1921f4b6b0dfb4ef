"""The selfie teacher for the experiment tests (fetched by the set-up, `make teacher`)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def selfie_model() -> Path:
    from mobdistill.server import teachers

    path = teachers.cache_dir() / "selfie_segmentation.tflite"
    if not path.is_file():
        pytest.fail(f"the selfie teacher is not in {path.parent}: run `make teacher`")
    return path
