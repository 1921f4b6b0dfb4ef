"""The Kotlin `AmsClient` (android/library) on a desktop JVM against the real `mobdistill serve`
process, through the real engine via JNI: frames go up as JPEG chunks, the server's packets are
applied between frames and the masks change; a dead server, garbage from a peer, a wrong key
and another model surface in the client's status while its analyzer keeps segmenting
(android/library/src/main/cpp/hostcheck/AmsClientCheck.kt does the device-side checks)."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading

import pytest
from live_harness import free_port, self_signed_certificate

from mobdistill.experiments.clips import resolve_clip
from mobdistill.video import read_frames


def test_kotlin_ams_client_against_the_real_server(android_host, live, tmp_path):
    state, work = tmp_path / "state", tmp_path / "jvm"
    work.mkdir()
    device = live.enrol(state)
    h, w = json.loads(live.manifest.read_text())["model"]["resolution"]
    read_frames(resolve_clip("carphone_pristine.mp4"), 120, size=(h, w)).tofile(work / "frames.rgb")
    port = free_port()
    runs: list[subprocess.CompletedProcess[str]] = []
    # The JVM starts while the server does: its offline checks overlap the server's start, and
    # its first client to this port retries until the server listens.
    check = threading.Thread(target=lambda: runs.append(android_host.run_check(
        "AmsClientCheckKt", str(work), str(live.manifest), str(android_host.runtime_lib),
        str(port), device.device_id.hex(), str(device.key_file), str(free_port()),
        timeout_s=180)))
    check.start()
    server = None
    try:
        # Big steps on every parameter, short phases: one phase must move the masks visibly
        # (lr 0.5 diverges to a model whose argmax can equal the base one's on this clip).
        # T_update 2 s: the server reads a device's ack behind its chunks, one phase per due
        # chunk, so fewer, larger chunks let the ack and BYE through within seconds.
        server = live.server(state, "--lr", "0.05", "--gamma", "1.0", "--iterations", "2",
                             "--t-update", "2.0", port=port)
    finally:
        check.join()
        if server is not None:
            assert server.stop() == 0
    run = runs[0]
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "AmsClient check passed" in run.stdout

    seen = json.loads((work / "ams_client.json").read_text())
    events = server.events
    dropped = {e["code"] for e in events if e["event"] == "dropped"}
    assert {"auth_failed", "wrong_model"} <= dropped, dropped
    # What the client says it uploaded and applied is what the server received and heard (a
    # chunk sent just before BYE may not have been decoded when the connection ended).
    uploaded = sum(e["frames"] for e in events if e["event"] == "frames")
    assert 0 < uploaded <= seen["frames_uploaded"]
    acks = {e["sequence"]: e for e in events if e["event"] == "ack"}
    trained = {e["sequence"] for e in events if e["event"] == "trained"}
    for update in seen["updates"]:
        assert update["sequence"] in trained
        assert acks[update["sequence"]]["status"] == "applied"
        assert acks[update["sequence"]]["swapped_frame"] == update["swapped_frame"]
    assert any(e["event"] == "bye" for e in events)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")
def test_kotlin_ams_client_over_tls(android_host, live, tmp_path):
    """The Kotlin client pins the server's self-signed certificate: frames go up and packets
    come down over TLS; with the JVM's default trust or without TLS nothing is sent
    (hostcheck/AmsClientTlsCheck.kt)."""
    state, work = tmp_path / "state", tmp_path / "jvm"
    work.mkdir()
    cert, key = self_signed_certificate(tmp_path)
    device = live.enrol(state)
    h, w = json.loads(live.manifest.read_text())["model"]["resolution"]
    read_frames(resolve_clip("carphone_pristine.mp4"), 120, size=(h, w)).tofile(work / "frames.rgb")
    # As the plain-TCP test: big steps, so one phase moves the masks; T_update 2 s.
    server = live.server(state, "--tls-cert", str(cert), "--tls-key", str(key), "--lr", "0.05",
                         "--gamma", "1.0", "--iterations", "2", "--t-update", "2.0")
    try:
        assert server.events[-1]["tls"] is True
        run = android_host.run_check(
            "AmsClientTlsCheckKt", str(work), str(live.manifest), str(android_host.runtime_lib),
            str(server.port), device.device_id.hex(), str(device.key_file), str(cert),
            timeout_s=180)
    finally:
        assert server.stop() == 0
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "AmsClient TLS check passed" in run.stdout
    seen = json.loads((work / "ams_client_tls.json").read_text())
    events = server.events
    uploaded = sum(e["frames"] for e in events if e["event"] == "frames")
    assert 0 < uploaded <= seen["frames_uploaded"]
    acks = {e["sequence"]: e for e in events if e["event"] == "ack"}
    for update in seen["updates"]:
        assert acks[update["sequence"]]["status"] == "applied"
        assert acks[update["sequence"]]["swapped_frame"] == update["swapped_frame"]
    # The two refused clients never got past TLS: one authenticated connection in all.
    assert sum(e["event"] == "connected" for e in events) == 1
