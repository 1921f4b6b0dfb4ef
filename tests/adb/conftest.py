"""Fixtures: an ADB key in a temporary HOME and a device-side ADB peer on 127.0.0.1."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))

from adb_peer import AdbPeer  # noqa: E402

from mobdistill.runtime.adb_device import AdbDevice, AdbOptions, load_signer  # noqa: E402


@pytest.fixture(scope="session")
def adbkey(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One RSA key for the session (keygen takes ~0.1-1 s), never the user's real key."""
    path = tmp_path_factory.mktemp("adbkey") / "adbkey"
    load_signer(path)
    return path


@pytest.fixture
def home(tmp_path: Path, adbkey: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A HOME whose ~/.android/adbkey is the session key (for CLI paths with default keys)."""
    android = tmp_path / "home" / ".android"
    android.mkdir(parents=True, mode=0o700)
    for name in ("adbkey", "adbkey.pub"):
        (android / name).write_bytes((adbkey.parent / name).read_bytes())
    (android / "adbkey").chmod(0o600)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def peer(tmp_path: Path, adbkey: Path) -> Iterator[AdbPeer]:
    """A phone that already trusts the session key (like one authorized earlier)."""
    public = (adbkey.parent / "adbkey.pub").read_bytes()
    with AdbPeer(tmp_path / "phone", auth="keys", trusted_keys=(public,), io_timeout_s=5) as p:
        yield p


@pytest.fixture
def options(adbkey: Path) -> AdbOptions:
    return AdbOptions(adbkey=adbkey, auth_timeout_s=1.0, transport_timeout_s=3.0,
                      read_timeout_s=5.0, progress=False)


@pytest.fixture
def device(peer: AdbPeer, options: AdbOptions) -> Iterator[AdbDevice]:
    with AdbDevice.open(peer.serial, options=options) as dev:
        yield dev
