"""Expensive session fixtures made once per test run, also when pytest-xdist runs the suite in
several worker processes (`make test` uses two): the first worker to ask builds under a file lock,
the others wait and load the pickled result."""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path
from typing import Callable, TypeVar

import pytest
from filelock import FileLock

T = TypeVar("T")


def run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder shared by every worker of this run (and by no other run)."""
    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    base = tmp_path_factory.getbasetemp()
    folder = base.parent / f"shared-{run_id}" if run_id else base / "shared"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def once(tmp_path_factory: pytest.TempPathFactory, key: str, build: Callable[[Path], T]) -> T:
    """`build(folder)` once per run for this key; every caller gets the same (unpickled) value."""
    name = hashlib.sha256(key.encode()).hexdigest()[:16]
    folder = run_folder(tmp_path_factory) / name
    result = folder.with_suffix(".pickle")
    with FileLock(str(folder.with_suffix(".lock"))):
        if not result.is_file():
            folder.mkdir(exist_ok=True)
            value = build(folder)
            partial = result.with_suffix(".partial")
            partial.write_bytes(pickle.dumps(value))
            partial.replace(result)
    return pickle.loads(result.read_bytes())
