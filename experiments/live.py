"""`mobdistill stream --live`: the stream experiment against a live `mobdistill serve` process,
the host client (`runtime.live_client`, the real engine through its C facade) playing the clips
in real time over a real socket. Same JSON as the simulated stream (`report.build_result`), plus
a ``live`` section (connections, dropped chunks, the rates the server sent, server events).

Server and client are processes of their own: the client's engine brings its own TFLite
runtime, the teacher here (for scoring) another one. Update rows are on the device's clock:
``boundary_s`` is the upload the server trained on, ``arrival_s`` when the packet reached the
device, the engine's ``swapped_frame`` the first frame on the new model; ``ready_s`` and
``sent_s`` equal ``arrival_s`` (the server's own clock is not the device's).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from mobdistill.errors import EngineError
from mobdistill.experiments import pretrain
from mobdistill.experiments.clips import load_stream, resolve_clip
from mobdistill.experiments.config import StreamConfig
from mobdistill.experiments.replay import private_key_file
from mobdistill.experiments.report import Scores, StreamResult, build_result, write_logs
from mobdistill.experiments.simulate import PlannedUpdate, Uplink
from mobdistill.experiments.student import prepare_student
from mobdistill.runtime.engine import FrameTiming, UpdateEvent
from mobdistill.server.live_store import DeviceRegistry
from mobdistill.server.teachers import Teacher, load_teacher

SERVER_START_S = 600.0  # the server may pretrain and export the starting point first


@dataclass
class ServerProcess:
    """A `mobdistill serve --json` child; its status lines are kept."""

    process: subprocess.Popen
    port: int
    events: list[dict[str, Any]]

    def __post_init__(self) -> None:
        # Drain stdout all along: a full pipe would block the server's status prints.
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("{"):
                self.events.append(json.loads(line))

    def stop(self, timeout_s: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.reader.join(timeout_s)
        return self.process.returncode


def serve_arguments(config: StreamConfig, cache: Path) -> list[str]:
    """The `mobdistill serve` flags that make the server train as `config` does."""
    h, w = config.resolution
    args = ["--teacher", config.teacher, "--resolution", f"{h}x{w}",
            "--pretrain-iterations", str(config.pretrain_iterations), "--seed", str(config.seed),
            "--time-scale", str(config.time_scale), "--iterations", str(config.iterations),
            "--batch-size", str(config.batch_size), "--lr", str(config.lr),
            "--gamma", str(config.gamma), "--value-coding", config.value_coding,
            "--num-threads", str(config.num_threads), "--student-cache", str(cache)]
    if config.teacher_classes != StreamConfig.teacher_classes:
        args += ["--teacher-classes", ",".join(config.teacher_classes)]
    if config.teacher_activation:
        args += ["--teacher-activation", config.teacher_activation]
    if config.t_update_s:
        args += ["--t-update", str(config.t_update_s)]
    if config.t_horizon_s:
        args += ["--t-horizon", str(config.t_horizon_s)]
    if config.aspp_channels == 16:
        args.append("--tiny")
    return args


def start_server(extra: list[str], state_dir: Path, *, port: int = 0,
                 timeout_s: float = SERVER_START_S) -> ServerProcess:
    """Starts `mobdistill serve --json` (any free port unless given) and waits for its
    ``listening`` line."""
    command = [sys.executable, "-c", "import sys; from mobdistill.cli import main; "
               "sys.exit(main(sys.argv[1:]))", "serve", "--json", "--port", str(port),
               "--state-dir", str(state_dir), *extra]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        if line.startswith("{"):
            events.append(json.loads(line))
            if events[-1]["event"] == "listening":
                return ServerProcess(process, int(events[-1]["port"]), events)
    process.kill()
    process.wait()
    raise EngineError(f"`mobdistill serve` did not start listening (exit {process.returncode});"
                      " run it by hand to see why")


def client_command(port: int, manifest: Path, videos: list[str], device_id: bytes,
                   key_file: Path | None, out: Path, config: StreamConfig,
                   tls_ca: Path | None = None) -> list[str]:
    command = [sys.executable, "-m", "mobdistill.runtime.live_client",
               "--server", f"127.0.0.1:{port}", "--manifest", str(manifest),
               "--video", ",".join(videos), "--device-id", device_id.hex(),
               "--uplink", config.uplink_codec, "--uplink-kbps", str(config.uplink_kbps),
               "--out", str(out)]
    if config.max_frames_per_clip:
        command += ["--max-frames", str(config.max_frames_per_clip)]
    command += ["--key-file", str(key_file)] if key_file else ["--insecure-updates"]
    if tls_ca:
        command += ["--tls-ca", str(tls_ca)]
    return command


def run_live(config: StreamConfig, *, out_dir: Path, cache: Path | None = None,
             teacher: Teacher | None = None) -> tuple[StreamResult, dict[str, Any]]:
    """One live run: (the stream result, the ``live`` section); both in ``out/stream.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    teacher = teacher or load_teacher(config.teacher, class_names=config.teacher_classes,
                                      activation=config.teacher_activation)
    cache = cache or pretrain.cache_root()
    start = time.perf_counter()
    _, manifest_path = prepare_student(config, teacher, cache=cache)
    stream = load_stream(config.videos, config.resolution, config.max_frames_per_clip)
    labels = np.stack([teacher.labels(f) for f in stream.frames])
    timings["prepare"] = round(time.perf_counter() - start, 3)
    with tempfile.TemporaryDirectory(prefix="mobdistill-live-") as state:
        state_dir = Path(state)
        extra = serve_arguments(config, cache)
        device = _enrol(state_dir, config)
        if config.insecure_updates:
            extra.append("--insecure-updates")
        start = time.perf_counter()
        server = start_server(extra, state_dir)
        try:
            with _key(device) as key_file:
                client = subprocess.run(client_command(
                    server.port, manifest_path, [resolve_clip(v) for v in config.videos],
                    device[0], key_file, out / "device", config), capture_output=True,
                    text=True)
        finally:
            server.stop()
        timings["live"] = round(time.perf_counter() - start, 3)
    if client.returncode != 0:
        raise EngineError(f"the live client failed ({client.returncode}): "
                          f"{client.stderr.strip()[-2000:]}")
    return _result(config, stream, labels, teacher.num_classes, out, server, timings)


def _enrol(state_dir: Path, config: StreamConfig) -> tuple[bytes, bytes | None]:
    if config.insecure_updates:
        from mobdistill.contract import wire

        return wire.new_device_id(), None
    entry = DeviceRegistry(state_dir / "devices.json").enroll("live-client")
    return entry.device_id, entry.key


def _key(device: tuple[bytes, bytes | None]):
    if device[1] is None:
        from contextlib import nullcontext

        return nullcontext(None)
    return private_key_file(device[1])


def _result(config: StreamConfig, stream, labels: np.ndarray, num_classes: int, out: Path,
            server: ServerProcess, timings: dict[str, float]) -> tuple[StreamResult, dict]:
    device = out / "device"
    summary = json.loads((device / "client.json").read_text())
    h, w = stream.frames.shape[1:3]
    n = len(stream.frames)
    masks = np.fromfile(device / "masks.bin", np.uint8)
    if masks.size != n * h * w:
        raise EngineError(f"the client wrote {masks.size // (h * w)} masks for {n} frames")
    masks = masks.reshape(n, h, w)
    records = list(_frame_records(device / "frames.jsonl"))
    planned, events = _updates(summary["updates"], device / "packets", n)
    counters = summary["counters"]
    link = Uplink(config.uplink_codec, config.uplink_kbps, counters["uplink_bytes"],
                  counters["uplink_frames"], counters["uplink_chunks"])
    scores = Scores.of(masks, labels, num_classes)
    result = build_result(config, stream, scores, records, events, planned, link, out, timings)
    result.settings["live"] = True
    live = {"connections": counters["connections"], "chunks_dropped": counters["chunks_dropped"],
            "rates": counters["rates"], "wall_s": summary["wall_s"],
            "server_events": {e: sum(x["event"] == e for x in server.events)
                              for e in ("connected", "frames", "trained", "ack", "dropped")},
            "acks": [x for x in server.events if x["event"] == "ack"]}
    write_logs(out, stream, result, records, scores)
    from dataclasses import asdict

    (out / "stream.json").write_text(json.dumps({**asdict(result), "live": live}, indent=1)
                                     + "\n")
    return result, live


def _frame_records(path: Path) -> Iterator[FrameTiming]:
    for line in path.read_text().splitlines():
        r = json.loads(line)
        yield FrameTiming(r["frame"], r["frame"], "measure", 0.0, float(r["invoke_us"]), 0.0,
                          int(r["model_version"]))


def _updates(rows: list[dict[str, Any]], packets: Path, frames: int,
             ) -> tuple[list[PlannedUpdate], list[UpdateEvent]]:
    planned, events = [], []
    for row in rows:
        engine = row.get("engine") or {}
        packet = (packets / f"update-{row['sequence']:04d}.mdup").read_bytes()
        boundary = row.get("boundary_s")  # None: a catch-up or resync (no training boundary)
        p = PlannedUpdate(row["sequence"], packet, row.get("values") or 0,
                          float(row["arrival_s"] if boundary is None else boundary),
                          row["arrival_s"], row.get("train_wall_s") or 0.0,
                          row.get("loss_before"), row.get("loss_after"),
                          "delivered" if row["arrival_frame"] < frames else "late",
                          row["arrival_s"], row["arrival_s"], row["arrival_frame"])
        planned.append(p)
        if engine.get("status") in ("applied", "rejected"):
            events.append(UpdateEvent("api", f"live:{row['kind']}", row["sequence"], row["mode"],
                                      engine["status"], engine.get("reason"), "",
                                      engine.get("received_frame"), engine.get("swapped_frame"),
                                      engine.get("decode_us"), engine.get("patch_us"),
                                      engine.get("build_us"), engine.get("warm_us"), len(packet),
                                      row.get("values") or 0))
    return planned, events
