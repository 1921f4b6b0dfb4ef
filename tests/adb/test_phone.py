"""A real phone, only with MOBDISTILL_ADB_SERIAL=SERIAL or HOST:PORT (`pytest -m phone`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mobdistill.runtime.devices import open_device

SERIAL = os.environ.get("MOBDISTILL_ADB_SERIAL", "")
pytestmark = [pytest.mark.phone,
              pytest.mark.skipif(not SERIAL, reason="set MOBDISTILL_ADB_SERIAL to a phone")]


def test_phone_stage_run_fetch(tmp_path: Path) -> None:
    with open_device(SERIAL) as phone:
        assert phone.abi()
        local = tmp_path / "hello.txt"
        local.write_text("hello\n")
        remote = phone.stage(local, "hello.txt", timeout_s=60)
        assert phone.run(["cat", remote], timeout_s=30).stdout == "hello\n"
        phone.fetch(remote, tmp_path / "back.txt", timeout_s=60)
        assert (tmp_path / "back.txt").read_text() == "hello\n"
