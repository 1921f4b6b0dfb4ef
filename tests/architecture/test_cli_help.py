"""Every command (and sub-command) answers --help, in a fresh process, with its usage."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mobdistill.cli import COMMANDS

SUBCOMMANDS = [[name] for name in COMMANDS] + [["update", "verify"]]


@pytest.mark.parametrize("argv", SUBCOMMANDS, ids=" ".join)
def test_help(argv):
    done = subprocess.run([sys.executable, "-m", "mobdistill", *argv, "--help"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: mobdistill {' '.join(argv)}")
    assert "Traceback" not in done.stderr


def test_commands_with_device_take_the_adb_options():
    for name in ("devices", "profile", "sweep"):
        done = subprocess.run([sys.executable, "-m", "mobdistill", name, "--help"],
                              capture_output=True, text=True, timeout=120)
        assert "--adb-key" in done.stdout and "--auth-timeout" in done.stdout, name
