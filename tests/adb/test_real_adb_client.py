"""Google's `adb` client (Debian package `adb`) against the peer: the peer is protocol-faithful.

The adb server runs on a private port with a private HOME (its own ~/.android/adbkey), and is
killed at the end, so nothing lingers and a user's adb server on 5037 is never touched.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from adb_peer import AdbPeer

ADB = shutil.which("adb")
pytestmark = pytest.mark.skipif(ADB is None, reason="needs the `adb` client (apt-get install adb)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def adb(tmp_path: Path) -> Iterator:
    env = {**os.environ, "HOME": str(tmp_path / "adbhome")}
    env.pop("ANDROID_SERIAL", None)
    (tmp_path / "adbhome").mkdir()

    def call(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
        return subprocess.run([ADB, *args], env=env, capture_output=True, text=True,
                              timeout=timeout, check=False)

    # A free port can be taken between probing it and the server binding it: try a few.
    for _ in range(3):
        env["ANDROID_ADB_SERVER_PORT"] = str(_free_port())
        if call("start-server", timeout=30).returncode == 0:
            break
    else:
        pytest.fail("the adb server did not start on any of 3 free ports")
    try:
        yield call
    finally:
        call("kill-server", timeout=10)


def test_real_adb_client_shell_push_pull(adb, tmp_path: Path) -> None:
    with AdbPeer(tmp_path / "phone", auth="auto", io_timeout_s=5) as peer:
        # A new key goes through the "Allow USB debugging?" prompt: adb reports that as
        # "failed to authenticate" and the device comes online once the prompt is accepted.
        first = adb("connect", peer.serial)
        assert peer.serial in first.stdout, first.stdout + first.stderr
        assert adb("-s", peer.serial, "wait-for-device", timeout=20).returncode == 0
        echo = adb("-s", peer.serial, "shell", "echo", "hello")
        assert echo.stdout.strip() == "hello", echo.stderr
        abi = adb("-s", peer.serial, "shell", "getprop", "ro.product.cpu.abi")
        assert abi.stdout.strip() == "x86_64"

        local = tmp_path / "blob.bin"
        local.write_bytes(os.urandom(500_000))
        push = adb("-s", peer.serial, "push", str(local), "/data/local/tmp/blob.bin")
        assert push.returncode == 0, push.stdout + push.stderr
        assert (peer.root / "data/local/tmp/blob.bin").read_bytes() == local.read_bytes()

        back = tmp_path / "back.bin"
        pull = adb("-s", peer.serial, "pull", "/data/local/tmp/blob.bin", str(back))
        assert pull.returncode == 0, pull.stdout + pull.stderr
        assert back.read_bytes() == local.read_bytes()

        devices = adb("devices")
        assert f"{peer.serial}\tdevice" in devices.stdout
        adb("disconnect", peer.serial)
        again = adb("connect", peer.serial)  # now the token signature is verified and accepted
        assert f"connected to {peer.serial}" in again.stdout, again.stdout + again.stderr
        assert len(peer.prompts) == 1
