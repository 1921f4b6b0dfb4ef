"""The sessions one trainer holds: in the `mobdistill serve` process itself, or inside one Ray
actor of a fleet (`server/fleet.py`). Every call names its device; the front end (`server/live.py`)
decides which host holds which device and keeps the connections.

A session moves between live hosts whole: `release` hands back its state (persisted too) and
its labelled frames, `open` continues it from them on the new host. A host that dies hands back
nothing: its sessions come back from the session store (``--state-dir``, written after every
training phase) and refill their buffers from the next uploads; without a store they start
again from the base model (and the device is resynced to it).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from mobdistill.errors import UsageError
from mobdistill.server.live_session import LiveSession, PhaseOutcome, ResumePacket
from mobdistill.server.live_store import session_path
from mobdistill.server.session import LabelledFrame, Session

SessionFactory = Callable[[bytes, bytes | None], Session]  # (device id, key or None) -> Session


@dataclass(frozen=True)
class SessionInfo:
    sequence: int
    restored: bool
    base_sha256: bytes


@dataclass
class Handover:
    """A released session: its state (as the store keeps it) and its labelled frames."""

    state: dict[str, Any] | None = None
    frames: list[LabelledFrame] = field(default_factory=list)


@dataclass(frozen=True)
class Ingested:
    due: bool
    rates: dict[str, Any]


class SessionHost:
    """Thread-safe: calls for different devices may run at once (ingest beside a phase);
    each session serialises its own work under its lock."""

    def __init__(self, factory: SessionFactory, resolution: tuple[int, int],
                 state_dir: Path | None) -> None:
        self.factory, self.resolution, self.state_dir = factory, resolution, state_dir
        self.sessions: dict[bytes, LiveSession] = {}
        self.lock = threading.Lock()

    def _get(self, device: bytes) -> LiveSession:
        with self.lock:
            live = self.sessions.get(device)
        if live is None:
            raise UsageError(f"device {device.hex()} has no session on this trainer")
        return live

    def open(self, device: bytes, key: bytes | None,
             handover: Handover | None = None) -> SessionInfo:
        """The device's session, created on first use: from ``handover`` when it moves here
        from a live host, else restored from the store (or fresh)."""
        with self.lock:
            live = self.sessions.get(device)
            restored = False
            if live is None:
                state = session_path(self.state_dir, device) if self.state_dir else None
                live = LiveSession(self.factory(device, key), state,
                                   handover.state if handover else None)
                if handover is not None:
                    live.refill(handover.frames)
                self.sessions[device] = live
                restored = live.sequence > 0
        return SessionInfo(live.sequence, restored, live.session.space.base_sha256)

    def hello(self, device: bytes, device_time_s: float, model_sequence: int,
              last_sequence: int) -> tuple[ResumePacket | None, dict[str, Any], int]:
        """A (re)connecting device: (what brings it in step, the rates, the server sequence)."""
        live = self._get(device)
        live.align_clock(device_time_s)
        resume = live.resume(model_sequence, last_sequence)
        return resume, live.rates(), live.sequence

    def resume(self, device: bytes, model_sequence: int,
               last_sequence: int) -> ResumePacket | None:
        return self._get(device).resume(model_sequence, last_sequence)

    def ingest(self, device: bytes, codec: str, body: bytes, times_s: list[float],
               jpeg_sizes: list[int] | None, upload_time_s: float) -> Ingested:
        live = self._get(device)
        due = live.ingest(codec, body, times_s, jpeg_sizes, upload_time_s, self.resolution)
        return Ingested(due, live.rates())

    def train(self, device: bytes, device_time_s: float) -> PhaseOutcome | None:
        return self._get(device).train(device_time_s)

    def resync(self, device: bytes, last_sequence: int) -> ResumePacket:
        return self._get(device).resync(last_sequence)

    def release(self, device: bytes) -> Handover:
        """Persists the session and forgets it here; what the next host continues from."""
        with self.lock:
            live = self.sessions.pop(device, None)
        if live is None:
            return Handover()
        state, frames = live.release()
        return Handover(state, frames)

    def devices(self) -> list[bytes]:
        with self.lock:
            return list(self.sessions)
