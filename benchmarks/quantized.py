"""Quantized variants side by side with float32: size, engine latency, agreement.

For each student, from one verified float32 export (no reconversion), `quantize_export` makes
the fp16, dynamic-int8 and int8 variants (int8 calibrated on the registry's calibration clip) and
checks each against float32 on `--frames` frames of the verification clip (argmax agreement,
mIoU vs float32, and vs the selfie teacher for the pretrained DeepLab). Then the engine runs
float32 and every variant on the same decoded frames with the same threads, interleaved: in each
round every variant runs once, in an order rotated per round, so drift of a shared host lands
on all of them alike. Latency ratios are per round (paired), with 95% bootstrap CIs over rounds;
agreement CIs are over frames (seed fixed).

Students: DeepLab is the stream's pretrained starting point (`experiments.student`, teacher-
fitted, the only trained weights in the project); JITNet and MobileVOS carry seeded random
weights (`--export NAME=MANIFEST[:CHECKPOINT]`), so their agreement says nothing about accuracy.

    .venv/bin/python benchmarks/quantized.py \\
        --export deeplab=DIR/deeplab.manifest.json:DIR/student.pt \\
        --export jitnet=... --export mobilevos=... [--rounds 3 --num_runs 10 --num_threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from provenance import provenance

from mobdistill.errors import MobdistillError
from mobdistill.export import manifest as mf
from mobdistill.export.api import quantize_export
from mobdistill.export.quantize import (
    CALIBRATION_FRAMES,
    DEFAULT_MIN_AGREEMENT,
    QUANTIZE_MODES,
    QuantizeOptions,
    TeacherReference,
)
from mobdistill.runtime.device import LocalDevice
from mobdistill.runtime.engine import EngineOptions, run_engine
from mobdistill.runtime.frames import decode_to_raw

RESULTS = Path(__file__).parent / "results"
SEED = 0


def bootstrap_ci(values: list[float], seed: int = SEED, draws: int = 2000) -> list[float]:
    """95% percentile bootstrap interval of the mean."""
    data = np.asarray(values, dtype=np.float64)
    if len(data) < 2:
        return [float(data.mean()), float(data.mean())]
    rng = np.random.default_rng(seed)
    means = rng.choice(data, size=(draws, len(data)), replace=True).mean(axis=1)
    return [round(float(np.percentile(means, 2.5)), 6), round(float(np.percentile(means, 97.5)), 6)]


def make_variants(name: str, manifest: Path, checkpoint: Path | None, work: Path,
                  frames: int, calibration_frames: int,
                  teacher: TeacherReference | None) -> dict[str, dict]:
    """float32 + each mode: manifest path, size, quantization section, time to make."""
    source = mf.load(manifest)
    rows = {"float32": {"manifest": str(manifest), "size_bytes": source.tflite.size_bytes,
                        "quantize_s": 0.0, "check": None}}
    for mode in QUANTIZE_MODES:
        started = time.perf_counter()
        # threshold 0: measure every variant; whether it meets the export's default is recorded
        options = QuantizeOptions(mode, verification_frames=frames, teacher=teacher,
                                  calibration_frames=calibration_frames, min_argmax_agreement=0.0)
        try:
            result = quantize_export(manifest, options, out_dir=work / name,
                                     checkpoint=checkpoint)
        except MobdistillError as err:  # recorded, and the variant left out of the timing
            rows[mode] = {"error": str(err), "quantize_s": round(time.perf_counter() - started, 1)}
            print(f"{name} {mode}: {err}", flush=True)
            continue
        check = result.quantization["verification"]
        rows[mode] = {"manifest": str(result.manifest_path),
                      "size_bytes": result.artifacts[0].size_bytes,
                      "quantize_s": round(time.perf_counter() - started, 1),
                      "calibration": result.quantization["calibration"],
                      "parameter_map": result.parameter_map_status,
                      "check": {**check, "argmax_agreement_ci95": bootstrap_ci(
                          check["per_frame_agreement"]),
                          "meets_export_default": (check["argmax_agreement"]
                                                   >= DEFAULT_MIN_AGREEMENT[mode]),
                          "export_default_threshold": DEFAULT_MIN_AGREEMENT[mode]}}
        print(f"{name} {mode}: {rows[mode]['size_bytes'] / 1e6:.2f} MB, agreement "
              f"{check['argmax_agreement']:.4f}", flush=True)
    return rows


def interleaved_latency(variants: dict[str, dict], frames_path: Path, rounds: int,
                        options: EngineOptions, work: Path,
                        ) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Per variant, the engine's p50 and min invoke latency (ms) of each round."""
    names = [n for n in variants if "error" not in variants[n]]
    p50: dict[str, list[float]] = {n: [] for n in names}
    fastest: dict[str, list[float]] = {n: [] for n in names}
    with LocalDevice(work / "device") as host:
        for r in range(rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for variant in order:
                result = run_engine(host, Path(variants[variant]["manifest"]), options,
                                    frames_path=frames_path,
                                    out_dir=work / "runs" / f"{r}-{variant}")
                p50[variant].append(result.summary["invoke"]["p50_us"] / 1000.0)
                fastest[variant].append(result.summary["invoke"]["min_us"] / 1000.0)
    return p50, fastest


def summarize(p50: dict[str, list[float]], fastest: dict[str, list[float]]) -> dict[str, dict]:
    """p50 and min per round; ratios to float32 paired by round. On a shared host a descheduled
    process adds whole time slices to single runs: min is the less disturbed figure."""
    out = {}
    for variant in p50:
        row: dict[str, object] = {}
        for label, table in (("p50", p50), ("min", fastest)):
            values, base = table[variant], table["float32"]
            ratios = [v / b for v, b in zip(values, base)]
            row |= {f"{label}_ms_per_round": [round(v, 4) for v in values],
                    f"{label}_ms_median": round(float(np.median(values)), 4),
                    f"{label}_ratio_to_float32_mean": round(float(np.mean(ratios)), 4),
                    f"{label}_ratio_to_float32_ci95": bootstrap_ci(ratios)}
        out[variant] = row
    return out


def parse_export(text: str) -> tuple[str, Path, Path | None]:
    name, _, rest = text.partition("=")
    manifest, _, checkpoint = rest.partition(":")
    return name, Path(manifest), Path(checkpoint) if checkpoint else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--export", action="append", required=True, type=parse_export,
                        help="NAME=FLOAT32_MANIFEST[:CHECKPOINT] (repeat per student)")
    parser.add_argument("--teacher", default="selfie",
                        help="teacher for mIoU of students with its classes (deeplab)")
    parser.add_argument("--frames", type=int, default=24, help="verification frames")
    parser.add_argument("--calibration-frames", type=int, default=CALIBRATION_FRAMES,
                        help="int8: frames spread over the calibration clip")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--num_runs", type=int, default=10)
    parser.add_argument("--warmup_runs", type=int, default=2)
    parser.add_argument("--num_threads", type=int, default=1)
    parser.add_argument("--video", default="cup.mp4", help="frames the engine runs on")
    parser.add_argument("--work", type=Path, default=Path("/tmp/mobdistill-quantized"))
    parser.add_argument("--out", type=Path, default=RESULTS / "quantized.json")
    args = parser.parse_args()
    options = EngineOptions(num_threads=args.num_threads, warmup_runs=args.warmup_runs,
                            num_runs=args.num_runs)
    teacher_model = None
    results = {}
    for name, manifest, checkpoint in args.export:
        source = mf.load(manifest)
        teacher = None
        if name == "deeplab" and args.teacher:
            from mobdistill.server.teachers import load_teacher

            teacher_model = teacher_model or load_teacher(args.teacher)
            if teacher_model.num_classes == source["output"]["num_classes"]:
                teacher = TeacherReference(args.teacher, teacher_model.labels)
        variants = make_variants(name, manifest, checkpoint, args.work, args.frames,
                                 args.calibration_frames, teacher)
        h, w = source.resolution
        frames = decode_to_raw(args.video, args.work / f"frames-{h}x{w}.rgb", resolution=(h, w),
                               max_frames=args.warmup_runs + args.num_runs + 1)
        load_before = os.getloadavg()
        p50, fastest = interleaved_latency(variants, frames.path, args.rounds, options,
                                           args.work / name)
        latency = summarize(p50, fastest)
        results[name] = {
            "resolution": [h, w], "config": source["model"]["config"],
            "weights": ("teacher-fitted (experiments.student, the stream's starting point)"
                        if teacher else "seeded random init: agreement says nothing about "
                                        "accuracy"),
            "float32_manifest": str(manifest), "float32_created_utc": source["created_utc"],
            "host_load_1min": {"before": round(load_before[0], 2),
                               "after": round(os.getloadavg()[0], 2)},
            "variants": {v: {**variants[v], "latency": latency.get(v)} for v in variants}}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            **provenance({k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                          if k != "export"} | {"seed": SEED, "engine_video": args.video,
                                               "exports": [f"{n}={m}" for n, m, _ in args.export]}),
            "results": results}, indent=2) + "\n")
        print(json.dumps({v: latency[v] for v in latency}, indent=1), flush=True)


if __name__ == "__main__":
    main()
