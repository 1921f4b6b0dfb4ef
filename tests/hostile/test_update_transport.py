"""Hostile senders against the engine's update sources (issue 9, items 3-5): the TCP listener, the
watched folder and the persisted sequence. Real engine process, real sockets, real files.

Every test runs the engine with a key and device id (keys on), on a tiny DeepLab export.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from mobdistill.contract import wire
from mobdistill.contract.wire import Mode, TensorPatch, ValueCoding
from mobdistill.runtime.engine import build_host_engine, runtime_library

KEY = b"transport-test-device-key-32byte"
DEVICE = bytes(range(100, 116))


class Deployed:
    """The tiny export, its key file and a maker of small authentic packets."""

    def __init__(self, export, tmp: Path) -> None:
        self.manifest_path = export.manifest_path
        manifest = json.loads(self.manifest_path.read_text())
        tflite = self.manifest_path.parent / manifest["artifacts"][0]["file"]
        self.sha = hashlib.sha256(tflite.read_bytes()).digest()
        self.entry = next(e for e in manifest["parameter_map"]["entries"]
                          if e["parameter"] == "classifier.bias")
        self.key_file = tmp / "device.key"
        self.key_file.write_bytes(KEY)

    def packet(self, sequence: int, mode: Mode = Mode.BASE_RELATIVE) -> bytes:
        n = self.entry["buffer_size"] // 4
        patch = TensorPatch(self.entry["tensor_index"], n, np.array([sequence % n]),
                            np.array([float(sequence)]))
        return wire.encode_update([patch], base_sha256=self.sha, sequence=sequence,
                                  device_id=DEVICE, hmac_key=KEY, mode=mode,
                                  value_coding=ValueCoding.F32)


@pytest.fixture(scope="module")
def deployed(tiny_export, tmp_path_factory) -> Deployed:
    return Deployed(tiny_export("deeplab", formats=("tflite",)), tmp_path_factory.mktemp("key"))


@pytest.fixture(scope="module")
def engine() -> Path:
    return build_host_engine()


def _cmd(engine: Path, deployed: Deployed, out: Path, runs: int, *flags: str) -> list[str]:
    return [str(engine), f"--manifest={deployed.manifest_path}",
            f"--runtime_lib={runtime_library()}", "--warmup_runs=0", f"--num_runs={runs}",
            f"--jsonl={out / 'run.jsonl'}", f"--summary={out / 'summary.json'}",
            f"--update_key_file={deployed.key_file}", f"--update_device_id={DEVICE.hex()}",
            *flags]


def _records(out: Path) -> list[dict]:
    lines = (out / "run.jsonl").read_text().splitlines()
    return [json.loads(x) for x in lines if '"event"' in x]


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


class Listening:
    """The engine with --update_port=0: the port and limits are read from its stderr line."""

    def __init__(self, engine: Path, deployed: Deployed, out: Path, runs: int, delay: float):
        self.proc = subprocess.Popen(_cmd(engine, deployed, out, runs, f"--run_delay={delay}",
                                          "--update_port=0"),
                                     stderr=subprocess.PIPE, text=True)
        pattern = re.compile(r"127\.0\.0\.1:(\d+) \(messages up to (\d+) bytes, (\d+) "
                             r"clients, (\d+) bytes outstanding\)")
        seen = []
        while not (found := pattern.search(line := self.proc.stderr.readline())):
            seen.append(line)
            assert line and len(seen) < 50, "".join(seen)  # the runtime's INFO lines come first
        self.port, self.max_message, self.clients, self.max_outstanding = map(int,
                                                                               found.groups())

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=20)

    def finish(self, timeout: float = 60) -> None:
        try:
            assert self.proc.wait(timeout=timeout) == 0, self.proc.stderr.read()
        finally:
            self.proc.kill()
            self.proc.stderr.close()


def _send(conn: socket.socket, data: bytes) -> dict:
    conn.sendall(struct.pack(">I", len(data)) + data)
    return json.loads(conn.makefile("r").readline())


def test_an_idle_client_does_not_block_a_working_one(engine, deployed, tmp_path):
    run = Listening(engine, deployed, tmp_path, runs=250, delay=0.01)
    try:
        idle = [run.connect() for _ in range(run.clients)]  # every slot taken, none sending
        with run.connect() as working:
            start = time.monotonic()
            ack = _send(working, deployed.packet(1))
            elapsed = time.monotonic() - start
        assert ack["status"] == "applied" and ack["sequence"] == 1, ack
        assert elapsed < 5.0, f"the ack took {elapsed:.1f} s"
        for conn in idle:
            conn.close()
    finally:
        run.finish()


def test_a_client_stalled_mid_message_is_dropped_by_the_deadline(engine, deployed, tmp_path):
    run = Listening(engine, deployed, tmp_path, runs=350, delay=0.01)
    try:
        with run.connect() as stalled:
            stalled.sendall(struct.pack(">I", 1000) + b"MDUP" + bytes(10))  # and then nothing
            start = time.monotonic()
            with run.connect() as working:  # meanwhile another client is served
                assert _send(working, deployed.packet(1))["status"] == "applied"
            reply = stalled.makefile("r").readline()
            dropped_after = time.monotonic() - start
            assert stalled.recv(1) == b"", "the engine hung up"
        ack = json.loads(reply)
        assert ack["status"] == "rejected" and ack["reason"] == "timeout", ack
        assert 1.5 < dropped_after < 8.0, dropped_after
    finally:
        run.finish()
    assert [r["reason"] for r in _records(tmp_path)].count("timeout") == 1


def _flood(port: int, size: int, messages: int) -> list[str]:
    """One sender of junk messages of `size` bytes; reconnects whenever the engine hangs up."""
    outcomes: list[str] = []
    junk = struct.pack(">I", size) + b"JUNK" * (size // 4) + bytes(size % 4)
    while len(outcomes) < messages:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=20) as conn:
                reader = conn.makefile("r")
                while len(outcomes) < messages:
                    conn.sendall(junk)
                    line = reader.readline()
                    if not line:
                        outcomes.append("closed")
                        break
                    outcomes.append(json.loads(line)["reason"])
                    if outcomes[-1] in ("busy", "timeout", "too_large"):
                        break
        except OSError:
            outcomes.append("closed")
    return outcomes


def test_a_junk_flood_while_frames_run_slowly_stays_bounded(engine, deployed, tmp_path):
    """The issue's repro: many clients send maximum-size junk while frames run slowly."""
    calm = tmp_path / "calm"
    calm.mkdir()
    baseline = Listening(engine, deployed, calm, runs=20, delay=0.1)
    baseline.finish()
    flooded = tmp_path / "flood"
    flooded.mkdir()
    run = Listening(engine, deployed, flooded, runs=20, delay=0.25)  # >= 5 s of slow frames
    senders, per_sender = 16, 4
    results: list[list[str]] = [[] for _ in range(senders)]

    def sender(k: int) -> None:
        results[k] = _flood(run.port, run.max_message, per_sender)

    threads = [threading.Thread(target=sender, args=(k,)) for k in range(senders)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in threads), "a sender hung"
    finally:
        run.finish()
    sent_mib = senders * per_sender * run.max_message / 2**20
    peak, calm_peak = _summary(flooded)["peak_rss_mb"], _summary(calm)["peak_rss_mb"]
    # what may be buffered at once, plus one 64 KiB read chunk per client and slack for the
    # allocator and the junk's decode attempt
    bound = calm_peak + 2 * run.max_outstanding / 2**20 + 24
    print(f"flood: {sent_mib:.0f} MiB sent in {run.max_message}-byte messages; peak "
          f"{peak:.1f} MB vs {calm_peak:.1f} MB calm; bound {bound:.1f} MB")
    assert sent_mib > 2 * (bound - calm_peak), "the flood must exceed what may be buffered"
    assert peak < bound
    # A refused sender usually sees its connection reset while it still sends the body.
    reasons = [r for outcome in results for r in outcome]
    summary = _summary(flooded)["updates"]
    print("senders saw", {r: reasons.count(r) for r in set(reasons)}, "engine recorded",
          summary["rejected_by_reason"])
    assert "bad_magic" in reasons and summary["rejected_by_reason"].get("busy", 0) >= 1
    assert summary["applied"] == 0


# ----------------------------------------------------------------------------- watched folder
def _run_dir(engine, deployed, out: Path, inbox: Path, runs: int, during=None) -> None:
    proc = subprocess.Popen(_cmd(engine, deployed, out, runs, "--run_delay=0.01",
                                 f"--update_dir={inbox}"), stderr=subprocess.PIPE, text=True)
    try:
        if during is not None:
            during()
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
    finally:
        proc.kill()
        proc.stderr.close()


def test_fifo_and_dev_zero_symlink_neither_hang_nor_are_read(engine, deployed, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    os.mkfifo(inbox / "0001.mdup")  # opening it for reading without O_NONBLOCK would block
    (inbox / "0002.mdup").symlink_to("/dev/zero")  # reading it would never end
    (inbox / "0003.mdup").write_bytes(deployed.packet(3))
    start = time.monotonic()
    _run_dir(engine, deployed, tmp_path, inbox, runs=60)
    assert time.monotonic() - start < 30
    recs = {r["name"]: r for r in _records(tmp_path)}
    assert recs["0001.mdup"]["reason"] == "unreadable"
    assert "regular file" in recs["0001.mdup"]["message"]
    assert recs["0002.mdup"]["reason"] == "unreadable"
    assert "symbolic link" in recs["0002.mdup"]["message"]
    assert recs["0003.mdup"]["status"] == "applied"
    assert sorted(p.name for p in inbox.iterdir()) == [
        "0001.mdup.rejected", "0002.mdup.rejected", "0003.mdup.applied"]


def test_names_being_written_wait_until_complete(engine, deployed, tmp_path):
    """`.part` and dot-files are ignored; a file written in place in two parts is not consumed
    half-written."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    first, second = deployed.packet(1), deployed.packet(2)
    (inbox / "0001.mdup.part").write_bytes(first)
    (inbox / ".0001.mdup").write_bytes(first)

    def writers() -> None:
        time.sleep(0.5)
        (inbox / "0001.mdup.part").rename(inbox / "0001.mdup")
        time.sleep(0.3)
        with open(inbox / "0002.mdup", "wb") as f:  # in place, with a pause in the middle
            f.write(second[:40])
            f.flush()
            time.sleep(0.4)
            f.write(second[40:])

    _run_dir(engine, deployed, tmp_path, inbox, runs=250, during=writers)
    recs = _records(tmp_path)
    final = {r["name"]: r for r in recs}  # the last outcome per name
    assert final["0001.mdup"]["status"] == "applied" and final["0001.mdup"]["received_frame"] > 0
    assert final["0002.mdup"]["status"] == "applied", recs
    assert [r["reason"] for r in recs if r["name"] == "0002.mdup"][:-1] in ([], ["truncated"])
    assert ".0001.mdup" not in {r["name"] for r in recs}
    assert sorted(p.name for p in inbox.iterdir()) == [
        ".0001.mdup", "0001.mdup.applied", "0002.mdup.applied"]


def test_a_name_that_cannot_be_removed_is_not_read_again(engine, deployed, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "0001.mdup").mkdir()  # cannot be unlinked like a file (EISDIR), even by root
    _run_dir(engine, deployed, tmp_path, inbox, runs=120)  # ~60 scans
    recs = [r for r in _records(tmp_path) if r["name"] == "0001.mdup"]
    assert [r["reason"] for r in recs] == ["unreadable"]


def test_oversized_file_is_refused_unread(engine, deployed, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    with open(inbox / "0001.mdup", "wb") as f:
        f.truncate(1 << 34)  # 16 GiB sparse: reading it would exhaust memory
    os.utime(inbox / "0001.mdup", (time.time() - 60,) * 2)
    _run_dir(engine, deployed, tmp_path, inbox, runs=30)
    (rec,) = _records(tmp_path)
    assert rec["reason"] == "too_large" and rec["packet_bytes"] == 1 << 34
    assert not (inbox / "0001.mdup").exists()


# ----------------------------------------------------------------------------- restarts
def _scheduled(engine, deployed, out: Path, state: Path, packets: list[bytes]) -> list[dict]:
    out.mkdir()
    lines = []
    for k, data in enumerate(packets):
        (out / f"{k}.mdup").write_bytes(data)
        lines.append(json.dumps({"frame": k, "packet": f"{k}.mdup"}))
    (out / "s.jsonl").write_text("\n".join(lines) + "\n")
    done = subprocess.run(_cmd(engine, deployed, out, len(packets) + 1,
                               f"--update_schedule={out / 's.jsonl'}", "--update_blocking",
                               f"--update_state_file={state}"),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return _records(out)


def test_restart_with_the_state_file_refuses_old_packets(engine, deployed, tmp_path):
    state = tmp_path / "updates.state"
    first = _scheduled(engine, deployed, tmp_path / "first", state,
                       [deployed.packet(2), deployed.packet(3)])
    assert [r["status"] for r in first] == ["applied", "applied"]
    assert json.loads(state.read_text()) == {"base_sha256": deployed.sha.hex(),
                                             "last_sequence": 3}
    assert not list(tmp_path.glob("updates.state.tmp"))
    # the restarted engine runs the base model again, but remembers what it accepted
    second = _scheduled(engine, deployed, tmp_path / "second", state,
                        [deployed.packet(2), deployed.packet(3),
                         deployed.packet(4, Mode.CUMULATIVE), deployed.packet(5),
                         deployed.packet(6, Mode.CUMULATIVE)])
    assert [(r["sequence"], r["reason"]) for r in second] == [
        (2, "replay"), (3, "replay"), (4, "resync_needed"), (5, None), (6, None)]
    assert json.loads(state.read_text())["last_sequence"] == 6


def test_a_corrupt_state_file_stops_the_start(engine, deployed, tmp_path):
    state = tmp_path / "updates.state"
    state.write_text("{not json")
    (tmp_path / "s.jsonl").write_text("")
    done = subprocess.run(_cmd(engine, deployed, tmp_path, 2,
                               f"--update_schedule={tmp_path / 's.jsonl'}",
                               f"--update_state_file={state}"),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "--update_state_file" in done.stderr, done.stderr


def test_the_update_log_is_a_bounded_ring_with_totals(engine, deployed, tmp_path):
    n = 300
    (tmp_path / "junk.mdup").write_bytes(b"JUNK" * 30)
    (tmp_path / "s.jsonl").write_text(
        "".join(json.dumps({"frame": 1, "packet": "junk.mdup"}) + "\n" for _ in range(n)))
    done = subprocess.run(_cmd(engine, deployed, tmp_path, 3,
                               f"--update_schedule={tmp_path / 's.jsonl'}", "--update_blocking"),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    updates = _summary(tmp_path)["updates"]
    assert updates["received"] == n and updates["rejected"] == n
    assert updates["rejected_by_reason"] == {"bad_magic": n}
    assert updates["stats_over_last"] == 256
    assert len(_records(tmp_path)) == n  # the JSONL still has every record
