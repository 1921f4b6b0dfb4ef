"""`mobdistill serve --ray` end to end: a local Ray cluster with 2 CPU slots (2 training
actors), two real host clients playing real clips; the actor holding one device is SIGKILLed
while the clients play: its session moves to the other actor, restored from the session store,
and the device keeps receiving updates it can apply."""

from __future__ import annotations

import os
import signal
import time

import pytest
from conftest import client, finish, serve

from mobdistill.server.live_store import DeviceRegistry

pytest.importorskip("ray")


def _trained_after(server, device: str, index: int, timeout_s: float) -> dict:
    """The first phase of ``device`` that the server reports after event ``index``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for e in server.events[index:]:
            if e["event"] == "trained" and e["device"] == device:
                return e
        time.sleep(0.1)
    raise AssertionError(f"{device} was not trained again: {server.events[-5:]}")


def _applied(summary: dict) -> list[dict]:
    return [u for u in summary["updates"] if (u["engine"] or {}).get("status") == "applied"]


@pytest.mark.slow  # a Ray cluster, two actors and two clients: ~1-2 min on a loaded 2-core host
def test_ray_fleet_with_real_clients_survives_a_killed_actor(fleet_student, tmp_path):
    cache, manifest = fleet_student
    state = tmp_path / "state"
    registry = DeviceRegistry(state / "devices.json")
    devices = []
    for name in ("one", "two"):
        entry = registry.enroll(name)
        key = tmp_path / f"{name}.key"
        key.write_bytes(entry.key)
        key.chmod(0o600)
        devices.append((entry.device_id, key))
    server = serve(cache, state, "--ray", "--ray-cpus", "2")
    try:
        port = server.port
        actors = {e["actor"]: e["pid"] for e in server.events
                  if e["event"] == "actor" and e["state"] == "up"}
        assert len(actors) == 2
        clients = [client(port, manifest, d, key, tmp_path / f"out-{k}",
                          ("bikes.mp4",) * 6)  # 60 s: room for phases after the move
                   for k, (d, key) in enumerate(devices)]
        victim = devices[0][0].hex()
        first = server.wait_for("trained", 180, device=victim)
        assert {e["slot"] for e in server.events if e["event"] == "trained"} <= {"0", "1"}
        os.kill(actors[int(first["slot"])], signal.SIGKILL)
        moved = server.wait_for("moved", 120, device=victim, reason="lost")
        later = _trained_after(server, victim, server.events.index(moved), 180)
        summaries = [finish(c, tmp_path / f"out-{k}") for k, c in enumerate(clients)]
    finally:
        assert server.stop() == 0
    assert moved["source"] == int(first["slot"]) and moved["sequence"] >= first["sequence"]
    assert later["sequence"] > moved["sequence"]
    for summary in summaries:
        assert summary["engine_stats"]["updates"]["rejected"] == 0, summary["updates"]
        assert _applied(summary)
    applied = [u["sequence"] for u in _applied(summaries[0])]
    assert max(applied) >= later["sequence"]  # the device applied what the new actor trained
    assert summaries[0]["counters"]["connections"] == 1  # it never noticed the move
