"""The three students at the papers' resolutions: export, verification and latency.

For each of JITNet (720x1280), DeepLabV3-MNV2 (256x512) and MobileVOS (480x864, Q=2):
  1. export TFLite + ONNX with verification on real bikes.mp4 frames: conversion time per step,
     file sizes, TRANSPOSE ops, verification errors  -> results/students_export.{json,md}
  2. profile the TFLite artifact with the on-device engine on the host, and time ONNX Runtime
     and PyTorch eager on the same frames and threads in the same run (ratios, not absolutes)
     -> results/students_profile.json, results/students.md,
        results/profile_<model>.{csv,png} (per-frame latency)
Artifacts stay in --work (outside the repository).

    .venv/bin/python benchmarks/students.py [--models jitnet,deeplab,mobilevos] [--num_threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from provenance import provenance

from mobdistill.export import manifest as mf
from mobdistill.export.api import export_model
from mobdistill.export.deploy import run_torch, signature_modules
from mobdistill.export.verify import OnnxRunner, TfliteRunner, object_masks
from mobdistill.models import registry
from mobdistill.runtime.engine import EngineError, EngineOptions
from mobdistill.runtime.profile import profile
from mobdistill.video import read_frames

RESULTS = Path(__file__).parent / "results"


def export_one(name: str, work: Path, tiny: bool) -> dict:
    started = time.perf_counter()
    result = export_model(name, out_dir=work / name, tiny=tiny)
    total = time.perf_counter() - started
    row = result.to_json()
    row["total_s"] = round(total, 1)
    return row


def step_inputs(manifest_path: Path, frames: np.ndarray) -> tuple[str, list[dict]]:
    """Inputs of the per-frame signature for each frame (memory from a real init for VOS)."""
    manifest = mf.load(manifest_path)
    memory = manifest["memory"]
    if memory is None:
        return "serving_default", [{"frame": f[None].astype(np.float32)} for f in frames]
    runner = TfliteRunner(manifest.tflite_path)
    init = next(s for s in manifest["signatures"] if s["name"] == memory["init_signature"])
    mask = next(t for t in init["inputs"] if t["role"] == "mask")
    _, h, w, n = mask["shape"]
    first = runner.run(init["name"], {"frame": frames[0][None].astype(np.float32),
                                      mask["name"]: object_masks(h, w, n)})
    q = memory["queue_length"]
    held = {c["input"]: np.concatenate([first[c["output"]]] * q) for c in memory["carry"]}
    return memory["step_signature"], [{"frame": f[None].astype(np.float32), **held} for f in frames]


def time_runs(run, inputs: list[dict], repeats: int) -> float:
    run(inputs[0])  # warm-up
    times = []
    for i in range(repeats):
        started = time.perf_counter()
        run(inputs[i % len(inputs)])
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def side_by_side(name: str, manifest_path: Path, threads: int, repeats: int) -> dict:
    """Median ms of ai_edge_litert, ONNX Runtime and PyTorch eager on the same inputs."""
    manifest = mf.load(manifest_path)
    h, w = manifest.resolution
    frames = read_frames("bikes.mp4", 8, size=(h, w), start=0)  # the engine's frames too
    signature, inputs = step_inputs(manifest_path, frames)
    tflite = TfliteRunner(manifest.tflite_path, num_threads=threads)
    onnx = OnnxRunner({signature: manifest.artifact("onnx", signature).path},
                      num_threads=threads)
    entry = registry.get(name)
    config = entry.config_type(**manifest["model"]["config"])
    modules = signature_modules(entry.build(config), entry.signatures(config, h, w))
    torch.set_num_threads(threads)
    return {
        "signature": signature,
        "ai_edge_litert_ms": time_runs(lambda x: tflite.run(signature, x), inputs, repeats),
        "onnxruntime_ms": time_runs(lambda x: onnx.run(signature, x), inputs, repeats),
        "pytorch_eager_ms": time_runs(lambda x: run_torch(modules[signature], x), inputs, repeats),
    }


def sgemm_peak_gflops(threads: int, size: int = 2048, repeats: int = 20) -> float:
    """This machine's float32 GEMM rate: the best of `repeats` torch.mm (MKL/oneDNN) of size^3."""
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def signature_gflop(name: str, manifest_path: Path, signature: str, inputs: dict) -> float:
    """Floating-point operations of one call of `signature` in PyTorch (2 per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    manifest = mf.load(manifest_path)
    entry = registry.get(name)
    config = entry.config_type(**manifest["model"]["config"])
    h, w = manifest.resolution
    modules = signature_modules(entry.build(config), entry.signatures(config, h, w))
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        run_torch(modules[signature], inputs)
    return counter.get_total_flops() / 1e9


class BoundOrt:
    """ONNX Runtime with inputs and outputs bound once (IOBinding): a timed run is the
    session's run alone, like the engine's Invoke."""

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.ort = ort
        self.session = ort.InferenceSession(str(path), options,
                                            providers=["CPUExecutionProvider"])
        self.binding = self.session.io_binding()
        self._held: list = []  # the bound inputs' OrtValues must outlive the binding
        self._outputs = {out.name: ort.OrtValue.ortvalue_from_shape_and_type(
            [int(d) for d in out.shape], np.float32) for out in self.session.get_outputs()}

    def bind(self, inputs: dict) -> None:
        """Binds `inputs` (numpy) and preallocated outputs; untimed."""
        self._held = []
        for name, array in inputs.items():
            value = self.ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array))
            self._held.append(value)
            self.binding.bind_ortvalue_input(name, value)
        for name, value in self._outputs.items():
            self.binding.bind_ortvalue_output(name, value)

    def run_ms(self) -> float:
        started = time.perf_counter()
        self.session.run_with_iobinding(self.binding)
        return (time.perf_counter() - started) * 1000


def _category(op: str, depthwise: bool = False) -> str:
    """A coarse op class shared by both runtimes' profiles."""
    low = op.lower()
    if depthwise or "dwconv" in low:
        return "depthwise conv"
    if any(k in low for k in ("conv", "gemm", "fully connected", "matmul", "matrix multiply")):
        return "conv / gemm"
    if any(k in low for k in ("resize", "bilinear", "upsample")):
        return "resize"
    if any(k in low for k in ("softmax", "argmax", "arg_max", "reduce")):
        return "softmax / reduce"
    if any(k in low for k in ("mul", "add", "sub", "div", "clamp", "relu", "sigmoid", "clip",
                              "max", "min", "tanh")):
        return "elementwise"
    if any(k in low for k in ("concat", "copy", "transpose", "reshape", "slice", "pad",
                              "split", "gather")):
        return "layout / copy"
    return "other: " + op


def graph_gflop_by_class(tflite_path: Path, signature: str) -> dict[str, float]:
    """GFLOP per frame of each op class in `signature`'s subgraph of the converted graph (2 per
    multiply-add; convs and fully connected from their weight shapes, other ops as output
    elements), so both runtimes' per-class times become rates."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(tflite_path.read_bytes(), 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    codes = [names.get(max(model.OperatorCodes(i).BuiltinCode(),
                           model.OperatorCodes(i).DeprecatedBuiltinCode()), "CUSTOM")
             for i in range(model.OperatorCodesLength())]
    index = next(model.SignatureDefs(i).SubgraphIndex()
                 for i in range(model.SignatureDefsLength())
                 if model.SignatureDefs(i).SignatureKey().decode() == signature)
    graph = model.Subgraphs(index)

    def shape(t: int) -> list[int]:
        return [int(d) for d in graph.Tensors(t).ShapeAsNumpy()]

    totals: dict[str, float] = {}
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        name, inputs = codes[op.OpcodeIndex()], [int(t) for t in op.InputsAsNumpy()]
        out_elements = float(np.prod(shape(int(op.OutputsAsNumpy()[0]))))
        if name == "CONV_2D":
            _, kh, kw, cin = shape(inputs[1])
            flop, key = 2 * out_elements * kh * kw * cin, "conv / gemm"
        elif name == "DEPTHWISE_CONV_2D":
            _, kh, kw, _ = shape(inputs[1])
            flop, key = 2 * out_elements * kh * kw, "depthwise conv"
        elif name in ("FULLY_CONNECTED", "BATCH_MATMUL"):
            computed = model.Buffers(graph.Tensors(inputs[1]).Buffer()).DataLength() == 0
            # a FULLY_CONNECTED with computed weights is left to TFLite's own kernel, which the
            # engine's profile names so
            key = "other: FULLY_CONNECTED" if computed and name == "FULLY_CONNECTED" else \
                "conv / gemm"
            flop = 2 * out_elements * shape(inputs[0])[-1]
        else:
            flop, key = out_elements, _category(name)
        totals[key] = totals.get(key, 0.0) + flop / 1e9
    return totals


def engine_ops(manifest_path: Path, threads: int, runs: int, frames_path: Path,
               work: Path) -> list[dict]:
    """The engine's op profile (XNNPACK's operators in run order): name, class, ms per frame."""
    from mobdistill.runtime.device import LocalDevice
    from mobdistill.runtime.engine import run_engine

    result = run_engine(LocalDevice(work / "device"), manifest_path, num_threads=threads,
                        warmup_runs=2, num_runs=runs, frames_path=frames_path,
                        enable_op_profiling=True, timeout_s=1200)
    ops = []
    for p in (result.op_profile or {}).get("passes", []):
        if p["label"] != "delegate":
            continue  # the builtin-kernel pass is a comparison, not what frames run
        for op in p["ops"]:
            delegated = op.get("delegate_inner", True)
            if not delegated and op.get("partition", -1) >= 0:
                continue  # the delegate node itself spans its inner ops
            ops.append({"name": op["name"], "class": _category(op["name"]),
                        "delegated": delegated,
                        "ms": op["total_us"] / op["count"] / 1000})
    return ops


def by_class(ops: list[dict]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for op in ops:
        totals[op["class"]] = totals.get(op["class"], 0.0) + op["ms"]
    return totals


def ort_ops(path: Path, inputs: dict, threads: int, runs: int, work: Path) -> list[dict]:
    """ONNX Runtime's profile (its optimized graph's nodes in run order): name, op type,
    class, output shape, ms per frame."""
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = str(work / "ort_profile")
    options.optimized_model_filepath = str(work / "ort_optimized.onnx")  # the nodes it runs
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    groups = {}
    for node in onnx.load(options.optimized_model_filepath).graph.node:
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        groups[node.name] = group > 1
    for _ in range(runs):
        session.run(None, inputs)
    events = json.loads(Path(session.end_profiling()).read_text())
    ops: dict[str, dict] = {}
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        node = e["name"][: -len("_kernel_time")]
        op_type = e["args"].get("op_name", node)
        row = ops.setdefault(node, {"name": node, "op": op_type,
                                    "class": _category(op_type, groups.get(node, False)),
                                    "output": e["args"].get("output_type_shape"), "ms": 0.0})
        row["ms"] += e["dur"] / 1000 / runs
    return list(ops.values())


def op_table(gflop: dict[str, float], engine: dict[str, float], ort: dict[str, float],
             engine_median: float, ort_median: float) -> list[dict]:
    """Per op class: each runtime's profiled ms scaled to its unprofiled median (profiling
    adds a timer per op), GFLOP and the rate each achieves."""
    scale_e = engine_median / sum(engine.values()) if engine else 0.0
    scale_o = ort_median / sum(ort.values()) if ort else 0.0
    rows = []
    for key in sorted(set(engine) | set(ort), key=lambda k: -(engine.get(k, 0) + ort.get(k, 0))):
        e_ms, o_ms = engine.get(key, 0.0) * scale_e, ort.get(key, 0.0) * scale_o
        g = gflop.get(key)
        rows.append({"class": key, "gflop": g, "engine_ms": e_ms, "ort_ms": o_ms,
                     "engine_gflops": g / e_ms * 1000 if g and e_ms else None,
                     "ort_gflops": g / o_ms * 1000 if g and o_ms else None,
                     "engine_minus_ort_ms": e_ms - o_ms})
    return rows


def invoke_vs_ort(name: str, manifest_path: Path, threads: int, runs: int, rounds: int,
                  work: Path) -> dict:
    """Engine Invoke vs ORT run with IOBinding on the same frames and threads, in rounds that
    alternate which goes first; medians pooled over the rounds."""
    from mobdistill.runtime.device import LocalDevice
    from mobdistill.runtime.engine import run_engine

    manifest = mf.load(manifest_path)
    h, w = manifest.resolution
    frames = read_frames("bikes.mp4", 8, size=(h, w), start=0)
    frames_path = work / f"{name}_frames.rgb"
    frames.astype(np.uint8).tofile(frames_path)
    signature, inputs = step_inputs(manifest_path, frames)
    ort_runner = BoundOrt(manifest.artifact("onnx", signature).path, threads)
    ort_runner.bind(inputs[0])
    for _ in range(2):
        ort_runner.run_ms()  # warm-up, as the engine's warmup runs
    engine_ms: list[float] = []
    ort_ms: list[float] = []
    loads = []
    for r in range(rounds):
        loads.append(os.getloadavg()[0])
        order = ("engine", "ort") if r % 2 == 0 else ("ort", "engine")
        for side in order:
            if side == "engine":
                result = run_engine(LocalDevice(work / "device"), manifest_path,
                                    num_threads=threads, warmup_runs=2, num_runs=runs,
                                    frames_path=frames_path, timeout_s=1200)
                engine_ms += [us / 1000 for us in result.measured_invoke_us()]
            else:
                for i in range(runs):
                    ort_runner.bind(inputs[i % len(inputs)])
                    ort_ms.append(ort_runner.run_ms())
    loads.append(os.getloadavg()[0])
    gflop = signature_gflop(name, manifest_path, signature, inputs[0])
    op_runs = max(3, runs // 3)
    engine_median, ort_median = float(np.median(engine_ms)), float(np.median(ort_ms))
    ort_detail = ort_ops(manifest.artifact("onnx", signature).path, inputs[0], threads, op_runs,
                         work)
    ops: dict = {"ort": by_class(ort_detail), "ort_ops": ort_detail}
    try:
        engine_detail = engine_ops(manifest_path, threads, op_runs, frames_path, work)
        ops.update({"engine": by_class(engine_detail), "engine_ops": engine_detail})
    except EngineError as err:  # the profile explains; the timing above stands without it
        ops["engine_error"] = str(err)
    ops["gflop"] = graph_gflop_by_class(manifest.tflite_path, signature)
    ops["table"] = op_table(ops["gflop"], ops.get("engine", {}), ops["ort"], engine_median,
                            ort_median)
    tflite = next(a for a in manifest["artifacts"] if a["format"] == "tflite")
    return {"signature": signature, "tflite_sha256": tflite["sha256"],
            "export_created_utc": manifest["created_utc"],
            "gflop_per_frame": gflop, "runs_per_round": runs,
            "rounds": rounds, "host_load_1min": loads,
            "engine_invoke_median_ms": engine_median, "ort_iobinding_median_ms": ort_median,
            "engine_over_ort": engine_median / ort_median,
            "engine_gflops": gflop / engine_median * 1000,
            "ort_gflops": gflop / ort_median * 1000,
            "op_class_ms_per_frame": ops,
            "engine_invoke_ms": engine_ms, "ort_iobinding_ms": ort_ms}


def ort_main(args: argparse.Namespace) -> None:
    """--invoke_vs_ort: the existing exports in --work, engine vs bound ORT, with the peak."""
    rows = {}
    peak_before = sgemm_peak_gflops(args.num_threads)
    for name in args.models.split(","):
        manifest_path = next((args.work / name).glob("*.manifest.json"))
        rows[name] = invoke_vs_ort(name, manifest_path, args.num_threads, args.num_runs,
                                   args.rounds, args.work)
        print(name, {k: v for k, v in rows[name].items() if not isinstance(v, list)},
              flush=True)
    peak = max(peak_before, sgemm_peak_gflops(args.num_threads))
    for row in rows.values():
        row["engine_fraction_of_sgemm_peak"] = row["engine_gflops"] / peak
        row["ort_fraction_of_sgemm_peak"] = row["ort_gflops"] / peak
    settings = {"models": args.models, "num_threads": args.num_threads, "warmup_runs": 2,
                "num_runs": args.num_runs, "rounds": args.rounds, "video": "bikes.mp4",
                "frames": 8, "ort": "IOBinding, intra_op threads = num_threads, sequential"}
    out = {**provenance(settings), "sgemm_peak_gflops": peak,
           "sgemm": "best of 20 torch.mm 2048^3 float32, before and after", "models": rows}
    (RESULTS / "students_ort.json").write_text(json.dumps(out, indent=2) + "\n")
    write_ort_markdown(out)


def refresh_op_tables(out: dict, work: Path) -> None:
    """Op classes, graph GFLOP and per-class tables again from the stored per-op profiles and
    medians (after a change to the classification; no timing is repeated)."""
    for name, row in out["models"].items():
        ops = row["op_class_ms_per_frame"]
        manifest = mf.load(next((work / name).glob("*.manifest.json")))
        for op in ops.get("engine_ops", []):
            op["class"] = _category(op["name"])
        if "engine_ops" in ops:
            ops["engine"] = by_class(ops["engine_ops"])
        ops["gflop"] = graph_gflop_by_class(manifest.tflite_path, row["signature"])
        ops["table"] = op_table(ops["gflop"], ops.get("engine", {}), ops["ort"],
                                row["engine_invoke_median_ms"], row["ort_iobinding_median_ms"])


def write_ort_markdown(out: dict) -> None:
    settings, rows = out["settings"], out["models"]
    lines = [f"Invoke vs ONNX Runtime (IOBinding), {settings['num_threads']} threads, "
             f"{settings['rounds']} interleaved rounds x {settings['num_runs']} runs; sgemm peak "
             f"{out['sgemm_peak_gflops']:.1f} GFLOP/s", "",
             "| model | GFLOP/frame | engine ms | GFLOP/s (peak) | ORT ms | GFLOP/s (peak) |"
             " engine / ORT | host load |", "|---" * 8 + "|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['gflop_per_frame']:.2f} | "
                     f"{r['engine_invoke_median_ms']:.2f} | {r['engine_gflops']:.1f} "
                     f"({r['engine_fraction_of_sgemm_peak']:.0%}) | "
                     f"{r['ort_iobinding_median_ms']:.2f} | {r['ort_gflops']:.1f} "
                     f"({r['ort_fraction_of_sgemm_peak']:.0%}) | {r['engine_over_ort']:.2f} | "
                     f"{min(r['host_load_1min']):.1f}-{max(r['host_load_1min']):.1f} |")
    for name, r in rows.items():
        table = r["op_class_ms_per_frame"].get("table", [])
        lines += ["", f"{name}: per op class, each runtime's profile scaled to its median "
                  "(ms, GFLOP/s)", "",
                  "| op class | GFLOP | engine ms | engine GFLOP/s | ORT ms | ORT GFLOP/s |"
                  " engine - ORT ms |", "|---" * 7 + "|"]
        for c in table:
            rate = [f"{c[k]:.1f}" if c[k] else "-" for k in ("engine_gflops", "ort_gflops")]
            lines.append(f"| {c['class']} | {c['gflop'] or 0:.3f} | {c['engine_ms']:.1f} | "
                         f"{rate[0]} | {c['ort_ms']:.1f} | {rate[1]} | "
                         f"{c['engine_minus_ort_ms']:+.1f} |")
    (RESULTS / "students_ort.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:  # noqa: C901 - a straight script
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="jitnet,deeplab,mobilevos")
    parser.add_argument("--num_threads", type=int, default=2)
    parser.add_argument("--num_runs", type=int, default=30)
    parser.add_argument("--work", type=Path, default=Path("/tmp/mobdistill-bench/students"))
    parser.add_argument("--tiny", action="store_true", help="smoke run; writes no results")
    parser.add_argument("--refresh_op_tables", action="store_true",
                        help="recompute students_ort's op-class tables from its stored profiles")
    parser.add_argument("--invoke_vs_ort", action="store_true",
                        help="only engine Invoke vs ORT with IOBinding on the exports in --work")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.refresh_op_tables:
        out = json.loads((RESULTS / "students_ort.json").read_text())
        refresh_op_tables(out, args.work)
        (RESULTS / "students_ort.json").write_text(json.dumps(out, indent=2) + "\n")
        write_ort_markdown(out)
        return
    if args.invoke_vs_ort:
        ort_main(args)
        return
    results = RESULTS if not args.tiny else args.work / "results"
    results.mkdir(parents=True, exist_ok=True)
    exports, profiles = {}, {}
    for name in args.models.split(","):
        exports[name] = export_one(name, args.work, args.tiny)
        manifest_path = Path(exports[name]["manifest_path"])
        options = EngineOptions(num_threads=args.num_threads, warmup_runs=2,
                                num_runs=args.num_runs)
        report = profile(artifact=manifest_path, out_dir=args.work / f"profile-{name}",
                         options=options)
        shutil.copyfile(report.png_path, results / f"profile_{name}.png")
        shutil.copyfile(report.csv_path, results / f"profile_{name}.csv")
        engine = json.loads(report.json_path.read_text())
        ratios = side_by_side(name, manifest_path, args.num_threads, args.num_runs)
        engine_ms = float(np.median(report.result.measured_invoke_us())) / 1000
        profiles[name] = {"engine": engine, "engine_median_ms": engine_ms, **ratios,
                          "onnxruntime_over_engine": ratios["onnxruntime_ms"] / engine_ms,
                          "pytorch_over_engine": ratios["pytorch_eager_ms"] / engine_ms}
        print(report.table)
    settings = {"models": args.models, "num_threads": args.num_threads, "warmup_runs": 2,
                "num_runs": args.num_runs, "video": "bikes.mp4"}
    for file, models in (("students_export.json", exports), ("students_profile.json", profiles)):
        (results / file).write_text(
            json.dumps({**provenance(settings), "models": models}, indent=2) + "\n")
    (results / "students.md").write_text(markdown(exports, profiles, args.num_threads))
    print(markdown(exports, profiles, args.num_threads))


def markdown(exports: dict, profiles: dict, threads: int) -> str:
    lines = ["| model | resolution | params | convert TFLite s | TFLite MB | ONNX MB | TRANSPOSE |"
             " TFLite max abs err | ONNX max abs err |", "|---" * 9 + "|"]
    for name, row in exports.items():
        sizes = {a["format"]: sum(b["size_bytes"] for b in row["artifacts"]
                                  if b["format"] == a["format"])
                 for a in row["artifacts"]}
        errs = {fmt: max(c["max_abs_err"] for c in row["verification"]["results"]
                         if c["format"] == fmt)
                for fmt in ("tflite", "onnx")}
        transposes = next(a["transpose_ops"] for a in row["artifacts"] if a["format"] == "tflite")
        h, w = row["resolution"]
        lines.append(f"| {name} | {h}x{w} | {row['num_params']:,} | "
                     f"{row['timings_s']['convert tflite']:.1f} | {sizes['tflite'] / 1e6:.2f} | "
                     f"{sizes['onnx'] / 1e6:.2f} | {transposes} | {errs['tflite']:.1e} | "
                     f"{errs['onnx']:.1e} |")
    lines += ["", f"Median per-frame invoke, {threads} threads, same frames, same run:", "",
              "| model | signature | engine ms | ai_edge_litert ms | ONNX Runtime ms | PyTorch ms |"
              " ORT / engine | PyTorch / engine |", "|---" * 8 + "|"]
    for name, p in profiles.items():
        lines.append(f"| {name} | {p['signature']} | {p['engine_median_ms']:.2f} | "
                     f"{p['ai_edge_litert_ms']:.2f} | {p['onnxruntime_ms']:.2f} | "
                     f"{p['pytorch_eager_ms']:.2f} | {p['onnxruntime_over_engine']:.2f} | "
                     f"{p['pytorch_over_engine']:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
