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
from mobdistill.runtime.engine import EngineOptions
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


def main() -> None:  # noqa: C901 - a straight script
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="jitnet,deeplab,mobilevos")
    parser.add_argument("--num_threads", type=int, default=2)
    parser.add_argument("--num_runs", type=int, default=30)
    parser.add_argument("--work", type=Path, default=Path("/tmp/mobdistill-bench/students"))
    parser.add_argument("--tiny", action="store_true", help="smoke run; writes no results")
    args = parser.parse_args()
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
