"""`mobdistill serve --ray` end to end: a local Ray cluster with 2 CPU slots (2 training
actors), two real host clients playing real clips; the actor holding one device is SIGKILLed
while the clients play: its session moves to the other actor, restored from the session store,
and the device keeps receiving updates it can apply."""

from __future__ import annotations

import os
import signal
import time

import pytest
from live_harness import applied, finish, wait_for

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


@pytest.mark.slow  # a Ray cluster, two actors and two clients: ~1-2 min on a loaded 2-core host
def test_ray_fleet_with_real_clients_survives_a_killed_actor(live, tmp_path):
    state = tmp_path / "state"
    devices = [live.enrol(state, name) for name in ("one", "two")]
    server = live.server(state, "--ray", "--ray-cpus", "2", timeout_s=300)
    try:
        actors = {e["actor"]: e["pid"] for e in server.events
                  if e["event"] == "actor" and e["state"] == "up"}
        assert len(actors) == 2
        clients = [live.client(server.port, device, tmp_path / f"out-{k}",
                               videos=("bikes.mp4",) * 6,  # 60 s: room for phases after the move
                               max_frames=None)
                   for k, device in enumerate(devices)]
        victim = devices[0].device_id.hex()
        first = wait_for(server, "trained", 180, device=victim)
        assert {e["slot"] for e in server.events if e["event"] == "trained"} <= {"0", "1"}
        os.kill(actors[int(first["slot"])], signal.SIGKILL)
        moved = wait_for(server, "moved", 120, device=victim, reason="lost")
        later = _trained_after(server, victim, server.events.index(moved), 180)
        summaries = [finish(c, timeout_s=240) for c in clients]
    finally:
        assert server.stop(60) == 0
    assert moved["source"] == int(first["slot"]) and moved["sequence"] >= first["sequence"]
    assert later["sequence"] > moved["sequence"]
    for summary in summaries:
        assert summary["engine_stats"]["updates"]["rejected"] == 0, summary["updates"]
        assert applied(summary)
    sequences = [u["sequence"] for u in applied(summaries[0])]
    assert max(sequences) >= later["sequence"]  # the device applied what the new actor trained
    assert summaries[0]["counters"]["connections"] == 1  # it never noticed the move
