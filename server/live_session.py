"""One live device on the server: a `Session` plus what living on a network needs — per element
the sequence that last changed it (catch-up packets), persistence, and a clock that survives a
device restarting its own (docs/protocol.md, "Resuming")."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mobdistill.contract import uplink, wire
from mobdistill.contract.protocol import ProtocolError
from mobdistill.contract.wire import Mode
from mobdistill.server.error_feedback import ErrorFeedbackEncoder
from mobdistill.server.live_store import load_session, save_session
from mobdistill.server.session import LabelledFrame, Session, SparseDelta

IN_STEP, CATCH_UP, RESYNC = "in_step", "catch_up", "resync"


@dataclass(frozen=True)
class PhaseOutcome:
    """One training phase as the front end sends it (small and picklable: it crosses from a
    fleet's actor to the front end)."""

    sequence: int
    packet: bytes
    values: int
    loss_before: float
    loss_after: float
    train_wall_s: float


@dataclass
class ResumePacket:
    action: str  # catch_up | resync
    sequence: int
    mode: str
    packet: bytes
    values: int


class LiveSession:
    """Thread-safe wrapper: ingest (decode + label) and training run in worker threads; the
    asyncio front end only schedules them. Training holds ``lock`` for a whole phase (seconds);
    ingest labels outside it and, while a phase runs, parks its frames in ``pending`` (under
    its own short lock) instead of waiting, so the device's uplink and acks keep flowing."""

    def __init__(self, session: Session, state_path: Path | None,
                 snapshot: dict[str, Any] | None = None) -> None:
        self.session, self.state_path = session, state_path
        self.lock = threading.Lock()
        self.pending_lock = threading.Lock()
        self.pending: list[tuple[float, np.ndarray, np.ndarray]] = []  # (time, frame, labels)
        self.last_changed = {name: torch.zeros(session.params[name].numel(), dtype=torch.int64)
                             for name in session.space.mappings}
        self.clock_offset_s = 0.0  # session time = device time + offset (monotonic over restarts)
        self.last_time_s = 0.0
        if snapshot is None and state_path is not None:
            snapshot = load_session(state_path)
        if snapshot is not None:
            self._restore(snapshot)

    @property
    def device_id(self) -> bytes:
        return self.session.credentials.device_id

    @property
    def sequence(self) -> int:
        return self.session.sequence

    # ------------------------------------------------------------------------- clock
    def align_clock(self, device_time_s: float) -> None:
        """A device whose clock restarted (app restart) continues on the session's clock."""
        with self.lock:
            if device_time_s + self.clock_offset_s < self.last_time_s:
                self.clock_offset_s = self.last_time_s - device_time_s

    def session_time(self, device_time_s: float) -> float:
        return device_time_s + self.clock_offset_s

    # ------------------------------------------------------------------------- uplink
    def ingest(self, codec: str, body: bytes, times_s: list[float], jpeg_sizes: list[int] | None,
               upload_time_s: float, resolution: tuple[int, int]) -> bool:
        """Decodes and labels one chunk; True when a training phase is due at its upload time."""
        frames = decode_chunk(codec, body, len(times_s), jpeg_sizes, resolution)
        labelled = [(t, f, self.session.teacher.labels(f)) for t, f in zip(times_s, frames)]
        with self.pending_lock:
            self.pending.extend(labelled)
        if not self.lock.acquire(blocking=False):
            return False  # a phase is running: its end takes the frames, the next chunk decides
        try:
            self._take_pending()
            now = self.session_time(upload_time_s)
            self.last_time_s = max(self.last_time_s, now)
            return self.session.due(now)
        finally:
            self.lock.release()

    def _take_pending(self) -> None:
        """Moves parked frames into the session (caller holds ``lock``)."""
        with self.pending_lock:
            parked, self.pending = self.pending, []
        for t, frame, labels in parked:
            self.session.add_labelled(self.session_time(t), frame, labels)

    def rates(self) -> dict[str, Any]:
        r = self.session.rates
        return {"sample_fps": r.rate_fps, "upload_interval_s": r.update_interval_s,
                "hibernating": r.hibernating}

    # ------------------------------------------------------------------------- training
    def train(self, device_time_s: float) -> PhaseOutcome | None:
        """One phase if still due; the new state is on disk before the packet leaves."""
        with self.lock:
            self._take_pending()
            now = self.session_time(device_time_s)
            if not self.session.due(now):
                return None
            start = time.perf_counter()
            result = self.session.train_phase(now)
            wall = time.perf_counter() - start
            self._take_pending()
            self._mark(result.delta, result.sequence)
            self._persist()
            return PhaseOutcome(result.sequence, result.packet, result.num_changed,
                                result.loss_before, result.loss_after, wall)

    def _mark(self, delta: SparseDelta, sequence: int) -> None:
        for name, (idx, _) in delta.items():
            self.last_changed[name][idx] = sequence

    def resume(self, model_sequence: int, last_sequence: int) -> ResumePacket | None:
        """What brings a (re)connecting device in step with the server's student.

        ``model_sequence``: the packet whose result the device's running model holds (0: the
        pristine base, e.g. after an app restart); ``last_sequence``: the highest sequence the
        engine accepted (it refuses anything not above it). Same model: nothing. Behind but on
        the same engine: one cumulative packet with every element changed since then (values
        replace elements, so this equals all missed packets). Otherwise (base model, or a device
        ahead of the server's persisted state): a base-relative packet of every element ever
        changed."""
        with self.lock:
            s = self.session.sequence
            if model_sequence == s and last_sequence == s:
                return None
            if 0 < model_sequence < s and model_sequence == last_sequence:
                return self._resume_packet(CATCH_UP, model_sequence, model_sequence + 1,
                                           Mode.CUMULATIVE)
            return self._resume_packet(RESYNC, 0, max(s, last_sequence) + 1, Mode.BASE_RELATIVE)

    def resync(self, last_sequence: int) -> ResumePacket:
        with self.lock:
            return self._resume_packet(RESYNC, 0, max(self.session.sequence, last_sequence) + 1,
                                       Mode.BASE_RELATIVE)

    def _resume_packet(self, action: str, since: int, sequence: int, mode: Mode) -> ResumePacket:
        encoder = self.session.encoder
        if isinstance(encoder, ErrorFeedbackEncoder):  # QDELTA: no per-sequence mirrors kept,
            packet, patches = encoder.resync(sequence)  # so every resume starts from the base
            self._persist()
            return ResumePacket(RESYNC, sequence, Mode.BASE_RELATIVE.name.lower(), packet,
                                sum(len(p.indices) for p in patches))
        params = self.session.params
        delta = {}
        for name, changed in self.last_changed.items():
            idx = torch.nonzero(changed > since).reshape(-1)
            if idx.numel():
                delta[name] = (idx, params[name].detach().reshape(-1)[idx].clone())
        credentials = self.session.credentials
        space = self.session.space
        packet = wire.encode_update(space.to_patches(delta), base_sha256=space.base_sha256,
                                    sequence=sequence, device_id=credentials.device_id,
                                    hmac_key=credentials.hmac_key, mode=mode,
                                    value_coding=self.session.config.value_coding)
        self._mark(delta, sequence)
        self.session.encoder.sequence = sequence  # the next cumulative packet follows this one
        self._persist()
        return ResumePacket(action, sequence, mode.name.lower(), packet,
                            sum(len(i) for i, _ in delta.values()))

    # ------------------------------------------------------------------------- moving
    def release(self) -> tuple[dict[str, Any], list[LabelledFrame]]:
        """Everything another trainer needs to continue this session: (its state, persisted
        too, and its labelled frames)."""
        with self.lock:
            self._take_pending()
            self._persist()
            return self.snapshot(), list(self.session.buffer.items)

    def refill(self, frames: list[LabelledFrame]) -> None:
        with self.lock:
            for item in frames:
                self.session.buffer.add(item)

    # ------------------------------------------------------------------------- persistence
    def _persist(self) -> None:
        if self.state_path is not None:
            save_session(self.state_path, self.snapshot())

    def snapshot(self) -> dict[str, Any]:
        s = self.session
        opt, rates = s.optimizer, s.rates
        return {
            "device_id": self.device_id.hex(), "sequence": s.sequence,
            "params": {n: s.params[n].detach().clone() for n in s.space.mappings},
            "last_changed": self.last_changed,
            "optimizer": {"m": opt.m, "v": opt.v, "step_count": opt.step_count,
                          "last_update": opt.last_update},
            "rates": {"rate_fps": rates.rate_fps, "update_interval_s": rates.update_interval_s,
                      "hibernating": rates.hibernating, "evaluations": rates.evaluations,
                      "recent_rates": list(rates._rates)},
            "next_update_s": s.next_update_s, "clock_offset_s": self.clock_offset_s,
            "last_time_s": self.last_time_s,
            **({"error_feedback": s.encoder.state()}
               if isinstance(s.encoder, ErrorFeedbackEncoder) else {})}

    @torch.no_grad()
    def _restore(self, state: dict[str, Any]) -> None:
        s = self.session
        if state["device_id"] != self.device_id.hex():
            raise ProtocolError(f"{self.state_path} belongs to device {state['device_id']}")
        for name, value in state["params"].items():
            s.params[name].copy_(value)
        self.last_changed = state["last_changed"]
        s.encoder.sequence = int(state["sequence"])
        if isinstance(s.encoder, ErrorFeedbackEncoder) and "error_feedback" in state:
            s.encoder.restore(state["error_feedback"])
        opt = s.optimizer
        opt.m, opt.v = state["optimizer"]["m"], state["optimizer"]["v"]
        opt.step_count, opt.last_update = (state["optimizer"]["step_count"],
                                           state["optimizer"]["last_update"])
        rates = s.rates
        rates.rate_fps = float(state["rates"]["rate_fps"])
        rates.update_interval_s = float(state["rates"]["update_interval_s"])
        rates.hibernating = bool(state["rates"]["hibernating"])
        rates.evaluations = int(state["rates"]["evaluations"])
        rates._rates.extend(state["rates"]["recent_rates"])
        s.next_update_s = float(state["next_update_s"])
        self.clock_offset_s = float(state["clock_offset_s"])
        self.last_time_s = float(state["last_time_s"])


def decode_chunk(codec: str, body: bytes, count: int, jpeg_sizes: list[int] | None,
                 resolution: tuple[int, int]) -> list[np.ndarray]:
    """The frames of one uplink chunk, refused unless there are exactly ``count`` of the
    student's resolution."""
    try:
        if codec == "h264":
            frames = uplink.decode_h264(body)
        elif codec == "jpeg":
            if jpeg_sizes is None or sum(jpeg_sizes) != len(body) or min(jpeg_sizes, default=1) < 1:
                raise ProtocolError("jpeg chunk: jpeg_sizes must add up to the body", "malformed")
            offsets = np.cumsum([0, *jpeg_sizes])
            frames = [uplink.decode_jpeg(body[a:b]) for a, b in zip(offsets[:-1], offsets[1:])]
        else:
            raise ProtocolError(f"uplink codec {codec!r} is not h264 or jpeg", "unsupported")
    except ProtocolError:
        raise
    except Exception as err:  # a hostile chunk: the codec's own error, whatever its type
        raise ProtocolError(f"{codec} chunk does not decode: {err}", "bad_chunk") from None
    h, w = resolution
    if len(frames) != count or any(f.shape != (h, w, 3) for f in frames):
        raise ProtocolError(f"{codec} chunk decoded to {len(frames)} frames, expected {count} of "
                            f"{h}x{w}", "bad_chunk")
    return frames
