"""The profile flow: export (if needed) → decode real frames → run the engine → report.

`profile()` returns a `ProfileReport` and writes, into `out_dir`:
  profile.json   results keyed device → runtime → model (ms p50/p90/p99, delegates, versions)
  frames.csv     one row per engine frame (run, frame, phase, preprocess/invoke/postprocess us,
                 model version, runner)
  latency.png    per-frame invoke latency (warmup and measured runs)
Each is labelled with the runner: "engine" (the mobdistill-engine binary, run from a shell) or
"app" (inside the harness app: pass `device=AppTarget(...)`, runtime/app_runner.py).
With EngineOptions.enable_op_profiling, profile.json also holds `op_profile` (per-operator and
per-partition times, FLOPs where known; `format_op_table` prints it).
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
from mobdistill.runtime.app_runner import AppTarget, run_benchmark
from mobdistill.runtime.device import Device, LocalDevice
from mobdistill.runtime.engine import EngineOptions, ProfileResult
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
    device: Device | AppTarget | None = None,
    out_dir: Path,
    options: EngineOptions | None = None,
    video: str | Path | None = None,
    resolution: tuple[int, int] | None = None,
    queue_length: int | None = None,
    tiny: bool = False,
) -> ProfileReport:
    """Profile one model (by registry name, exported on demand) or one exported artifact: its
    manifest, or the .tflite that `mobdistill export` wrote beside one. `device` None is this
    host; an `AppTarget` runs the benchmark inside the harness app on its device."""
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
            result = run_benchmark(host, manifest.path, options, frames_path=frames.path,
                                   out_dir=out_dir / "engine")
    else:
        result = run_benchmark(device, manifest.path, options, frames_path=frames.path,
                               out_dir=out_dir / "engine")
    paths = out_dir / "profile.json", out_dir / "frames.csv", out_dir / "latency.png"
    saved = result_json(result, frames.video)
    if result.op_profile is not None:
        section = op_profile_json(result.op_profile, manifest.tflite_path)
        serial = result.device.get("serial", "unknown")
        for runtime in saved["results"][serial].values():
            runtime[result.model]["op_profile"] = section
    paths[0].write_text(json.dumps(saved, indent=2) + "\n")
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
        "precision": Manifest.load(Path(result.manifest_path), check_files=False).precision,
        "runner": result.runner,
        "imbalance": s.get("imbalance"), "schedule": schedule_ms(result),
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
                         "model_version", "runner", "keyframe"])
        for f in result.frames:
            writer.writerow([f.run, f.frame, f.phase, f.preprocess_us, f.invoke_us,
                             f.postprocess_us, f.model_version, result.runner,
                             "" if f.keyframe is None else int(f.keyframe)])


def plot_latency(result: ProfileResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    for phase, color in (("warmup", "tab:orange"), ("measure", "tab:blue")):
        pts = [(f.run, f.invoke_us / 1000.0) for f in result.frames if f.phase == phase]
        if pts:
            ax.plot(*zip(*pts), ".-", color=color, label=phase, lw=0.8, ms=3)
    _mark_keyframes(ax, result)
    measured = result.measured_invoke_us()
    if measured:
        ax.axhline(np.median(measured) / 1000.0, color="k", ls="--", lw=0.8, label="median")
    ax.set_xlabel("run")
    ax.set_ylabel("invoke latency (ms)")
    title = (f"{result.model} on {result.device.get('serial', '?')} ({result.runner} runner), "
             f"{result.num_threads} thread(s), {result.summary.get('delegate_used', '?')}")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Title": title})  # the PNG's tEXt chunk, too
    plt.close(fig)


def _mark_keyframes(ax: Any, result: ProfileResult) -> None:
    """Delta-distilled models: a red triangle on every keyframe (the slow frames)."""
    keyframes = [(f.run, f.invoke_us / 1000.0) for f in result.frames if f.keyframe]
    if keyframes:
        interval = (result.summary.get("delta") or {}).get("keyframe_interval", "?")
        ax.plot(*zip(*keyframes), "^", color="tab:red", ms=6, ls="none",
                label=f"keyframe (every {interval})")


def schedule_ms(result: ProfileResult) -> dict[str, Any] | None:
    """Delta-distilled models: keyframe and delta-frame invoke latency (ms) of the measured
    runs and the per-frame imbalance (p99 / median); None for other models."""
    delta = result.summary.get("delta")
    if not delta:
        return None

    def ms(stats: dict[str, float]) -> dict[str, float]:
        return {k.replace("_us", "_ms"): round(v / 1000.0, 4) for k, v in stats.items()
                if k.endswith("_us")}

    return {"keyframe_interval": delta["keyframe_interval"],
            "keyframe_interval_source": delta["keyframe_interval_source"],
            "keyframes": delta["keyframes"], "delta_frames": delta["delta_frames"],
            "forced_keyframes": delta["forced_keyframes"],
            "keyframe_invoke_ms": ms(delta["keyframe_invoke"]),
            "delta_invoke_ms": ms(delta["delta_invoke"]),
            "keyframe_over_delta_p50": round(delta["keyframe_over_delta_p50"], 4),
            "invoke_p99_over_p50": round(result.summary["imbalance"]["invoke_p99_over_p50"], 4)}


def _schedule_rows(result: ProfileResult) -> list[tuple[str, str]]:
    schedule = schedule_ms(result)
    if schedule is None:
        return []
    rows = [("keyframe interval", f"{schedule['keyframe_interval']} "
                                  f"({schedule['keyframe_interval_source']})")]
    for kind in ("keyframe", "delta"):
        stats = schedule[f"{kind}_invoke_ms"]
        count = schedule["keyframes" if kind == "keyframe" else "delta_frames"]
        rows.append((f"{kind} frames", f"p50 {stats['p50_ms']:.3f}  p99 {stats['p99_ms']:.3f}  "
                                       f"mean {stats['mean_ms']:.3f} ms ({count} frames)"))
    rows.append(("imbalance", f"p99/p50 {schedule['invoke_p99_over_p50']:.2f} (keyframe/delta "
                              f"p50 {schedule['keyframe_over_delta_p50']:.2f})"))
    return rows


RUNNER_NAMES = {"engine": "engine (the mobdistill-engine binary from a shell)",
                "app": "app (inside the harness app, org.mobdistill.harness)"}


def format_table(result: ProfileResult) -> str:
    """A benchmark_model-like report."""
    s = result.summary
    ms = invoke_ms(result)
    rows = [
        ("model", f"{result.model} ({result.manifest_path})"),
        ("precision", Manifest.load(Path(result.manifest_path), check_files=False).precision),
        ("device", f"{result.device.get('serial')} {result.device.get('model', '')}".strip()),
        ("runner", RUNNER_NAMES.get(result.runner, result.runner)),
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
        *_schedule_rows(result),
        ("peak RSS", f"{s.get('peak_rss_mb', 0):.1f} MB"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
    lines += [f"WARNING: {w}" for w in s.get("warnings", [])]
    return "\n".join(lines)


# --------------------------------------------------------------------------- per-operator profile

OP_PROFILE_SOURCE = (
    "TfLiteInterpreterOptionsSetTelemetryProfiler: a pass after the measured runs on the same "
    "model bytes, threads and the last frame's inputs; 'delegate' times each delegated "
    "partition by the delegate's own per-operator timing (XNNPACK), 'builtin' runs without a "
    "delegate and times every TFLite operator")
_ELEMENTWISE = {"ADD", "SUB", "MUL", "DIV", "MAXIMUM", "MINIMUM", "RELU", "RELU6", "LOGISTIC",
                "HARD_SWISH", "TANH", "SQUARED_DIFFERENCE", "RSQRT", "SQRT", "EXP", "PRELU"}


def operator_flops(tflite: Path) -> dict[tuple[int, int], tuple[str, int | None]]:
    """(subgraph, operator index) -> (op name, FLOPs of one invocation or None when not known).

    Counted as 2 per multiply-accumulate for convolutions and matrix products, 1 per output
    element for element-wise ops, window size per output for pooling, 1 per input for MEAN."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(tflite.read_bytes(), 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    codes = [names.get(max(model.OperatorCodes(i).BuiltinCode(),
                           model.OperatorCodes(i).DeprecatedBuiltinCode()), "CUSTOM")
             for i in range(model.OperatorCodesLength())]
    table: dict[tuple[int, int], tuple[str, int | None]] = {}
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)

        def shape(index: int, graph=graph) -> list[int]:
            tensor = graph.Tensors(index)
            return [int(d) for d in tensor.ShapeAsNumpy()] if tensor.ShapeLength() else []

        for i in range(graph.OperatorsLength()):
            op = graph.Operators(i)
            name = codes[op.OpcodeIndex()]
            inputs = [int(x) for x in op.InputsAsNumpy()] if op.InputsLength() else []
            outputs = [int(x) for x in op.OutputsAsNumpy()] if op.OutputsLength() else []
            table[(s, i)] = (name, _flops(name, [shape(x) if x >= 0 else [] for x in inputs],
                                          [shape(x) for x in outputs]))
    return table


def _flops(name: str, inputs: list[list[int]], outputs: list[list[int]]) -> int | None:
    out = int(np.prod(outputs[0])) if outputs and outputs[0] else 0
    if name == "CONV_2D" and len(inputs) > 1 and len(inputs[1]) == 4:
        _, kh, kw, cin = inputs[1]
        return 2 * out * kh * kw * cin
    if name == "DEPTHWISE_CONV_2D" and len(inputs) > 1 and len(inputs[1]) == 4:
        _, kh, kw, _ = inputs[1]
        return 2 * out * kh * kw
    if name == "FULLY_CONNECTED" and len(inputs) > 1 and len(inputs[1]) == 2:
        return 2 * out * inputs[1][1]
    if name == "BATCH_MATMUL" and inputs and inputs[0]:
        return 2 * out * inputs[0][-1]
    if name in _ELEMENTWISE:
        return out
    if name == "MEAN" and inputs and inputs[0]:
        return int(np.prod(inputs[0]))
    return None


def op_profile_json(raw: dict[str, Any], tflite: Path) -> dict[str, Any]:
    """The engine's raw passes as sorted per-op tables with share of the pass's invoke time,
    FLOPs where known, and per-partition totals for a delegate pass."""
    flops = operator_flops(tflite)
    passes = []
    for p in raw.get("passes", []):
        runs = max(1, int(p["runs"]))
        total_ms = p["invoke_avg_us"] / 1000.0
        ops = []
        for op in p["ops"]:
            avg_ms = op["total_us"] / runs / 1000.0  # per run
            known = None if op["delegate_inner"] else flops.get((op["subgraph"], op["node"]))
            op_flops = known[1] if known and known[0] == op["name"] else None
            ops.append({"name": op["name"], "subgraph": op["subgraph"],
                        "partition": op["partition"] if op["delegate_inner"] else None,
                        "node": op["node"], "delegate_inner": op["delegate_inner"],
                        "avg_ms": round(avg_ms, 5),
                        "share": round(avg_ms / total_ms, 5) if total_ms else None,
                        "flops": op_flops,
                        "gflops_per_s": (round(op_flops / avg_ms / 1e6, 3)
                                         if op_flops and avg_ms > 0 else None)})
        ops.sort(key=lambda o: -o["avg_ms"])
        attributed = sum(o["avg_ms"] for o in ops)
        entry = {"label": p["label"], "delegate": p["delegate"], "runs": runs,
                 "invoke_avg_ms": round(total_ms, 5), "attributed_ms": round(attributed, 5),
                 "ops": ops, "top_ops": _top_types(ops, total_ms), "error": p.get("error")}
        if any(o["delegate_inner"] for o in ops):
            entry["partitions"] = _partitions(ops, total_ms)
        passes.append(entry)
    return {"source": OP_PROFILE_SOURCE, "passes": passes}


def _top_types(ops: list[dict[str, Any]], total_ms: float, count: int = 5) -> list[dict]:
    """Op types by their summed time (e.g. all CONV_2D together)."""
    by_type: dict[str, float] = {}
    for op in ops:
        by_type[op["name"]] = by_type.get(op["name"], 0.0) + op["avg_ms"]
    ranked = sorted(by_type.items(), key=lambda kv: -kv[1])[:count]
    return [{"name": k, "avg_ms": round(v, 5),
             "share": round(v / total_ms, 5) if total_ms else None} for k, v in ranked]


def _partitions(ops: list[dict[str, Any]], total_ms: float) -> list[dict[str, Any]]:
    parts: dict[int, list[dict[str, Any]]] = {}
    for op in ops:
        if op["delegate_inner"]:
            parts.setdefault(op["partition"], []).append(op)
    return [{"partition": k, "ops": len(v), "avg_ms": round(sum(o["avg_ms"] for o in v), 5),
             "share": round(sum(o["avg_ms"] for o in v) / total_ms, 5) if total_ms else None}
            for k, v in sorted(parts.items())]


def format_op_table(section: dict[str, Any], top: int = 15) -> str:
    """The per-op table (stderr): every pass, slowest operators first."""
    lines = []
    for p in section["passes"]:
        if p.get("error"):
            lines.append(f"op profile, {p['label']} pass ({p['delegate']}): could not run: "
                         f"{p['error']}")
            continue
        lines.append(f"op profile, {p['label']} pass ({p['delegate']}, {p['runs']} runs): "
                     f"invoke {p['invoke_avg_ms']:.3f} ms, attributed "
                     f"{p['attributed_ms']:.3f} ms")
        for part in p.get("partitions", []):
            lines.append(f"  partition {part['partition']}: {part['ops']} ops "
                         f"{part['avg_ms']:.3f} ms ({100 * (part['share'] or 0):.1f} %)")
        lines.append(f"  {'rank':>4}  {'op':34s} {'node':>5}  {'ms':>8}  {'share':>6}  "
                     f"{'cum':>6}  {'MFLOP':>8}  {'GFLOP/s':>7}")
        cumulative = 0.0
        for rank, op in enumerate(p["ops"][:top], 1):
            cumulative += op["share"] or 0.0
            where = f"{op['partition']}:{op['node']}" if op["delegate_inner"] else str(op["node"])
            mflop = f"{op['flops'] / 1e6:8.2f}" if op["flops"] else f"{'-':>8}"
            rate = f"{op['gflops_per_s']:7.2f}" if op["gflops_per_s"] else f"{'-':>7}"
            lines.append(f"  {rank:>4}  {op['name'][:34]:34s} {where:>5}  {op['avg_ms']:8.4f}  "
                         f"{100 * (op['share'] or 0):5.1f}%  {100 * cumulative:5.1f}%  "
                         f"{mflop}  {rate}")
        lines.append("  top op types: " + ", ".join(
            f"{t['name']} {100 * (t['share'] or 0):.1f}%" for t in p["top_ops"]))
    return "\n".join(lines)
