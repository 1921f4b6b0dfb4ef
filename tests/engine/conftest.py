"""Fixtures: the host engine (built once, warnings as errors) and a local device. The tiny
models are session fixtures in tests/conftest.py."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def engine_binary() -> Path:
    """$MOBDISTILL_ENGINE when set, else the source tree's build (built on demand)."""
    from mobdistill.runtime.engine import find_engine

    return find_engine()


@pytest.fixture()
def device(tmp_path):
    from mobdistill.runtime.device import LocalDevice

    with LocalDevice(tmp_path / "device") as host:
        yield host
