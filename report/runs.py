"""Run folders written by `mobdistill profile`, `sweep` and `stream`, read into one `Run`.

A profile folder holds profile.json and engine/engine.jsonl (one record per frame, sensor
readings with --record_sensors, update events); a sweep folder sweep.json (latency per queue
length); a stream folder stream.json (settings, updates), frames.csv (mIoU per frame) and
engine/engine.jsonl. Each part of a `Run` is None when its run did not record it.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mobdistill.errors import UsageError

RUN_FILES = ("profile.json", "sweep.json", "stream.json")


@dataclass(frozen=True)
class LatencyTrace:
    """Per-frame invoke times, and the device's temperatures and CPU clocks where recorded."""

    run: list[int]
    invoke_ms: list[float]
    measured: list[bool]  # false: warmup
    thermal_c: dict[str, list[float | None]] = field(default_factory=dict)
    cpu_mhz: dict[str, list[float | None]] = field(default_factory=dict)


@dataclass(frozen=True)
class QueueCurve:
    queue_length: list[int]
    p10_ms: list[float]
    p50_ms: list[float]
    p90_ms: list[float]


@dataclass(frozen=True)
class MiouTrace:
    time_s: list[float]
    miou: list[float]
    updates_s: list[float]  # when each applied update took effect (its first frame)


@dataclass(frozen=True)
class UpdateSizes:
    sequence: list[int]
    bytes: list[int]
    status: list[str]


@dataclass(frozen=True)
class Run:
    label: str
    kind: str  # profile, sweep or stream
    path: Path
    settings: dict[str, str]
    tools: dict[str, str]
    latency: LatencyTrace | None = None
    queue: QueueCurve | None = None
    miou: MiouTrace | None = None
    updates: UpdateSizes | None = None


def load_run(path: Path) -> Run:
    """The run in folder `path` (or the folder of its profile/sweep/stream JSON).

    Raises:
        UsageError: no run there, or a file that is not what the run wrote.
    """
    path = Path(path)
    folder = path.parent if path.is_file() else path
    if (folder / "stream.json").is_file():
        return _stream(folder)
    if (folder / "sweep.json").is_file():
        return _sweep(folder)
    if (folder / "profile.json").is_file():
        return _profile(folder)
    raise UsageError(f"{path} is not a run folder: it holds none of {', '.join(RUN_FILES)} "
                     "(give the --out folder of mobdistill profile, sweep or stream)")


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UsageError(f"cannot read {path}: {err}") from err


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return "" if value is None else str(value)


def _engine_settings(folder: Path) -> dict[str, str]:
    summary = folder / "engine" / "engine.summary.json"
    if not summary.is_file():
        return {}
    s = _json(summary)
    keys = ("model", "num_threads", "num_runs", "warmup_runs", "delegate_requested",
            "delegate_used", "queue_length")
    out = {f"engine {k}": _text(s.get(k)) for k in keys if k in s}
    out["engine sensors"] = "recorded" if s.get("sensors", {}).get("recorded") else "none"
    return out


def _engine_tools(folder: Path) -> dict[str, str]:
    summary = folder / "engine" / "engine.summary.json"
    if not summary.is_file():
        return {}
    s = _json(summary)
    return {"engine": _text(s.get("engine_version")),
            "litert runtime": _text(s.get("runtime_version"))}


def read_latency(jsonl: Path) -> LatencyTrace | None:
    """Frames of an engine JSONL (update events skipped); None when there is none."""
    if not jsonl.is_file():
        return None
    run: list[int] = []
    invoke: list[float] = []
    measured: list[bool] = []
    thermal: dict[str, list[float | None]] = {}
    cpus: dict[str, list[float | None]] = {}
    with open(jsonl) as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as err:
                raise UsageError(f"{jsonl}:{number}: not a JSON record: {err}") from err
            if "event" in record or "invoke_us" not in record:
                continue
            index = len(run)
            run.append(int(record.get("run", index)))
            invoke.append(float(record["invoke_us"]) / 1000.0)
            measured.append(record.get("phase") != "warmup")
            for zone, celsius in (record.get("thermal_c") or {}).items():
                thermal.setdefault(zone, [None] * index).append(celsius)
            for cpu, khz in enumerate(record.get("cpu_freq_khz") or []):
                cpus.setdefault(f"cpu{cpu}", [None] * index).append(
                    None if khz is None else khz / 1000.0)
            for series in (*thermal.values(), *cpus.values()):
                series.extend([None] * (len(run) - len(series)))
    return LatencyTrace(run, invoke, measured, thermal, cpus) if run else None


def _profile(folder: Path) -> Run:
    data = _json(folder / "profile.json")
    settings: dict[str, str] = {}
    tools: dict[str, str] = {}
    label = folder.name
    for serial, runtimes in data.get("results", {}).items():
        device = data.get("devices", {}).get(serial, {})
        settings["device"] = " ".join(_text(device.get(k)) for k in ("serial", "model", "abi"))
        for runtime, models in runtimes.items():
            for model, entry in models.items():
                label = f"{model} on {serial}"
                settings.update({"model": model, "runtime": runtime})
                for key in ("precision", "num_threads", "warmup_runs", "num_runs",
                            "delegate_requested", "delegate_used", "queue_length", "video"):
                    settings[key] = _text(entry.get(key))
                tools.update({k: _text(v) for k, v in entry.get("tool_versions", {}).items()})
    settings.update(_engine_settings(folder))
    return Run(label, "profile", folder, settings, {**_engine_tools(folder), **tools},
               latency=read_latency(folder / "engine" / "engine.jsonl"))


def _sweep(folder: Path) -> Run:
    data = _json(folder / "sweep.json")
    points = data.get("points", [])
    curve = QueueCurve([int(p["queue_length"]) for p in points],
                       [float(p["p10_ms"]) for p in points], [float(p["p50_ms"]) for p in points],
                       [float(p["p90_ms"]) for p in points])
    settings = {k: _text(data.get(k)) for k in ("model", "serial", "num_threads", "num_runs",
                                                 "runner")}
    first = next(iter(sorted(folder.glob("q*/round0"))), None)
    tools = _profile(first).tools if first and (first / "profile.json").is_file() else {}
    serial = data.get("serial") or data.get("device") or "?"
    return Run(f"{data.get('model', folder.name)} sweep on {serial}", "sweep",
               folder, settings, tools, queue=curve if points else None)


def _stream(folder: Path) -> Run:
    data = _json(folder / "stream.json")
    settings = {k: _text(v) for k, v in data.get("settings", {}).items()}
    settings["frames"] = _text(data.get("frames"))
    down = data.get("downlink", {})
    settings["downlink kbit/s"] = _text(down.get("kbit_s"))
    times, miou = _stream_frames(folder / "frames.csv")
    updates = data.get("updates", [])
    applied = [u["engine"]["swapped_frame"] for u in updates
               if (u.get("engine") or {}).get("status") == "applied"
               and u["engine"].get("swapped_frame") is not None]
    update_times = [times[f] for f in applied if 0 <= f < len(times)]
    sizes = UpdateSizes([int(u["sequence"]) for u in updates], [int(u["bytes"]) for u in updates],
                        [str(u.get("status")) for u in updates])
    return Run(f"{data.get('scheme', 'stream')} stream", "stream", folder, settings,
               _engine_tools(folder), latency=read_latency(folder / "engine" / "engine.jsonl"),
               miou=MiouTrace(times, miou, update_times) if times else None,
               updates=sizes if updates else None)


def _stream_frames(path: Path) -> tuple[list[float], list[float]]:
    if not path.is_file():
        return [], []
    times: list[float] = []
    miou: list[float] = []
    try:
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                times.append(float(row["time_s"]))
                miou.append(float(row["miou_with_background"]))
    except (KeyError, ValueError) as err:
        raise UsageError(f"{path}: not a stream frames.csv ({err})") from err
    return times, miou
