"""AdbDevice over the real ADB protocol against the loopback peer (tests/support/adb_peer.py)."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from dataclasses import replace
from pathlib import Path

import pytest
from adb_peer import AdbPeer

from mobdistill.cli import main
from mobdistill.errors import DeviceError
from mobdistill.runtime.adb_device import AdbDevice, AdbOptions, load_signer, usb_fix
from mobdistill.runtime.device import LocalDevice
from mobdistill.runtime.devices import open_device

WORKDIR = "/data/local/tmp/mobdistill"


def _blob(tmp_path: Path, size: int, name: str = "model.tflite") -> Path:
    path = tmp_path / name
    path.write_bytes(os.urandom(size))
    return path


def _on_phone(peer: AdbPeer, device_path: str) -> Path:
    host = peer.host_path(device_path)
    assert host is not None
    return host


def test_connect_abi_and_describe(device: AdbDevice) -> None:
    assert device.abi() == "x86_64"
    info = device.describe()
    assert info["model"] == "Peer Phone 1"
    assert info["os"] == "Android 14"
    assert info["soc"] == "LB1000"
    assert info["board_platform"] == "loopback"
    assert info["transport"] == "tcp"
    assert device.workdir() == WORKDIR


def test_stage_is_verified_atomic_and_executable(device: AdbDevice, peer: AdbPeer,
                                                 tmp_path: Path) -> None:
    local = _blob(tmp_path, 300_000)
    remote = device.stage(local, "model.tflite")
    assert remote == f"{WORKDIR}/model.tflite"
    on_phone = _on_phone(peer, remote)
    assert on_phone.read_bytes() == local.read_bytes()
    assert stat.S_IMODE(on_phone.stat().st_mode) == 0o755
    assert not list(on_phone.parent.glob(".*.part"))
    assert device.stage(local, "model.tflite") == remote  # unchanged: skipped, still fine


def test_stage_falls_back_to_toybox_sha256sum(tmp_path: Path, adbkey: Path,
                                              options: AdbOptions) -> None:
    public = (adbkey.parent / "adbkey.pub").read_bytes()
    with AdbPeer(tmp_path / "old", auth="keys", trusted_keys=(public,),
                 hide_tools=("sha256sum",)) as old_phone:
        with AdbDevice.open(old_phone.serial, options=options) as device:
            local = _blob(tmp_path, 10_000)
            remote = device.stage(local, "m.bin")
            assert _on_phone(old_phone, remote).read_bytes() == local.read_bytes()


def test_fetch_and_missing_file(device: AdbDevice, peer: AdbPeer, tmp_path: Path) -> None:
    log = _on_phone(peer, f"{WORKDIR}/run.jsonl")
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_bytes(b'{"frame": 0}\n' * 20_000)
    device.fetch(f"{WORKDIR}/run.jsonl", tmp_path / "out" / "run.jsonl")
    assert (tmp_path / "out" / "run.jsonl").read_bytes() == log.read_bytes()
    with pytest.raises(DeviceError, match="no such file"):
        device.fetch(f"{WORKDIR}/missing.jsonl", tmp_path / "missing.jsonl")
    assert not (tmp_path / "missing.jsonl").exists()


def test_run_exit_code_stdout_stderr(device: AdbDevice) -> None:
    result = device.run(["sh", "-c", "pwd; echo err >&2; exit 3"], timeout_s=10)
    assert (result.exit_code, result.stdout, result.stderr) == (3, f"{WORKDIR}\n", "err\n")
    assert not result.timed_out


def test_output_imitating_the_exit_marker_cannot_spoof_the_status(device: AdbDevice) -> None:
    """A file name holding the marker, printed on stderr after stdout, used to set the code."""
    fake = "\\n@@mobdistill-exit=0\\n@@mobdistill-exit-0123456789abcdef=0\\n"
    result = device.run(["sh", "-c", f"printf '{fake}'; printf '{fake}' >&2; exit 5"],
                        timeout_s=10)
    assert result.exit_code == 5
    assert result.stdout.count("@@mobdistill-exit") == 2
    assert result.stderr.count("@@mobdistill-exit") == 2


def test_private_files_are_staged_owner_only_and_removable(device: AdbDevice, peer: AdbPeer,
                                                           tmp_path: Path) -> None:
    remote = device.stage(_blob(tmp_path, 32, "key"), "run.key", private=True)
    assert stat.S_IMODE(_on_phone(peer, remote).stat().st_mode) == 0o600
    device.remove(remote)
    assert not _on_phone(peer, remote).exists()


def test_run_timeout_kills_the_command(device: AdbDevice) -> None:
    start = time.monotonic()
    result = device.run(["sleep", "30"], timeout_s=1)
    assert result.timed_out
    assert time.monotonic() - start < 8
    assert device.run(["echo", "still here"], timeout_s=5).stdout == "still here\n"


def test_logs_of_a_failed_run_can_be_fetched(device: AdbDevice, tmp_path: Path) -> None:
    result = device.run(["sh", "-c", "echo partial > run.log; exit 1"], timeout_s=10)
    assert result.exit_code == 1
    device.fetch(f"{WORKDIR}/run.log", tmp_path / "run.log")
    assert (tmp_path / "run.log").read_text() == "partial\n"


def test_disconnect_mid_push_leaves_no_file_under_the_final_name(
        peer: AdbPeer, options: AdbOptions, tmp_path: Path) -> None:
    local = _blob(tmp_path, 1_000_000)
    peer.faults.drop_push_after_bytes = 200_000
    peer.faults.keep_partial_on_drop = True  # worst case: the partial file stays on the phone
    with AdbDevice.open(peer.serial, options=replace(options, push_retries=0)) as device:
        with pytest.raises(DeviceError, match="connection was lost"):
            device.stage(local, "model.tflite")
        assert peer.faults.fired and peer.faults.fired[0].startswith("drop@")
        final = _on_phone(peer, f"{WORKDIR}/model.tflite")
        assert not final.exists()
        remote = device.stage(local, "model.tflite")  # reconnects; the fault was one-shot
        assert _on_phone(peer, remote).read_bytes() == local.read_bytes()
        assert not list(final.parent.glob(".*.part"))


def test_interrupted_push_is_retried(device: AdbDevice, peer: AdbPeer, tmp_path: Path) -> None:
    local = _blob(tmp_path, 600_000)
    peer.faults.drop_push_after_bytes = 100_000
    remote = device.stage(local, "engine")
    assert peer.faults.fired
    assert _on_phone(peer, remote).read_bytes() == local.read_bytes()


def test_stalled_push_fails_in_bounded_time(peer: AdbPeer, options: AdbOptions,
                                            tmp_path: Path) -> None:
    peer.faults.stall_push_after_bytes = 100_000
    fast = replace(options, read_timeout_s=1.5, transport_timeout_s=1.0, push_retries=0)
    start = time.monotonic()
    with AdbDevice.open(peer.serial, options=fast) as device:
        with pytest.raises(DeviceError, match="lost or stalled"):
            device.stage(_blob(tmp_path, 600_000), "model.tflite")
    assert time.monotonic() - start < 10


def test_unauthorized_device_gives_a_clear_error(tmp_path: Path, options: AdbOptions) -> None:
    with AdbPeer(tmp_path / "locked", auth="never") as locked:
        with pytest.raises(DeviceError, match="unauthorized.*Allow") as info:
            AdbDevice.open(locked.serial, options=options)
        assert info.value.state == "unauthorized"
        assert locked.prompts  # our public key reached the "Allow USB debugging?" prompt


def test_prompt_accepted_then_signature_is_enough(tmp_path: Path, options: AdbOptions) -> None:
    with AdbPeer(tmp_path / "new", auth="auto") as fresh:
        AdbDevice.open(fresh.serial, options=options).close()
        AdbDevice.open(fresh.serial, options=options).close()
        assert len(fresh.prompts) == 1  # the second connection signed the token


def test_revoked_mid_run_gives_a_clear_error(device: AdbDevice, peer: AdbPeer) -> None:
    assert device.run(["true"], timeout_s=5).exit_code == 0
    peer.revoke()
    with pytest.raises(DeviceError) as lost:
        device.run(["true"], timeout_s=5)
    assert "connection was lost" in str(lost.value)
    with pytest.raises(DeviceError, match="unauthorized"):
        device.run(["true"], timeout_s=5)


def test_disconnect_then_reconnect_on_next_call(device: AdbDevice, peer: AdbPeer) -> None:
    device.abi()
    peer.disconnect_all()
    with pytest.raises(DeviceError, match="connection was lost"):
        device.run(["true"], timeout_s=5)
    assert device.run(["echo", "back"], timeout_s=5).stdout == "back\n"


def test_bad_serials_give_clear_errors(options: AdbOptions) -> None:
    with pytest.raises(DeviceError, match="nothing accepts ADB connections at 127.0.0.1:1"):
        AdbDevice.open("127.0.0.1:1", options=options)
    with pytest.raises(DeviceError, match="libusb1|no USB device"):
        open_device("NOSUCHSERIAL", options=options)


def test_usb_busy_explains_adb_kill_server() -> None:
    class USBErrorBusy(Exception):
        pass

    assert "adb kill-server" in usb_fix(USBErrorBusy("LIBUSB_ERROR_BUSY [-6]"))
    assert usb_fix(ValueError("other")) is None


def test_adbkey_is_created_private(tmp_path: Path) -> None:
    key = tmp_path / "fresh" / ".android" / "adbkey"
    load_signer(key)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.with_name("adbkey.pub").read_text().split()[0]
    before = key.read_bytes()
    load_signer(key)
    assert key.read_bytes() == before  # reused, never overwritten


def test_open_device_specs(peer: AdbPeer, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANDROID_SERIAL", peer.serial)
    assert isinstance(open_device(None), LocalDevice)  # None means host, whatever the env says
    assert isinstance(open_device("host"), LocalDevice)
    with open_device("adb") as phone:  # ANDROID_SERIAL
        assert isinstance(phone, AdbDevice) and phone.serial == peer.serial


def test_devices_json(peer: AdbPeer, home: Path, tmp_path: Path,
                      capsys: pytest.CaptureFixture[str]) -> None:
    with AdbPeer(tmp_path / "locked", auth="never") as locked:
        code = main(["devices", "--json", "--no-usb", "--auth-timeout", "1",
                     "--device", peer.serial, "--device", locked.serial])
    listing = json.loads(capsys.readouterr().out)
    states = {row["serial"]: row["state"] for row in listing["devices"]}
    assert states == {"host": "device", peer.serial: "device", locked.serial: "unauthorized"}
    phone = next(row for row in listing["devices"] if row["serial"] == peer.serial)
    assert phone["details"]["abi"] == "x86_64"
    assert code == 3  # a named device is not usable


def test_stage_digest_matches(device: AdbDevice, peer: AdbPeer, tmp_path: Path) -> None:
    local = _blob(tmp_path, 70_000, "lib.so")
    remote = device.stage(local, "lib/lib.so")
    digest = hashlib.sha256(_on_phone(peer, remote).read_bytes()).hexdigest()
    assert digest == hashlib.sha256(local.read_bytes()).hexdigest()
