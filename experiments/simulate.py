"""The server side of a stream, simulated in video time: uplink, training, packets, the link.

AMS (and one-time): the device samples frames at the ASR rate and uplinks its buffer every
T_update; the server labels what it received, re-evaluates ASR and ATR every δt and trains at
every upload (`server.Session`). JIT: each teacher frame (t ≡ 0 mod δ, real frames) goes up
alone; a frame the server trained on yields a sparse packet (`server.JitDistiller`).
A packet is ready at *its event time (or when the busy server frees up) + uplink transfer +
measured training cost / server_speedup*; the cost is the CPU seconds the training took (all
threads of this process), so other jobs on the host do not delay packets. All packets are
cumulative (each applies to the device's current model), so none may be skipped: `deliver` sends
them in order, back to back when a link cap is set, and marks those that arrive after the
stream's end ``late``.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from mobdistill.contract import uplink
from mobdistill.contract.wire import ValueCoding
from mobdistill.experiments.clips import Stream
from mobdistill.experiments.config import StreamConfig
from mobdistill.server.error_feedback import ErrorFeedbackEncoder
from mobdistill.server.jit import JitConfig, JitDistiller
from mobdistill.server.rates import AdaptiveRates
from mobdistill.server.session import (
    DeployedSpace,
    PacketEncoder,
    ServerConfig,
    Session,
    UpdateCredentials,
)
from mobdistill.server.teachers import Teacher

log = logging.getLogger(__name__)


@dataclass
class PlannedUpdate:
    """One packet from the server's point of view, then the link's, then the device's."""

    sequence: int
    packet: bytes = field(repr=False)
    values: int
    boundary_s: float
    ready_s: float
    train_cpu_s: float
    loss_before: float | None = None
    loss_after: float | None = None
    status: str = "pending"  # delivered | late (arrives after the stream ended)
    sent_s: float | None = None
    arrival_s: float | None = None
    arrival_frame: int | None = None


@dataclass
class Uplink:
    """Counts what the device sends up; the server trains on the decoded frames."""

    codec: str
    bitrate_kbps: float
    bytes: int = 0
    frames: int = 0
    chunks: int = 0

    def send(self, stream: Stream, picks: list[int]) -> uplink.UplinkChunk:
        chunk = uplink.send([stream.frames[i] for i in picks],
                            [float(stream.times_s[i]) for i in picks],
                            codec=self.codec, bitrate_kbps=self.bitrate_kbps)
        self.bytes += chunk.num_bytes
        self.frames += len(picks)
        self.chunks += 1 if picks else 0
        return chunk


@dataclass
class ServerWork:
    """What the teacher and the trainer did: frames the teacher labelled for training and
    gradient steps taken (JITNet's cost: its speedup counts both)."""

    teacher_frames: int = 0
    train_steps: int = 0


def _transfer_s(num_bytes: int, link_mbps: float | None) -> float:
    return num_bytes * 8 / (link_mbps * 1e6) if link_mbps else 0.0


def scaled_rates(config: StreamConfig) -> AdaptiveRates:
    """ASR/ATR with the paper's constants on the stream clock (rates / scale, times · scale)."""
    s = config.time_scale
    return AdaptiveRates(update_interval_s=config.update_interval_s,
                         asr_interval_s=config.asr_interval_s, rate_fps=1.0 / s,
                         r_min=0.1 / s, r_max=1.0 / s, hibernate_below_fps=0.25 / s,
                         wake_above_fps=0.35 / s, hibernate_step_s=2.0 * s)


def server_config(config: StreamConfig) -> ServerConfig:
    return ServerConfig(horizon_s=config.horizon_s, update_interval_s=config.update_interval_s,
                        asr_interval_s=config.asr_interval_s, iterations=config.iterations,
                        batch_size=config.batch_size, lr=config.lr, gamma=config.gamma,
                        selection=config.selection,
                        value_coding=ValueCoding[config.value_coding.upper()],
                        delta_scope=config.delta_scope, seed=config.seed)


def simulate(stream: Stream, student: torch.nn.Module,
             manifest: Mapping[str, Any], teacher: Teacher,
             config: StreamConfig, link: Uplink,
             credentials: UpdateCredentials,
             work: ServerWork | None = None) -> list[PlannedUpdate]:
    work = work if work is not None else ServerWork()
    if config.scheme == "none":
        return []
    if config.scheme == "jit":
        return simulate_jit(stream, student, manifest, teacher, config, link, credentials, work)
    return simulate_ams(stream, student, manifest, teacher, config, link, credentials, work)


def one_time_settings(config: StreamConfig) -> StreamConfig:
    """One-Time (§4.1): one phase at the end of the first 60 s (time-scaled) on the frames
    sampled until then, training the whole model (γ = 1), as many steps as AMS takes in 60 s."""
    return replace(config, t_update_s=config.one_time_s, gamma=1.0,
                   iterations=config.one_time_iterations)


def simulate_ams(stream: Stream, student: torch.nn.Module,
                 manifest: Mapping[str, Any], teacher: Teacher,
                 config: StreamConfig, link: Uplink,
                 credentials: UpdateCredentials, work: ServerWork) -> list[PlannedUpdate]:
    """Events in time order: samples at the current ASR rate, an upload (and training phase)
    every T_update, an ASR/ATR evaluation every δt; one-time stops after its first phase."""
    session = Session("stream", student, manifest, teacher, server_config(config),
                      credentials=credentials, rates=scaled_rates(config))
    rates = session.rates
    planned: list[PlannedUpdate] = []
    buffered: list[int] = []
    next_sample, server_free, upload_s = 0.0, 0.0, rates.update_interval_s
    while (now := min(upload_s, rates.next_evaluation_s)) < stream.duration_s:
        while next_sample < now:
            buffered.append(min(stream.frame_at(next_sample), len(stream.frames) - 1))
            next_sample += 1.0 / rates.rate_fps
        uploading = upload_s <= now + 1e-9
        if uploading:
            chunk = link.send(stream, buffered)
            for i, frame in zip(buffered, chunk.decoded):
                session.add_frame(float(stream.times_s[i]), frame)
            work.teacher_frames += len(buffered)
            buffered = []
        session.tick(now)
        if not uploading:
            continue
        upload_s = now + rates.update_interval_s
        if not session.buffer.items:
            continue
        begin = max(now + _transfer_s(chunk.num_bytes, config.link_mbps), server_free)
        cpu = time.process_time()
        result = session.train_phase(now)
        cpu = time.process_time() - cpu
        work.train_steps += config.iterations
        server_free = begin + cpu / config.server_speedup
        planned.append(PlannedUpdate(result.sequence, result.packet, result.num_changed, now,
                                     server_free, cpu, result.loss_before, result.loss_after))
        log.info("ams update %d at %.2fs: %d values, %d B, train %.1f CPU-s, rate %.2f fps, "
                 "T_update %.2fs", result.sequence, now, result.num_changed, len(result.packet),
                 cpu, rates.rate_fps, rates.update_interval_s)
        if config.scheme == "one-time":
            break
    return planned


def simulate_jit(stream: Stream, student: torch.nn.Module,
                 manifest: Mapping[str, Any], teacher: Teacher,
                 config: StreamConfig, link: Uplink,
                 credentials: UpdateCredentials, work: ServerWork) -> list[PlannedUpdate]:
    """JIT (Alg. 1) on the server with γ-sparse gradient-guided updates (AMS §4.1)."""
    model = copy.deepcopy(student).eval()
    space = DeployedSpace(manifest, model)
    for name, p in model.named_parameters():
        p.requires_grad_(name in space.mappings)  # what the deployed file cannot hold stays fixed
    distiller = JitDistiller(model, teacher, JitConfig(threshold=config.jit_threshold,
                                                       gamma=config.gamma,
                                                       box_weight=config.jit_box_weight,
                                                       seed=config.seed),
                             trainable=list(space.mappings))
    coding = ValueCoding[config.value_coding.upper()]
    # QDELTA packets carry quantized residuals, not values: the same encoder as AMS's sessions
    encoder: PacketEncoder | ErrorFeedbackEncoder = (
        ErrorFeedbackEncoder.for_session(space, credentials, manifest, distiller.params)
        if coding == ValueCoding.QDELTA else PacketEncoder(space, credentials, coding))
    planned: list[PlannedUpdate] = []
    server_free = 0.0
    while (i := distiller.next_teacher_frame) < len(stream.frames):
        distiller.index = i  # frames in between run on the device only
        if config.colocated:  # the teacher sees the frame itself; the update is in time for it
            frame, begin = stream.frames[i], float(stream.times_s[i])
        else:
            chunk = link.send(stream, [i])
            frame = chunk.decoded[0]
            begin = max(float(stream.times_s[i])
                        + _transfer_s(chunk.num_bytes, config.link_mbps), server_free)
        cpu = time.process_time()
        step = distiller.step(frame)
        if step.delta:
            packet, patches = encoder.encode(step.delta)
            encoder.mirror(distiller.params, patches)
        cpu = time.process_time() - cpu
        server_free = begin if config.colocated else begin + cpu / config.server_speedup
        work.teacher_frames += 1
        work.train_steps += step.updates
        if step.delta:
            planned.append(PlannedUpdate(encoder.sequence, packet,  # values on the wire
                                         sum(len(p.indices) for p in patches),
                                         float(stream.times_s[i]), server_free, cpu))
    log.info("jit: %d teacher frames, %d steps, %d packets", work.teacher_frames,
             work.train_steps, len(planned))
    return planned


def deliver(planned: list[PlannedUpdate], stream: Stream, link_mbps: float | None) -> None:
    """In sequence order, one transfer at a time (instant without a cap); a packet arriving
    after the last frame is ``late``."""
    t_free = 0.0
    for p in sorted(planned, key=lambda p: p.sequence):
        p.sent_s = max(t_free, p.ready_s)
        p.arrival_s = t_free = p.sent_s + _transfer_s(len(p.packet), link_mbps)
        frame = stream.frame_at(p.arrival_s)
        p.status = "delivered" if frame < len(stream.frames) else "late"
        p.arrival_frame = frame if p.status == "delivered" else None
