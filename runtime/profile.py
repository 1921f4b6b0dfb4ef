"""The profile flow: export (if needed) → decode real frames → run the engine → report.

`profile()` returns a `ProfileReport` and writes, into `out_dir`:
  profile.json   results keyed device → runtime → model (ms p50/p90/p99, delegates, versions)
  frames.csv     one row per engine frame (run, frame, phase, preprocess/invoke/postprocess us)
  latency.png    per-frame invoke latency (warmup and measured runs)
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mobdistill.errors import UsageError
from mobdistill.export.manifest import Manifest
from mobdistill.runtime.device import Device, LocalDevice
from mobdistill.runtime.engine import EngineOptions, ProfileResult, run_engine
from mobdistill.runtime.frames import decode_to_raw

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProfileReport:
    result: ProfileResult
    manifest_path: Path
    frames_path: Path
    json_path: Path
    csv_path: Path
    png_path: Path
    table: str

    def to_json(self) -> dict[str, Any]:
        return json.loads(self.json_path.read_text())


def export_if_needed(model: str, *, out_dir: Path, resolution: tuple[int, int] | None,
                     queue_length: int | None = None, tiny: bool = False) -> Path:
    """The manifest of `model` exported into out_dir/export/<key>; reused when present."""
    from mobdistill.export.api import export_model  # heavy (torch): only when exporting

    key = model + (f"-{resolution[0]}x{resolution[1]}" if resolution else "") + \
        (f"-q{queue_length}" if queue_length is not None else "") + ("-tiny" if tiny else "")
    folder = out_dir / "export" / key
    existing = sorted(folder.glob("*.manifest.json"))
    if existing:
        log.info("reusing export %s", existing[0])
        return existing[0]
    overrides = {"queue_length": queue_length} if queue_length is not None else None
    result = export_model(model, out_dir=folder, formats=("tflite",), resolution=resolution,
                          overrides=overrides, tiny=tiny, verify=True)
    return Path(result.manifest_path)


def profile(
    *,
    model: str | None = None,
    artifact: Path | None = None,
    device: Device | None = None,
    out_dir: Path,
    options: EngineOptions | None = None,
    video: str | Path | None = None,
    resolution: tuple[int, int] | None = None,
    queue_length: int | None = None,
    tiny: bool = False,
) -> ProfileReport:
    """Profile one model (by registry name, exported on demand) or one exported artifact: its
    manifest, or the .tflite that `mobdistill export` wrote beside one."""
    if (model is None) == (artifact is None):
        raise UsageError("give exactly one of --model NAME or --artifact MANIFEST")
    options = options or EngineOptions()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if artifact is not None:
        manifest = Manifest.load(Path(artifact), check_files=False)
    else:
        assert model is not None
        manifest = Manifest.load(export_if_needed(model, out_dir=out_dir, resolution=resolution,
                                                  queue_length=queue_length, tiny=tiny),
                                 check_files=False)
    height, width = manifest.resolution
    frames = decode_to_raw(video, out_dir / f"frames-{height}x{width}.rgb",
                           resolution=(height, width),
                           max_frames=options.warmup_runs + options.num_runs + 1)
    if device is None:
        with LocalDevice() as host:
            result = run_engine(host, manifest.path, options, frames_path=frames.path,
                                out_dir=out_dir / "engine")
    else:
        result = run_engine(device, manifest.path, options, frames_path=frames.path,
                            out_dir=out_dir / "engine")
    paths = out_dir / "profile.json", out_dir / "frames.csv", out_dir / "latency.png"
    paths[0].write_text(json.dumps(result_json(result, frames.video), indent=2) + "\n")
    write_csv(result, paths[1])
    plot_latency(result, paths[2])
    return ProfileReport(result, manifest.path, frames.path, *paths, table=format_table(result))


def invoke_ms(result: ProfileResult) -> dict[str, float]:
    inv = result.summary.get("invoke", {})
    return {k.replace("_us", "_ms"): round(v / 1000.0, 4) for k, v in inv.items()
            if k.endswith("_us")}


def result_json(result: ProfileResult, video: str) -> dict[str, Any]:
    """Saved results: keyed device → runtime → model."""
    s = result.summary
    from importlib.metadata import PackageNotFoundError, version

    tools = {}
    for pkg in ("mobdistill", "litert-lm-api", "ai-edge-litert"):
        try:
            tools[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    tools["engine"] = s.get("engine_version", "")
    entry = {
        "invoke_ms": invoke_ms(result),
        "first_inference_ms": s.get("first_inference_us", 0) / 1000.0,
        "model_load_ms": s.get("model_load_ms"), "init_ms": s.get("init_ms"),
        "peak_rss_mb": s.get("peak_rss_mb"),
        "delegate_requested": s.get("delegate_requested"),
        "delegate_used": s.get("delegate_used"), "warnings": s.get("warnings", []),
        "num_threads": result.num_threads, "warmup_runs": result.warmup_runs,
        "num_runs": result.num_runs, "queue_length": s.get("queue_length"),
        "manifest": result.manifest_path, "video": video, "tool_versions": tools,
    }
    serial = result.device.get("serial", "unknown")
    return {"schema": "mobdistill.profile", "schema_version": 1,
            "devices": {serial: result.device},
            "results": {serial: {f"litert-{s.get('runtime_version', '?')}":
                                 {result.model: entry}}}}


def write_csv(result: ProfileResult, path: Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["run", "frame", "phase", "preprocess_us", "invoke_us", "postprocess_us",
                         "model_version"])
        for f in result.frames:
            writer.writerow([f.run, f.frame, f.phase, f.preprocess_us, f.invoke_us,
                             f.postprocess_us, f.model_version])


def plot_latency(result: ProfileResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    for phase, color in (("warmup", "tab:orange"), ("measure", "tab:blue")):
        pts = [(f.run, f.invoke_us / 1000.0) for f in result.frames if f.phase == phase]
        if pts:
            ax.plot(*zip(*pts), ".-", color=color, label=phase, lw=0.8, ms=3)
    measured = result.measured_invoke_us()
    if measured:
        ax.axhline(np.median(measured) / 1000.0, color="k", ls="--", lw=0.8, label="median")
    ax.set_xlabel("run")
    ax.set_ylabel("invoke latency (ms)")
    ax.set_title(f"{result.model} on {result.device.get('serial', '?')}, "
                 f"{result.num_threads} thread(s), {result.summary.get('delegate_used', '?')}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def format_table(result: ProfileResult) -> str:
    """A benchmark_model-like report."""
    s = result.summary
    ms = invoke_ms(result)
    rows = [
        ("model", f"{result.model} ({result.manifest_path})"),
        ("device", f"{result.device.get('serial')} {result.device.get('model', '')}".strip()),
        ("runtime", f"TFLite {s.get('runtime_version')} / engine {s.get('engine_version')}"),
        ("delegate", f"{s.get('delegate_used')} (requested {s.get('delegate_requested')})"),
        ("threads", str(result.num_threads)),
        ("runs", f"{result.warmup_runs} warmup + {result.num_runs} measured"),
        ("model load", f"{s.get('model_load_ms', 0):.2f} ms"),
        ("init (stateful)", f"{s.get('init_ms', 0):.2f} ms"),
        ("first inference", f"{s.get('first_inference_us', 0) / 1000:.3f} ms"),
        ("warmup avg", f"{s.get('warmup_avg_us', 0) / 1000:.3f} ms"),
        ("inference", "min {min_ms:.3f}  p50 {p50_ms:.3f}  p90 {p90_ms:.3f}  p99 {p99_ms:.3f}  "
                      "max {max_ms:.3f}  mean {mean_ms:.3f}  std {std_ms:.3f} ms".format(**ms)
         if ms else "n/a"),
        ("peak RSS", f"{s.get('peak_rss_mb', 0):.1f} MB"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
    lines += [f"WARNING: {w}" for w in s.get("warnings", [])]
    return "\n".join(lines)
