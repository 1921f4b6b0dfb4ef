"""Engine overhead: the C++ engine's median Invoke vs ai_edge_litert's on the same artifact.

Same .tflite, same thread count, same decoded bikes.mp4 frames, XNNPACK in both (the Python
interpreter applies it by default). Rounds alternate engine and Python to share thermal/noise
conditions; the reported figure is the median over rounds of each side's median invoke time.
Target: engine within 10% of the interpreter (the engine should add nothing around Invoke).

    python benchmarks/engine_overhead.py [--manifest M | --model deeplab --resolution 256x512]
           [--num_threads 2] [--num_runs 100] [--rounds 3]

Writes benchmarks/results/engine_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from provenance import provenance

from mobdistill.export.manifest import Manifest
from mobdistill.runtime.device import LocalDevice
from mobdistill.runtime.engine import REPO_ROOT, run_engine
from mobdistill.runtime.frames import decode_to_raw
from mobdistill.runtime.profile import export_if_needed

OUT = REPO_ROOT / "benchmarks" / "results" / "engine_overhead.json"


def python_invoke_us(tflite: Path, frames: np.ndarray, num_threads: int, warmup: int,
                     runs: int) -> list[float]:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(tflite), num_threads=num_threads)
    interp.allocate_tensors()
    index = interp.get_input_details()[0]["index"]
    times = []
    for i in range(warmup + runs):
        interp.set_tensor(index, frames[(1 + i) % len(frames)][None].astype(np.float32))
        t0 = time.perf_counter()
        interp.invoke()
        t1 = time.perf_counter()
        if i >= warmup:
            times.append((t1 - t0) * 1e6)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path)
    parser.add_argument("--model", default="deeplab")
    parser.add_argument("--resolution", default="256x512")
    parser.add_argument("--num_threads", type=int, default=2)
    parser.add_argument("--num_runs", type=int, default=100)
    parser.add_argument("--warmup_runs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = REPO_ROOT / "build" / "bench-engine-overhead"
    if args.manifest is None:
        h, w = (int(x) for x in args.resolution.split("x"))
        args.manifest = export_if_needed(args.model, out_dir=work, resolution=(h, w))
    manifest = Manifest.load(args.manifest)
    if manifest.memory is not None:
        raise SystemExit("engine_overhead compares stateless models (one serving_default)")
    tflite = manifest.tflite_path
    h, w = manifest.resolution
    total = args.warmup_runs + args.num_runs + 1
    frames_file = decode_to_raw(None, work / f"frames-{h}x{w}.rgb", resolution=(h, w),
                                max_frames=total)
    frames = np.fromfile(frames_file.path, np.uint8).reshape(-1, h, w, 3)
    device = LocalDevice(work / "device")
    engine_medians, python_medians, delegate = [], [], ""
    for _ in range(args.rounds):
        result = run_engine(device, args.manifest, num_threads=args.num_threads,
                            warmup_runs=args.warmup_runs, num_runs=args.num_runs,
                            frames_path=frames_file.path, out_dir=work / "engine")
        delegate = result.summary["delegate_used"]
        engine_medians.append(float(np.median(result.measured_invoke_us())))
        python_medians.append(float(np.median(python_invoke_us(
            tflite, frames, args.num_threads, args.warmup_runs, args.num_runs))))
    engine_us, python_us = float(np.median(engine_medians)), float(np.median(python_medians))
    report = {
        "model": manifest.model_name, "resolution": [h, w], "artifact": str(tflite),
        "num_threads": args.num_threads, "num_runs": args.num_runs, "rounds": args.rounds,
        "input": f"bikes.mp4 decoded at {h}x{w}", "engine_delegate_used": delegate,
        "engine_median_invoke_us_per_round": engine_medians,
        "python_median_invoke_us_per_round": python_medians,
        "engine_median_invoke_us": engine_us, "python_median_invoke_us": python_us,
        "engine_over_python": engine_us / python_us, "target": "within 10% (0.90..1.10)",
        "within_target": abs(engine_us / python_us - 1.0) <= 0.10,
        **provenance({"num_threads": args.num_threads, "warmup_runs": args.warmup_runs,
                      "num_runs": args.num_runs, "rounds": args.rounds,
                      "artifact": str(args.manifest)}),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
