"""The fleet's placement on a real local Ray cluster (2 CPU slots, so 2 actors) with small
sessions: devices spread over the actors; an actor killed (SIGKILL) in the middle of a phase
loses nothing that was persisted: its sessions move to the other actor, restored from the
session store, and train on; a replacement actor joins and the load is balanced again."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import small_fleet  # noqa: E402

from mobdistill.contract import uplink  # noqa: E402
from mobdistill.server.fleet import Fleet, FleetOptions  # noqa: E402

ray = pytest.importorskip("ray")
# The actors unpickle the session builder; these test modules are not installed, so they travel
# by value.
ray.cloudpickle.register_pickle_by_value(small_fleet)
ray.cloudpickle.register_pickle_by_value(small_fleet.small_student)


def _chunk(seed: int) -> tuple[bytes, list[int]]:
    rng = np.random.default_rng(seed)
    blobs = [uplink.encode_jpeg(rng.integers(0, 256, (*small_fleet.RESOLUTION, 3), np.uint8))
             for _ in range(3)]
    return b"".join(blobs), [len(b) for b in blobs]


async def _upload(fleet: Fleet, device: bytes, t: float) -> bool:
    body, sizes = _chunk(int(t * 10) + device[0])
    ingested = await fleet.ingest(device, "jpeg", body, [t - 0.6, t - 0.3, t], sizes, t)
    return ingested.due


def test_devices_spread_move_when_an_actor_dies_and_rebalance(tmp_path):
    events: list[dict] = []
    resumed: list[tuple[bytes, str]] = []

    def status(event: str, **fields) -> None:
        events.append({"event": event, **fields})

    async def scenario() -> None:
        fleet = Fleet(small_fleet.build, small_fleet.RESOLUTION, tmp_path,
                      FleetOptions(local_cpus=2, watch_s=0.5), status)
        await fleet.start(lambda device, resume: resumed.append((device, resume.action)))
        try:
            devices = [small_fleet.SLOW_DEVICE, *(bytes([k]) * 16 for k in range(1, 4))]
            for d in devices:
                await fleet.open(d, b"k" * 32)
                await fleet.hello(d, 0.0, 0, 0)
            loads = sorted(len(t.devices) for t in fleet.trainers.values())
            assert loads == [2, 2]
            for d in devices:  # phase 1 everywhere: persisted in the session store
                assert await _upload(fleet, d, 1.0)
                assert (await fleet.train(d, 1.0)).sequence == 1
            victim = fleet.trainers[fleet.assigned[devices[0]]]
            moved = sorted(victim.devices)
            assert await _upload(fleet, devices[0], 2.0)
            phase = asyncio.ensure_future(fleet.train(devices[0], 2.0))
            await asyncio.sleep(0.3)  # the slow phase (600 iterations) runs on the victim
            os.kill(victim.pid, signal.SIGKILL)
            # The killed phase never reached the device: its session is back at 1, in step.
            assert await phase is None
            assert victim.index not in fleet.trainers
            for d in moved:
                assert fleet.assigned[d] != victim.index
                assert await _upload(fleet, d, 3.0)  # a refilled buffer: it trains on
                outcome = await fleet.train(d, 3.0)
                assert outcome is not None and outcome.sequence == 2
            for _ in range(240):  # the freed slot gets a new actor, and half the devices
                if len(fleet.trainers) == 2 and sorted(
                        len(t.devices) for t in fleet.trainers.values()) == [2, 2]:
                    break
                await asyncio.sleep(0.5)
            assert sorted(len(t.devices) for t in fleet.trainers.values()) == [2, 2]
            for d in devices:  # every session continues wherever it is now
                assert await _upload(fleet, d, 4.0)
                assert (await fleet.train(d, 4.0)).sequence == (3 if d in moved else 2)
        finally:
            await fleet.close()

    asyncio.run(scenario())
    lost = [e for e in events if e["event"] == "moved" and e["reason"] == "lost"]
    assert len(lost) == 2 and all(e["sequence"] == 1 and e["resume"] == "in_step" for e in lost)
    assert any(e["event"] == "moved" and e["reason"] == "rebalance" for e in events)
    assert [e["state"] for e in events if e["event"] == "actor"].count("up") == 3
    assert resumed == []  # nothing was sent that the restored sessions did not hold
