"""Live AMS on loopback: the real `mobdistill serve` process trains, the real host client plays a
real clip in real time through the engine's C facade and applies what arrives."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import time

import numpy as np
import pytest
from live_harness import applied, finish, free_port, self_signed_certificate, wait_for
from lossy_relay import LossyRelay

from mobdistill.contract import protocol

CLIP_FRAMES = 120  # all of carphone_pristine (4 s): room for a slow first phase on a loaded host


def test_live_end_to_end(live, tmp_path):
    """Frames go up, packets come down and are applied off the frame thread, the engine swaps
    models between frames, acks reach the server with the engine's timings."""
    state = tmp_path / "state"
    device = live.enrol(state)
    # Large steps on every parameter: on a loaded host one phase may be all that lands, and it
    # must move the masks visibly (the benchmark measures learning; this checks the plumbing).
    # Not larger: at lr 0.5 one phase diverges and the model says background everywhere, as the
    # barely pretrained start does.
    server = live.server(state, "--lr", "0.05", "--gamma", "1.0")
    try:
        summary = finish(live.client(server.port, device, tmp_path / "device",
                                     max_frames=CLIP_FRAMES))
    finally:
        assert server.stop() == 0  # SIGTERM: a graceful stop
    assert server.events[-1]["event"] == "stopped"
    updates = applied(summary)
    assert updates, summary["updates"]
    assert summary["counters"]["uplink_frames"] > 0 and summary["counters"]["connections"] == 1
    frames = [json.loads(x) for x in (tmp_path / "device" / "frames.jsonl").read_text()
              .splitlines()]
    assert len(frames) == summary["frames"] == CLIP_FRAMES
    for u in updates:  # the model version moves exactly at the frame the engine swapped on
        swap = u["engine"]["swapped_frame"]
        assert swap >= u["arrival_frame"] and u["arrival_s"] >= (u["boundary_s"] or 0)
        assert frames[swap]["model_version"] == u["sequence"]
        assert frames[swap - 1]["model_version"] == u["sequence"] - 1
        assert u["engine"]["build_us"] > 0
    acks = {e["sequence"]: e for e in server.events if e["event"] == "ack"}
    for u in updates:
        assert acks[u["sequence"]]["status"] == "applied"
        assert acks[u["sequence"]]["swapped_frame"] == u["engine"]["swapped_frame"]
    trained = [e for e in server.events if e["event"] == "trained"]
    assert [e["sequence"] for e in trained][:len(updates)] == [u["sequence"] for u in updates]
    assert summary["engine_stats"]["updates"]["rejected"] == 0
    _masks_are_the_patched_models(live, device, tmp_path / "device", frames)


def _masks_are_the_patched_models(live, device, out, frames) -> None:
    """Every engine mask is what the model it ran on (base + the packets up to its version,
    rebuilt here from the received packets with the reference decoder) gives under
    ai_edge_litert; and after the swaps some masks differ from the base model's."""
    from ai_edge_litert.interpreter import Interpreter

    from mobdistill.contract import wire
    from mobdistill.experiments.clips import resolve_clip
    from mobdistill.video import read_frames

    manifest = json.loads(live.manifest.read_text())
    base = (live.manifest.parent / manifest["artifacts"][0]["file"]).read_bytes()
    table = {e["tensor_index"]: wire.TensorLocation(e["buffer_offset"], e["buffer_size"],
                                                    e["dtype"])
             for e in manifest["parameter_map"]["entries"]}
    models, current = {0: base}, base
    for path in sorted((out / "packets").glob("update-*.mdup")):
        packet = wire.decode_update(path.read_bytes(), expected_base_sha256=bytes.fromhex(
            manifest["artifacts"][0]["sha256"]), expected_device_id=device.device_id,
            hmac_key=device.key_file.read_bytes())
        current = wire.apply_update(current, table, packet)
        models[packet.sequence] = current
    pictures = read_frames(resolve_clip("carphone_pristine.mp4"), CLIP_FRAMES, size=(64, 128))
    masks = np.fromfile(out / "masks.bin", np.uint8).reshape(CLIP_FRAMES, 64, 128)

    def litert(model: bytes, picture: np.ndarray) -> np.ndarray:
        run = Interpreter(model_content=model).get_signature_runner("serving_default")
        return run(frame=picture[None].astype(np.float32))["logits"][0].argmax(-1)

    changed = 0
    for k in range(CLIP_FRAMES):
        version = frames[k]["model_version"]
        assert (masks[k] == litert(models[version], pictures[k])).mean() > 0.99, k
        if version:
            changed += int((litert(base, pictures[k]) != masks[k]).any())
    assert changed > 0


def _no_rejections(summary: dict) -> None:
    assert summary["engine_stats"]["updates"]["rejected"] == 0, summary["updates"]
    assert all((u["engine"] or {}).get("status") != "rejected" for u in summary["updates"])


def test_reconnect_catches_up_a_lost_packet(live, tmp_path):
    """The link loses packet 2 and drops; the device reconnects and reports model 1; the server
    sends one cumulative catch-up with every element changed since 1; nothing diverges."""
    state = tmp_path / "state"
    device = live.enrol(state)
    server = live.server(state)
    relay = LossyRelay(server.port, drop_update_sequence=2)
    try:
        summary = finish(live.client(relay.port, device, tmp_path / "device",
                                     videos=("bikes.mp4",), max_frames=None))
    finally:
        relay.close()
        server.stop()
    assert relay.dropped.is_set() and summary["counters"]["connections"] >= 2
    resumed = [e for e in server.events if e["event"] == "connected"][1]
    assert resumed["resume"] == "catch_up" and resumed["model_sequence"] == 1
    catch_up = next(u for u in summary["updates"] if u["kind"] == "catch_up")
    assert catch_up["sequence"] == 2 and catch_up["mode"] == "cumulative"
    assert catch_up["engine"]["status"] == "applied"
    _no_rejections(summary)
    later = [u for u in applied(summary) if u["sequence"] > 2]
    assert later, "training went on after the catch-up"


def _serve_one_long_client(live, tmp_path):
    """A server on a fresh state folder and port, and one enrolled client on 30 s of video: a
    restarting server (torch, teacher, student) takes ~10 s on this host."""
    state, port = tmp_path / "state", free_port()
    device = live.enrol(state)
    server = live.server(state, port=port)
    client = live.client(port, device, tmp_path / "device", videos=("bikes.mp4",) * 3,
                         max_frames=None)
    return state, port, server, client


def test_server_restart_restores_sessions(live, tmp_path):
    """SIGTERM mid-stream, a new server on the same state folder and port: the session comes
    back from disk (weights, sequence, key) and the device continues where it was."""
    state, port, server, client = _serve_one_long_client(live, tmp_path)
    try:
        wait_for(server, "ack", status="applied")
    finally:
        assert server.stop() == 0
    before = max(e["sequence"] for e in server.events if e["event"] == "trained")
    restarted = live.server(state, port=port)
    try:
        summary = finish(client)
    finally:
        restarted.stop()
    # A phase running at SIGTERM finishes and is persisted before the server exits (its packet
    # never left): the restored sequence may be one further than the last one sent.
    session = next(e for e in restarted.events if e["event"] == "session")
    assert session["restored"] and session["sequence"] in (before, before + 1)
    resumed = next(e for e in restarted.events if e["event"] == "connected")
    assert resumed["resume"] in ("in_step", "catch_up")
    assert summary["counters"]["connections"] >= 2
    _no_rejections(summary)
    assert max(u["sequence"] for u in applied(summary)) > session["sequence"]


def test_server_killed_mid_stream(live, tmp_path):
    """SIGKILL (no goodbye, nothing flushed): the client keeps segmenting every frame on its
    last model, records one clear error for the outage, and resumes when a server comes back
    on the same state folder and port; nothing applied before the kill is lost or re-sent."""
    state, port, server, client = _serve_one_long_client(live, tmp_path)
    try:
        wait_for(server, "ack", status="applied")
    finally:
        server.process.kill()
        server.stop()
    assert server.process.returncode == -signal.SIGKILL
    acked = max(e["sequence"] for e in server.events if e["event"] == "ack")
    time.sleep(2.0)  # an outage of a few seconds (plus the restart's own)
    restarted = live.server(state, port=port)
    try:
        summary = finish(client)
    finally:
        restarted.stop()
    session = next(e for e in restarted.events if e["event"] == "session")
    assert session["restored"] and session["sequence"] >= acked  # persisted before sent
    assert summary["counters"]["connections"] >= 2
    lost = next(e for e in summary["counters"]["errors"] if e["message"].startswith("lost"))
    refused = [e for e in summary["counters"]["errors"] if e["time_s"] >= lost["time_s"]
               and e["message"].startswith("cannot reach")]
    assert refused and f"127.0.0.1:{port}" in refused[0]["message"]
    assert len(refused) <= 2 and sum(e["repeats"] for e in refused) > 0  # one row per outage
    back = min(r["time_s"] for r in summary["counters"]["rates"] if r["time_s"] > lost["time_s"])
    frames = [json.loads(x) for x in (tmp_path / "device" / "frames.jsonl").read_text()
              .splitlines()]
    assert len(frames) == summary["frames"]  # no frame skipped: every one has a mask
    assert (tmp_path / "device" / "masks.bin").stat().st_size == len(frames) * 64 * 128
    outage = [f for f in frames if lost["time_s"] <= f["time_s"] < back]
    assert len(outage) > 25 * 2  # bikes is 25 fps; the outage lasted over 2 s
    versions = [f["model_version"] for f in frames]
    assert versions == sorted(versions)  # never back to an older model
    # During the outage: the models it had (a packet received just before may still swap in).
    had = max(u["sequence"] for u in summary["updates"] if u["arrival_s"] <= lost["time_s"])
    assert all(1 <= f["model_version"] <= had for f in outage)
    _no_rejections(summary)
    assert max(u["sequence"] for u in applied(summary)) > session["sequence"]


def _raw(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def _authenticated_then_silent(port: int, device, manifest_sha: str) -> socket.socket:
    sock = _raw(port)
    channel = protocol.BlockingChannel(sock)
    channel.handshake_preface()
    nonce = os.urandom(protocol.NONCE_BYTES)
    channel.send(protocol.Message(protocol.MessageType.HELLO, {
        "device_id": device.device_id.hex(), "nonce": nonce.hex(), "base_sha256": manifest_sha,
        "model_sequence": 0, "last_sequence": 0, "time_s": 0.0}))
    challenge = channel.receive()
    proof = protocol.device_proof(device.key_file.read_bytes(), device.device_id, nonce,
                                  bytes.fromhex(challenge.header["nonce"]))
    channel.send(protocol.Message(protocol.MessageType.AUTH, {"proof": proof.hex()}))
    reply = channel.receive()
    if reply.kind == protocol.MessageType.ERROR:
        raise protocol.ProtocolError(reply.header["message"], reply.header["code"])
    assert reply.kind == protocol.MessageType.WELCOME
    return sock  # and then nothing: a stalled device


def test_garbage_and_stalled_clients_are_dropped_alone(live, tmp_path):
    state = tmp_path / "state"
    healthy, stalled, impostor = (live.enrol(state, n) for n in ("healthy", "stalled", "other"))
    server = live.server(state, "--handshake-timeout", "1", "--read-timeout", "3")
    sha = json.loads(live.manifest.read_text())["artifacts"][0]["sha256"]
    try:
        client = live.client(server.port, healthy, tmp_path / "healthy")
        garbage = _raw(server.port)
        garbage.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + os.urandom(4096))
        silent = _raw(server.port)
        silent.sendall(protocol.PREFACE)  # then nothing: the handshake deadline
        huge = _raw(server.port)
        huge.sendall(protocol.PREFACE + protocol.FRAME_HEAD.pack(
            2**31, int(protocol.MessageType.HELLO), 0))
        forger = live.enrol(tmp_path / "elsewhere", "forger")  # a key the server never issued
        forger.device_id = impostor.device_id  # for an enrolled id
        idle = _authenticated_then_silent(server.port, stalled, sha)
        with pytest.raises(protocol.ProtocolError) as refused:
            _authenticated_then_silent(server.port, forger, sha)
        assert refused.value.code == "auth_failed"
        summary = finish(client)
        wait_for(server, "dropped", code="timeout", device=stalled.device_id.hex(), timeout_s=10)
    finally:
        server.stop()
    codes = {e["code"] for e in server.events if e["event"] == "dropped"}
    assert {"bad_preface", "timeout", "too_large", "auth_failed"} <= codes
    assert summary["counters"]["connections"] == 1 and applied(summary)
    _no_rejections(summary)
    for s in (garbage, silent, huge, idle):
        s.close()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")
def test_tls(live, tmp_path):
    """Frames leave the device encrypted; the client verifies the server's certificate."""
    cert, key = self_signed_certificate(tmp_path)
    state = tmp_path / "state"
    device = live.enrol(state)
    server = live.server(state, "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        assert server.events[-1]["tls"] is True
        plain = _raw(server.port)
        plain.sendall(protocol.PREFACE)  # no TLS: the server never answers in the clear
        plain.settimeout(5)
        try:
            assert not plain.recv(64).startswith(protocol.MAGIC)
        except (ConnectionError, TimeoutError, socket.timeout):
            pass
        summary = finish(live.client(server.port, device, tmp_path / "device",
                                     "--tls-ca", str(cert)))
    finally:
        server.stop()
    assert applied(summary) and summary["counters"]["uplink_frames"] > 0
    _no_rejections(summary)


@pytest.mark.slow  # ~30-70 s here; benchmarks/live_vs_simulated.py runs the same path
def test_stream_live_reports_what_the_simulation_reports(live_student, tmp_path, capsys,
                                                          monkeypatch):
    """`mobdistill stream --live`: the simulated stream's JSON fields, from a live run."""
    from mobdistill.cli import main
    from mobdistill.experiments import pretrain

    monkeypatch.setattr(pretrain, "cache_root", lambda: live_student[0])
    assert main(["stream", "--live", "--video", "carphone_pristine.mp4", "--max-frames", "90",
                 "--resolution", "64x128", "--tiny", "--iterations", "5", "--batch-size", "2",
                 "--t-update", "0.5", "--lr", "0.01", "--pretrain-iterations", "2",
                 "--uplink", "jpeg", "--out", str(tmp_path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"scheme", "settings", "frames", "duration_s", "miou_with_background",
            "miou_foreground", "uplink", "downlink", "updates", "latency", "live"} <= set(result)
    assert result["frames"] == 90 and result["settings"]["live"] is True
    assert result["uplink"]["bytes"] > 0 and result["downlink"]["packets_applied"] > 0
    applied_rows = [u for u in result["updates"] if (u["engine"] or {}).get("status") == "applied"]
    assert all(u["boundary_s"] <= u["arrival_s"] and u["engine"]["swapped_frame"]
               >= u["arrival_frame"] for u in applied_rows)
    assert 0 <= result["miou_with_background"]["mean"] <= 1
    assert result["live"]["server_events"]["ack"] >= len(applied_rows)
    saved = json.loads((tmp_path / "stream.json").read_text())
    assert saved["miou_with_background"] == result["miou_with_background"]
