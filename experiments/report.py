"""What a stream run reports: `StreamResult` (the JSON), ``frames.csv`` and ``stream.json``."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mobdistill.experiments import evaluate
from mobdistill.experiments.clips import Stream
from mobdistill.experiments.config import StreamConfig
from mobdistill.experiments.simulate import PlannedUpdate, Uplink
from mobdistill.runtime.engine import FrameTiming, UpdateEvent

WITH_BACKGROUND = ("AMS's: per frame, mean IoU over the classes present in the mask or the "
                   "teacher's labels, background included; mean over all frames")
FOREGROUND = ("JITNet's: per frame, mean IoU over the foreground classes (background excluded) "
              "present in the mask or the teacher's labels; frames where neither holds a "
              "foreground pixel (with the selfie teacher: no person, none predicted) are not "
              "scored and are counted in frames_not_scored")


@dataclass
class StreamResult:
    scheme: str
    settings: dict[str, Any]
    frames: int
    duration_s: float
    miou_with_background: dict[str, Any]
    miou_foreground: dict[str, Any]
    uplink: dict[str, Any]
    downlink: dict[str, Any]
    updates: list[dict[str, Any]]
    latency: dict[str, Any]
    out_dir: str
    timings_s: dict[str, float]
    server: dict[str, int] = field(default_factory=dict)  # `simulate.ServerWork`
    # what played the stream: "engine" (the binary, or the engine facade of a live host client),
    # "app" (the harness app, --runner app), "tracker" (Remote+Tracking: no student runs)
    runner: str = "engine"


@dataclass(frozen=True)
class Scores:
    """Per-frame scores of the engine's masks against the teacher's labels."""

    with_background: np.ndarray
    foreground: np.ndarray  # NaN: nothing to score

    @classmethod
    def of(cls, masks: np.ndarray, labels: np.ndarray, num_classes: int) -> "Scores":
        return cls(evaluate.frame_mious(masks, labels, num_classes),
                   evaluate.frame_foreground_mious(masks, labels, num_classes))


def build_result(config: StreamConfig, stream: Stream, scores: Scores,
                 records: list[FrameTiming], events: list[UpdateEvent],
                 planned: list[PlannedUpdate], link: Uplink, out: Path,
                 timings: dict[str, float]) -> StreamResult:
    window = config.update_interval_s / 2
    settings = asdict(config)
    settings.update(update_interval_s=config.update_interval_s, horizon_s=config.horizon_s,
                    asr_interval_s=config.asr_interval_s)
    return StreamResult(
        scheme=config.scheme, settings=settings, frames=len(stream.frames),
        duration_s=round(stream.duration_s, 3),
        miou_with_background=evaluate.summarize(scores.with_background, stream.times_s,
                                                stream.clips, window, WITH_BACKGROUND),
        miou_foreground=evaluate.summarize(scores.foreground, stream.times_s, stream.clips,
                                           window, FOREGROUND),
        uplink=uplink_summary(config, stream, link),
        downlink=downlink_summary(config, stream, planned, events),
        updates=[_update_row(p, _event_for(events, p.sequence)) for p in planned],
        latency=_latency(records, events), out_dir=str(out), timings_s=timings)


def paper_clock_factor(config: StreamConfig) -> float:
    """kbit/s on the stream clock -> on the paper's: AMS's intervals and rates and One-Time's
    60 s are scaled by time_scale, so their rates are too; JIT's δ counts real frames and
    Remote+Tracking samples 1 fps of video time, so their stream rates already are the paper
    clock's."""
    return 1.0 if config.scheme in ("jit", "remote-tracking") else config.time_scale


def uplink_summary(config: StreamConfig, stream: Stream, link: Uplink) -> dict[str, Any]:
    kbit_s = link.bytes * 8 / stream.duration_s / 1e3
    return {"codec": link.codec, "bytes": link.bytes, "frames": link.frames,
            "chunks": link.chunks, "kbit_s": round(kbit_s, 2),
            "kbit_s_paper_clock": round(kbit_s * paper_clock_factor(config), 2)}


def tracking_downlink(config: StreamConfig, stream: Stream, label_bytes: int,
                      labels_sent: int) -> dict[str, Any]:
    """Remote+Tracking sends label maps (zlib), not model updates."""
    kbit_s = label_bytes * 8 / stream.duration_s / 1e3
    return {"link_mbps": config.link_mbps, "bytes": label_bytes, "label_maps": labels_sent,
            "packets_planned": 0, "packets_delivered": 0, "packets_late": 0,
            "packets_applied": 0, "bytes_per_update": 0, "kbit_s": round(kbit_s, 2),
            "kbit_s_paper_clock": round(kbit_s * paper_clock_factor(config), 2)}


def downlink_summary(config: StreamConfig, stream: Stream, planned: list[PlannedUpdate],
              events: list[UpdateEvent]) -> dict[str, Any]:
    """Bytes of the packets that arrived in time, kbit/s on the stream clock and on the paper's
    (`paper_clock_factor`)."""
    delivered = [p for p in planned if p.status == "delivered"]
    down = sum(len(p.packet) for p in delivered)
    kbit_s = down * 8 / stream.duration_s / 1e3
    scale = paper_clock_factor(config)
    return {"link_mbps": config.link_mbps, "bytes": down, "packets_planned": len(planned),
            "packets_delivered": len(delivered),
            "packets_late": sum(p.status == "late" for p in planned),
            "packets_applied": sum(e.applied for e in events),
            "bytes_per_update": round(down / len(delivered)) if delivered else 0,
            "kbit_s": round(kbit_s, 2), "kbit_s_paper_clock": round(kbit_s * scale, 2)}


def _event_for(events: list[UpdateEvent], sequence: int) -> UpdateEvent | None:
    return next((e for e in events if e.sequence == sequence), None)


def _latency(records: list[FrameTiming], events: list[UpdateEvent]) -> dict[str, Any]:
    """Invoke times of all frames, of frames while an update was being built (from its received
    to its swapped frame), and of the others."""
    busy: set[int] = set()
    for e in events:
        if e.applied and e.received_frame is not None and e.swapped_frame is not None:
            busy.update(range(e.received_frame, e.swapped_frame + 1))
    return {"all": evaluate.percentiles_ms([r.invoke_us for r in records]),
            "while_updating": evaluate.percentiles_ms(
                [r.invoke_us for r in records if r.run in busy]),
            "without_updates": evaluate.percentiles_ms(
                [r.invoke_us for r in records if r.run not in busy])}


def _update_row(p: PlannedUpdate, event: UpdateEvent | None) -> dict[str, Any]:
    row = {k: v for k, v in asdict(p).items() if k != "packet"}
    row["bytes"] = len(p.packet)
    keys = ("status", "reason", "received_frame", "swapped_frame", "decode_us", "patch_us",
            "build_us", "warm_us")
    row["engine"] = {k: getattr(event, k) for k in keys} if event else None
    return row


def write_logs(out: Path, stream: Stream, result: StreamResult, records: list[FrameTiming],
               scores: Scores) -> None:
    by_run = {r.run: r for r in records}
    lines = ["frame,time_s,clip,model_version,miou_with_background,miou_foreground,invoke_us"]
    for i, (t, clip) in enumerate(zip(stream.times_s, stream.clips)):
        r = by_run.get(i)
        fg = scores.foreground[i]
        lines.append(f"{i},{t:.4f},{clip},{r.model_version if r else ''},"
                     f"{scores.with_background[i]:.5f},{'' if np.isnan(fg) else f'{fg:.5f}'},"
                     f"{r.invoke_us if r else ''}")
    (out / "frames.csv").write_text("\n".join(lines) + "\n")
    (out / "stream.json").write_text(json.dumps(asdict(result), indent=1) + "\n")
