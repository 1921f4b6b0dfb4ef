"""`mobdistill serve --ray [ADDRESS]`: the sessions on Ray actors, one per CPU (or GPU) slot of
the cluster, while the front end (`server/live.py`) keeps every connection (docs/fleet.md).

Each actor is a `SessionHost` with its own teacher and student copies. A device's session lives
on one actor; new devices go to the least loaded one. Every few seconds the fleet compares its
actors with the cluster's slots: it starts actors when slots appear (a node joined, an actor
died and freed its slot) and then moves sessions from the most to the least loaded actor
(whole: state and labelled frames). An actor that dies (its process killed, its node gone)
fails the calls waiting on it; its sessions are placed on the other actors, restored from the
session store, and a device whose model is ahead of or behind the restored state gets the
catch-up or resync packet that brings it in step. Calls for one device are serialised, so a
move never races a phase or an upload of the same device.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Hashable

from mobdistill.contract.protocol import ProtocolError
from mobdistill.errors import UsageError
from mobdistill.server.live_session import PhaseOutcome, ResumePacket
from mobdistill.server.session_host import (
    Handover,
    Ingested,
    SessionFactory,
    SessionHost,
    SessionInfo,
)

log = logging.getLogger(__name__)
Status = Callable[..., None]
ACTOR_START_S = 300.0  # an actor loads torch, the teacher and the student before it is ready


@dataclass(frozen=True)
class FleetOptions:
    address: str | None = None  # None: a new local cluster inside this process
    local_cpus: int | None = None  # the local cluster's CPU slots (default: this machine's)
    actor_cpus: float = 1.0
    actor_gpus: float = 0.0
    max_actors: int | None = None
    watch_s: float = 2.0  # how often actors are matched to the cluster's slots


class TrainerActor:
    """The body of one Ray actor: a `SessionHost` built in the actor's own process."""

    def __init__(self, build: Callable[[], SessionFactory], resolution: tuple[int, int],
                 state_dir: Path | None) -> None:
        self.host = SessionHost(build(), resolution, state_dir)

    def where(self) -> tuple[int, str]:
        import os

        import ray

        return os.getpid(), ray.get_runtime_context().get_node_id()

    def call(self, method: str, *args: Any) -> Any:
        return getattr(self.host, method)(*args)


@dataclass
class Trainer:
    index: int
    handle: Any  # ray.actor.ActorHandle
    pid: int
    node: str
    devices: set[bytes] = field(default_factory=set)


class TrainerLost(Exception):
    def __init__(self, trainer: Trainer) -> None:
        super().__init__(f"trainer {trainer.index} died")
        self.trainer = trainer


class Fleet:
    """`Sessions` on Ray actors (see the module docstring); one phase per actor at a time."""

    def __init__(self, build: Callable[[], SessionFactory], resolution: tuple[int, int],
                 state_dir: Path | None, options: FleetOptions, status: Status) -> None:
        self.build, self.resolution, self.state_dir = build, resolution, state_dir
        self.options, self.status = options, status
        self.workers = options.max_actors or 64
        self.trainers: dict[int, Trainer] = {}
        self.assigned: dict[bytes, int] = {}
        self.keys: dict[bytes, bytes | None] = {}
        self.held: dict[bytes, int] = {}  # the sequence each device holds once sent packets land
        self.device_locks: dict[bytes, asyncio.Lock] = {}
        self.placing = asyncio.Lock()
        self.numbers = itertools.count()
        self.on_resume: Callable[[bytes, ResumePacket], None] = lambda device, resume: None

    # ------------------------------------------------------------------------- cluster
    async def start(self, on_resume: Callable[[bytes, ResumePacket], None]) -> None:
        import ray

        self.on_resume = on_resume
        if self.options.address is None:
            # A short temp folder: Ray's socket paths must fit 107 bytes.
            ray.init(address="local", num_cpus=self.options.local_cpus,
                     include_dashboard=False, log_to_driver=False,
                     _temp_dir=tempfile.mkdtemp(prefix="mdray-", dir="/tmp"))
        else:
            ray.init(address=self.options.address, log_to_driver=False)
        resources = ray.cluster_resources()
        self.status("cluster", address=self.options.address or "local",
                    cpus=resources.get("CPU", 0), gpus=resources.get("GPU", 0),
                    slots=self._slots())
        await self._grow()
        if not self.trainers:
            raise UsageError("the Ray cluster has no slot for a trainer (--ray-actor-cpus/gpus "
                             "ask for more than any node offers)")
        self.watcher = asyncio.ensure_future(self._watch())

    def _slots(self) -> int:
        import ray

        resources = ray.cluster_resources()
        slots = int(resources.get("CPU", 0) // self.options.actor_cpus)
        if self.options.actor_gpus > 0:
            slots = min(slots, int(resources.get("GPU", 0) // self.options.actor_gpus))
        return min(slots, self.options.max_actors or slots)

    async def _grow(self) -> None:
        """Starts actors up to the cluster's slots, at once."""
        missing = self._slots() - len(self.trainers)
        if missing > 0:
            await asyncio.gather(*(self._start_actor() for _ in range(missing)))

    async def _start_actor(self) -> None:
        import ray

        remote: Any = ray.remote(TrainerActor).options(
            num_cpus=self.options.actor_cpus, num_gpus=self.options.actor_gpus,
            max_concurrency=2, max_restarts=0)  # ingest beside a phase; death is handled here
        handle: Any = remote.remote(self.build, self.resolution, self.state_dir)
        try:
            pid, node = await asyncio.wait_for(handle.where.remote(), ACTOR_START_S)
        except (asyncio.TimeoutError, ray.exceptions.RayError) as err:
            ray.kill(handle)
            self.status("actor", state="failed", message=str(err)[-1500:])
            return
        trainer = Trainer(next(self.numbers), handle, pid, node)
        self.trainers[trainer.index] = trainer
        self.status("actor", state="up", actor=trainer.index, pid=pid, node=node)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.options.watch_s)
            try:
                await self._grow()
                await self._rebalance()
            except Exception:  # the watch must outlive a failed start or move
                log.exception("fleet watch")

    async def close(self) -> None:
        import ray

        self.watcher.cancel()
        await asyncio.gather(self.watcher, return_exceptions=True)
        ray.shutdown()

    # ------------------------------------------------------------------------- placement
    def slot(self, device: bytes) -> Hashable:
        return self.assigned.get(device)

    def _lock(self, device: bytes) -> asyncio.Lock:
        return self.device_locks.setdefault(device, asyncio.Lock())

    def _least_loaded(self, excluding: int | None = None) -> Trainer:
        candidates = [t for t in self.trainers.values() if t.index != excluding]
        if not candidates:
            raise ProtocolError("no trainer is alive in the fleet; try again later",
                                "unavailable")
        return min(candidates, key=lambda t: (len(t.devices), t.index))

    async def _remote(self, trainer: Trainer, method: str, *args: Any) -> Any:
        import ray

        try:
            return await trainer.handle.call.remote(method, *args)
        except ray.exceptions.RayActorError:
            raise TrainerLost(trainer) from None
        except ray.exceptions.RayTaskError as err:  # the host's own error, e.g. a bad chunk
            cause = err.cause
            raise cause if isinstance(cause, Exception) else err from None

    async def _place(self, device: bytes, handover: Handover | None, reason: str,
                     excluding: int | None = None) -> SessionInfo:
        """Opens the device's session on the least loaded trainer; brings the device in step
        when the session moved. The caller holds ``placing``, then the device's lock (always in
        this order)."""
        while True:
            target = self._least_loaded(excluding)
            try:
                info = await self._remote(target, "open", device, self.keys[device], handover)
                resume = None
                if device in self.held:  # the device has been served before: where is it?
                    held = self.held[device]
                    resume = await self._remote(target, "resume", device, held, held)
            except TrainerLost as lost:
                await self._forget(lost.trainer)
                continue
            previous = self.assigned.get(device)
            if previous is not None and previous in self.trainers:
                self.trainers[previous].devices.discard(device)
            target.devices.add(device)
            self.assigned[device] = target.index
            if previous is not None:
                self.status("moved", device=device.hex(), source=previous, target=target.index,
                            reason=reason, sequence=info.sequence,
                            resume=resume.action if resume else "in_step")
            if resume is not None:
                self.held[device] = resume.sequence
                self.on_resume(device, resume)
            return info

    async def _forget(self, trainer: Trainer) -> list[bytes]:
        """A dead trainer: out of the fleet; its devices lose their placement."""
        if self.trainers.pop(trainer.index, None) is None:
            return []
        self.status("actor", state="lost", actor=trainer.index, pid=trainer.pid,
                    devices=len(trainer.devices))
        return sorted(trainer.devices)

    async def _lost(self, trainer: Trainer) -> None:
        """Places every session of a dead trainer on the others, restored from the store."""
        async with self.placing:
            for device in await self._forget(trainer):
                async with self._lock(device):
                    if self.assigned.get(device) == trainer.index:
                        await self._place(device, None, "lost")

    async def _rebalance(self) -> None:
        """Moves sessions, whole, from the most to the least loaded trainer until the loads
        differ by at most one."""
        async with self.placing:
            while len(self.trainers) > 1:
                busiest = max(self.trainers.values(), key=lambda t: (len(t.devices), -t.index))
                idlest = self._least_loaded()
                if len(busiest.devices) - len(idlest.devices) < 2:
                    return
                device = min(busiest.devices)
                async with self._lock(device):
                    try:
                        handover = await self._remote(busiest, "release", device)
                    except TrainerLost as lost:
                        await self._forget(lost.trainer)
                        continue
                    await self._place(device, handover, "rebalance", excluding=busiest.index)

    # ------------------------------------------------------------------------- sessions
    async def _ensure_placed(self, device: bytes, reason: str) -> None:
        async with self.placing:
            async with self._lock(device):
                if self.assigned.get(device) not in self.trainers:
                    await self._place(device, None, reason)

    async def _call(self, device: bytes, method: str, *args: Any) -> Any:
        """One host call on the device's trainer; a trainer found dead is replaced (its
        sessions placed elsewhere) and the call tried there."""
        for _ in range(4):
            if self.assigned.get(device) not in self.trainers:
                await self._ensure_placed(device, "lost")
            async with self._lock(device):
                trainer = self.trainers.get(self.assigned.get(device, -1))
                if trainer is None:
                    continue
                try:
                    return await self._remote(trainer, method, device, *args)
                except TrainerLost:
                    pass
            await self._lost(trainer)  # outside the device's lock: placing comes first
        raise ProtocolError("the fleet keeps losing this device's trainer", "unavailable")

    async def open(self, device: bytes, key: bytes | None) -> SessionInfo:
        self.keys[device] = key
        if device not in self.assigned:
            await self._ensure_placed(device, "new")
        info: SessionInfo = await self._call(device, "open", key, None)
        return info

    async def hello(self, device: bytes, device_time_s: float, model_sequence: int,
                    last_sequence: int) -> tuple[ResumePacket | None, dict[str, Any], int]:
        resume, rates, sequence = await self._call(device, "hello", device_time_s,
                                                   model_sequence, last_sequence)
        self.held[device] = resume.sequence if resume else model_sequence
        return resume, rates, sequence

    async def ingest(self, device: bytes, codec: str, body: bytes, times_s: list[float],
                     jpeg_sizes: list[int] | None, upload_time_s: float) -> Ingested:
        ingested: Ingested = await self._call(device, "ingest", codec, body, times_s,
                                              jpeg_sizes, upload_time_s)
        return ingested

    async def train(self, device: bytes, device_time_s: float) -> PhaseOutcome | None:
        outcome: PhaseOutcome | None = await self._call(device, "train", device_time_s)
        if outcome is not None:
            self.held[device] = outcome.sequence
        return outcome

    async def resync(self, device: bytes, last_sequence: int) -> ResumePacket:
        resume: ResumePacket = await self._call(device, "resync", last_sequence)
        self.held[device] = resume.sequence
        return resume
