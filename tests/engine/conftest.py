"""Fixtures: the host engine (built once, warnings as errors) and tiny exported models."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import tiny_models  # noqa: E402


@pytest.fixture(scope="session")
def engine_binary() -> Path:
    """$MOBDISTILL_ENGINE when set, else the source tree's build (built on demand)."""
    from mobdistill.runtime.engine import find_engine

    return find_engine()


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny_models")


@pytest.fixture(scope="session")
def stateless_manifest(tiny_dir) -> Path:
    return tiny_models.build_stateless(tiny_dir / "stateless")


@pytest.fixture(scope="session")
def stateful_manifest(tiny_dir) -> Path:
    return tiny_models.build_stateful(tiny_dir / "stateful", queue_length=3)


@pytest.fixture()
def device(tmp_path):
    from mobdistill.runtime.device import LocalDevice

    with LocalDevice(tmp_path / "device") as host:
        yield host
