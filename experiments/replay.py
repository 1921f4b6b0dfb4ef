"""The device side of a stream: the real engine replays every frame with ``--update_schedule``
(decode, apply to an inactive copy, build off the frame thread, swap between frames), writes
each frame's argmax mask and one event per packet. Packets are authenticated: the engine gets
the session's key (a 0600 file in a private temporary folder, removed after the run) and device
id, unless the run opted out with ``insecure_updates``."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import numpy as np

from mobdistill.experiments import evaluate
from mobdistill.experiments.clips import Stream
from mobdistill.experiments.config import StreamConfig
from mobdistill.experiments.simulate import PlannedUpdate
from mobdistill.runtime.app_runner import run_benchmark
from mobdistill.runtime.engine import EngineOptions, FrameTiming, UpdateEvent
from mobdistill.server.session import UpdateCredentials


@contextmanager
def private_key_file(key: bytes) -> Iterator[Path]:
    """The key in a file only its owner can read, in a folder only its owner can enter; both
    are removed on the way out, whatever happens."""
    folder = Path(tempfile.mkdtemp(prefix="mobdistill-key-"))  # mode 0700
    try:
        path = folder / "update.key"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key)
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def write_schedule(path: Path, delivered: list[PlannedUpdate], packets_dir: Path) -> None:
    path.write_text("".join(
        json.dumps({"frame": p.arrival_frame, "sequence": p.sequence,
                    "packet": str((packets_dir / packet_name(p.sequence)).resolve())}) + "\n"
        for p in delivered))


def runner_of(device) -> str:
    """`run_benchmark`'s rule: the harness app for an `AppTarget`, else the engine binary."""
    from mobdistill.runtime.app_runner import AppTarget, Runner

    return (Runner.APP if isinstance(device, AppTarget) else Runner.ENGINE).value


def packet_name(sequence: int) -> str:
    return f"update-{sequence:04d}.mdup"


def replay_engine(stream: Stream, manifest_path: Path, delivered: list[PlannedUpdate],
                  config: StreamConfig, out: Path, device, credentials: UpdateCredentials,
                  ) -> tuple[np.ndarray, list[FrameTiming], list[UpdateEvent]]:
    """(masks [N, H, W], frame records, update events) of the real engine on ``device``;
    the packets must already be in ``out/packets``."""
    frames_path = out / "frames.rgb"
    stream.frames.tofile(frames_path)
    schedule = out / "schedule.jsonl"
    write_schedule(schedule, delivered, out / "packets")
    options = EngineOptions(num_threads=config.num_threads, warmup_runs=0,
                            num_runs=len(stream.frames), timeout_s=600,
                            run_delay_s=_run_delay(stream, config))
    if not delivered:  # no update source: the engine takes no key either
        result = run_benchmark(device, manifest_path, options, frames_path=frames_path,
                               out_dir=out / "engine", output_masks=True)
    else:
        result = _run_with_updates(device, manifest_path, options, schedule, frames_path, out,
                                   credentials, config)
    h, w = stream.frames.shape[1:3]
    assert result.output_masks_path is not None  # asked for with output_masks=True
    masks = evaluate.read_masks(result.output_masks_path, len(stream.frames), h, w)
    return masks, result.frames, result.update_events


def _run_with_updates(device, manifest_path: Path, options: EngineOptions, schedule: Path,
                      frames_path: Path, out: Path, credentials: UpdateCredentials,
                      config: StreamConfig):
    options = replace(options, update_schedule=schedule,
                      update_device_id=credentials.device_id.hex(),
                      insecure_updates=credentials.insecure,
                      update_blocking=config.update_blocking)
    if credentials.hmac_key is None:
        return run_benchmark(device, manifest_path, options, frames_path=frames_path,
                             out_dir=out / "engine", output_masks=True)
    with private_key_file(credentials.hmac_key) as key_file:
        return run_benchmark(device, manifest_path, replace(options, update_key_file=key_file),
                             frames_path=frames_path, out_dir=out / "engine", output_masks=True)


def _run_delay(stream: Stream, config: StreamConfig) -> float:
    return float(stream.duration_s / len(stream.frames)) if config.realtime else 0.0
