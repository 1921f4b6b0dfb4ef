"""`mobdistill stream`: a simulated server in video time, the real engine as the device.

The steps, one module each: `config` (what a run is), `clips` (the stream), `student` (the
pretrained, exported starting point), `simulate` (the server: uplink, training, packets, link),
`replay` (the engine replays every frame and swaps in the packets), `report` (the JSON and
logs), scored by `evaluate`. docs/streaming.md describes the design and its clocks.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from mobdistill.experiments.clips import load_stream
from mobdistill.experiments.config import StreamConfig
from mobdistill.experiments.replay import packet_name, replay_engine, runner_of
from mobdistill.experiments.report import (
    Scores,
    StreamResult,
    build_result,
    tracking_downlink,
    write_logs,
)
from mobdistill.experiments.simulate import (
    ServerWork,
    Uplink,
    deliver,
    one_time_settings,
    simulate,
)
from mobdistill.experiments.student import prepare_student
from mobdistill.experiments.tracking import run_remote_tracking
from mobdistill.server.session import UpdateCredentials
from mobdistill.server.teachers import Teacher, load_teacher


def run_stream(config: StreamConfig, *, out_dir: Path, device=None, cache: Path | None = None,
               teacher: Teacher | None = None) -> StreamResult:
    """Simulate the server, replay on the engine, evaluate against the teacher."""
    from mobdistill.export.manifest import load as load_manifest
    from mobdistill.runtime.device import LocalDevice

    timings: dict[str, float] = {}
    out = Path(out_dir)
    (out / "packets").mkdir(parents=True, exist_ok=True)
    device = device or LocalDevice()
    torch.set_num_threads(config.num_threads)
    teacher = teacher or load_teacher(config.teacher, class_names=config.teacher_classes,
                                      activation=config.teacher_activation)
    if config.scheme == "remote-tracking":
        return _run_remote_tracking(config, out, teacher, timings)
    if config.scheme == "one-time":
        config = one_time_settings(config)  # what ran is what the result records
    credentials = UpdateCredentials.new(insecure=config.insecure_updates)
    with _timed(timings, "student"):
        student, manifest_path = prepare_student(config, teacher, cache=cache)
    manifest = load_manifest(manifest_path)
    with _timed(timings, "stream"):
        stream = load_stream(config.videos, config.resolution, config.max_frames_per_clip)
        labels = np.stack([teacher.labels(f) for f in stream.frames])
    link = Uplink(config.uplink_codec, config.uplink_kbps)
    work = ServerWork()
    with _timed(timings, "server"):
        planned = simulate(stream, student, manifest, teacher, config, link, credentials, work)
        deliver(planned, stream, config.link_mbps)
    for p in planned:
        (out / "packets" / packet_name(p.sequence)).write_bytes(p.packet)
    delivered = [p for p in planned if p.status == "delivered"]
    with _timed(timings, "device"):
        masks, records, events = replay_engine(stream, manifest_path, delivered, config, out,
                                               device, credentials)
    scores = Scores.of(masks, labels, teacher.num_classes)
    result = build_result(config, stream, scores, records, events, planned, link, out, timings)
    result.server, result.runner = asdict(work), runner_of(device)
    write_logs(out, stream, result, records, scores)
    return result


def _run_remote_tracking(config: StreamConfig, out: Path, teacher: Teacher,
                         timings: dict[str, float]) -> StreamResult:
    """Teacher labels of sampled frames, tracked on the device side; no student, no engine."""
    with _timed(timings, "stream"):
        stream = load_stream(config.videos, config.resolution, config.max_frames_per_clip)
        labels = np.stack([teacher.labels(f) for f in stream.frames])
    with _timed(timings, "device"):
        tracked = run_remote_tracking(stream, teacher, config)
    link = Uplink("jpeg", 0.0, tracked.uplink_bytes, len(tracked.sampled), len(tracked.sampled))
    scores = Scores.of(tracked.masks, labels, teacher.num_classes)
    result = build_result(config, stream, scores, [], [], [], link, out, timings)
    result.downlink = tracking_downlink(config, stream, tracked.downlink_bytes,
                                        len(tracked.sampled))
    result.settings["tracking_flow"] = asdict(tracked.flow)
    result.server = asdict(ServerWork(teacher_frames=len(tracked.sampled)))
    result.runner = "tracker"
    write_logs(out, stream, result, [], scores)
    return result


@contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = round(time.perf_counter() - start, 3)
