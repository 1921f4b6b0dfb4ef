"""Latency against the memory queue length Q (MobileVOS Fig. 4): export and profile each Q."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mobdistill.errors import UsageError
from mobdistill.runtime.app_runner import AppTarget, Runner, StartMode
from mobdistill.runtime.device import Device, LocalDevice
from mobdistill.runtime.engine import EngineOptions
from mobdistill.runtime.profile import export_if_needed, profile


def parse_int_list(text: str) -> list[int]:
    """'1,2,4-8' → [1, 2, 4, 5, 6, 7, 8] (sorted, unique, all >= 1)."""
    values: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                values.update(range(lo, hi + 1))
            else:
                values.add(int(part))
        except ValueError:
            raise UsageError(f"bad list item {part!r} in {text!r}: use e.g. 1,2,4-8") from None
    if not values or min(values) < 1:
        raise UsageError(f"queue lengths {text!r} must be integers >= 1, e.g. 1-20")
    return sorted(values)


@dataclass(frozen=True)
class SweepPoint:
    queue_length: int
    p10_ms: float
    p50_ms: float
    p90_ms: float
    mean_ms: float
    delegate_used: str
    manifest: str


@dataclass(frozen=True)
class SweepResult:
    model: str
    device: str
    num_threads: int
    num_runs: int
    points: list[SweepPoint]
    runner: str  # "engine" (the mobdistill-engine binary) or "app" (inside the harness app)
    json_path: str
    csv_path: str
    png_path: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def sweep(*, model: str, queue_lengths: list[int], device: Device | None = None, out_dir: Path,
          options: EngineOptions | None = None, rounds: int = 1,
          video: str | Path | None = None, resolution: tuple[int, int] | None = None,
          tiny: bool = False, runner: Runner = Runner.ENGINE, apk: Path | None = None,
          start: StartMode = StartMode.INSTRUMENT) -> SweepResult:
    """Export and profile each queue length; `rounds` > 1 interleaves them (Q1..Qn, Q1..Qn, …)
    and pools the runs, so a slow drift in device load or temperature spreads over every Q.
    With `runner` APP each Q's model is pushed into the harness app and run there."""
    if rounds < 1:
        raise UsageError(f"--rounds {rounds} must be at least 1")
    if device is None:
        with LocalDevice() as host:  # one staging of the engine for every Q
            return sweep(model=model, queue_lengths=queue_lengths, device=host, out_dir=out_dir,
                         options=options, rounds=rounds, video=video, resolution=resolution,
                         tiny=tiny, runner=runner, apk=apk, start=start)
    options = options or EngineOptions()
    out_dir = Path(out_dir)
    manifests = {q: export_if_needed(model, out_dir=out_dir, resolution=resolution,
                                     queue_length=q, tiny=tiny) for q in queue_lengths}
    target = AppTarget(device, apk, start) if runner is Runner.APP else device
    pooled: dict[int, list[float]] = {q: [] for q in queue_lengths}
    delegates: dict[int, str] = {}
    serial = "host"
    for round_index in range(rounds):
        for q in queue_lengths:
            run_dir = out_dir / f"q{q}" / f"round{round_index}"
            report = profile(artifact=manifests[q], device=target, out_dir=run_dir,
                             options=options, video=video)
            pooled[q] += [us / 1000.0 for us in report.result.measured_invoke_us()]
            delegates[q] = str(report.result.summary.get("delegate_used"))
            serial = report.result.device.get("serial", serial)
    points = []
    for q in queue_lengths:
        ms = np.array(pooled[q])
        points.append(SweepPoint(q, float(np.percentile(ms, 10)), float(np.percentile(ms, 50)),
                                 float(np.percentile(ms, 90)), float(ms.mean()), delegates[q],
                                 str(manifests[q])))
    paths = out_dir / "sweep.json", out_dir / "sweep.csv", out_dir / "sweep.png"
    result = SweepResult(model, serial, options.num_threads, options.num_runs * rounds, points,
                         runner.value, *map(str, paths))
    paths[0].write_text(json.dumps(result.to_json(), indent=2) + "\n")
    with open(paths[1], "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(asdict(points[0])))
        writer.writeheader()
        writer.writerows(asdict(p) for p in points)
    _plot(result, paths[2])
    return result


def _plot(result: SweepResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    q = [p.queue_length for p in result.points]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.fill_between(q, [p.p10_ms for p in result.points], [p.p90_ms for p in result.points],
                    alpha=0.3, label="p10–p90")
    ax.plot(q, [p.p50_ms for p in result.points], "o-", label="median")
    ax.set_xlabel("memory queue length Q")
    ax.set_ylabel("invoke latency (ms)")
    ax.set_title(f"{result.model} on {result.device} ({result.runner} runner), "
                 f"{result.num_threads} thread(s)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
