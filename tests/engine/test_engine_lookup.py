"""Finding the engine when mobdistill is installed without its sources (pip install .)."""

from __future__ import annotations

import os
import stat

import pytest

from mobdistill.errors import UsageError
from mobdistill.runtime import engine


def _executable(path):
    path.write_text("#!/bin/sh\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_flag_wins_over_the_environment(tmp_path, monkeypatch):
    flag, env = _executable(tmp_path / "a"), _executable(tmp_path / "b")
    monkeypatch.setenv(engine.ENGINE_ENV, str(env))
    assert engine.find_engine(flag) == flag
    assert engine.find_engine() == env


def test_a_missing_or_non_executable_engine_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv(engine.ENGINE_ENV, str(tmp_path / "nope"))
    with pytest.raises(UsageError, match="nope is not an executable"):
        engine.find_engine()
    plain = tmp_path / "plain"
    plain.write_text("")
    with pytest.raises(UsageError, match="not an executable"):
        engine.find_engine(plain)


def test_an_installed_package_says_how_to_get_an_engine(tmp_path, monkeypatch):
    monkeypatch.delenv(engine.ENGINE_ENV, raising=False)
    monkeypatch.setattr(engine, "ENGINE_SOURCE", tmp_path / "site-packages" / "android" / "engine")
    with pytest.raises(UsageError) as err:
        engine.find_engine()
    assert "make engine" in str(err.value) and engine.ENGINE_ENV in str(err.value)
    assert not os.path.exists(tmp_path / "site-packages")  # nothing built, nothing written
