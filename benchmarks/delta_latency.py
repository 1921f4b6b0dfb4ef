"""Delta Distillation latency through the engine: keyframe, delta-frame and average per-frame
latency of `deeplab-delta` for T in {2, 4, 8} against the original network (T = 1: every frame
a keyframe), paired with the FLOPs reduction `mobdistill info` computes (the supplement's §B.1
Table 1 pairs FLOPs and latency the same way), and the per-frame latency curve with keyframes
marked.

Two steps, so that only the second is timed (run it with nothing else timed at once):

    nice -n 19 .venv/bin/python benchmarks/delta_latency.py --export-only
    .venv/bin/python benchmarks/delta_latency.py [--rounds 5]

The export is the paper configuration at its 256x512 default with seeded random weights (latency
does not depend on weight values; accuracy is benchmarks/delta_accuracy.py's). Frames are the
first real frames of bikes.mp4. Rounds interleave the periods in a shuffled order; every run has
the same warmup (a multiple of every T, so each measured window starts at a keyframe) and the
same number of measured frames (a multiple of every T). Writes benchmarks/results/
delta_latency.{json,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import random
from dataclasses import replace
from math import lcm
from pathlib import Path
from typing import Any

import numpy as np
from provenance import provenance

from mobdistill.runtime.device import LocalDevice
from mobdistill.runtime.engine import EngineOptions, ProfileResult, run_engine
from mobdistill.runtime.frames import decode_to_raw

RESULTS = Path(__file__).parent / "results"
MODEL = "deeplab-delta"
SEED = 0


def export(work: Path, resolution: tuple[int, int]) -> Path:
    """The paper-configuration export (seeded weights), reused when present."""
    import torch

    from mobdistill.export.api import export_model
    from mobdistill.models import registry

    folder = work / f"export-{resolution[0]}x{resolution[1]}"
    existing = sorted(folder.glob("*.manifest.json"))
    if existing:
        return existing[0]
    entry = registry.get(MODEL)
    config = registry.configure(entry)
    torch.manual_seed(SEED)
    checkpoint = work / "seeded.pt"
    work.mkdir(parents=True, exist_ok=True)
    torch.save(entry.build(config).state_dict(), checkpoint)
    result = export_model(MODEL, out_dir=folder, formats=("tflite",), config=config,
                          checkpoint=checkpoint, resolution=resolution)
    return Path(result.manifest_path)


def flops(resolution: tuple[int, int]) -> dict[str, float]:
    """FLOPs of one keyframe and one delta frame (`mobdistill info`)."""
    from mobdistill.models import registry
    from mobdistill.models.complexity import describe

    entry = registry.get(MODEL)
    info = describe(entry, registry.configure(entry), resolution)
    return {"keyframe": info.flops["keyframe"], "delta": info.flops["delta"]}


def _stats_ms(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    a = np.asarray(values) / 1000.0
    return {"count": int(a.size), "mean_ms": float(a.mean()), "p50_ms": float(np.median(a)),
            "p99_ms": float(np.percentile(a, 99)), "min_ms": float(a.min()),
            "max_ms": float(a.max())}


def summarise(runs: list[ProfileResult]) -> dict[str, Any]:
    """Pooled measured frames of every round at one T."""
    frames = [f for r in runs for f in r.frames if f.phase == "measure"]
    invoke = [f.invoke_us for f in frames]
    total = [f.preprocess_us + f.invoke_us + f.postprocess_us for f in frames]
    all_ms = _stats_ms(invoke)
    assert all_ms is not None
    return {
        "invoke": all_ms,
        "frame": _stats_ms(total),
        "keyframe_invoke": _stats_ms([f.invoke_us for f in frames if f.keyframe]),
        "delta_invoke": _stats_ms([f.invoke_us for f in frames if not f.keyframe]),
        "keyframe_frame": _stats_ms([f.preprocess_us + f.invoke_us + f.postprocess_us
                                     for f in frames if f.keyframe]),
        "delta_frame": _stats_ms([f.preprocess_us + f.invoke_us + f.postprocess_us
                                  for f in frames if not f.keyframe]),
        "invoke_p99_over_p50": all_ms["p99_ms"] / all_ms["p50_ms"],
        "mean_invoke_ms_per_round": [float(np.mean(r.measured_invoke_us())) / 1000.0
                                     for r in runs],
        "peak_rss_mb": [r.summary.get("peak_rss_mb") for r in runs],
    }


def plot(curves: dict[int, ProfileResult], table: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.2),
                                      gridspec_kw={"width_ratios": [2.2, 1]})
    for period, result in sorted(curves.items()):
        measured = [f for f in result.frames if f.phase == "measure"]
        x = [f.run for f in measured]
        y = [f.invoke_us / 1000.0 for f in measured]
        line, = left.plot(x, y, "-", lw=0.9, label=f"T={period}" if period > 1 else
                          "T=1 (original network)")
        keys = [(f.run, f.invoke_us / 1000.0) for f in measured if f.keyframe and period > 1]
        if keys:
            left.plot(*zip(*keys), "^", color=line.get_color(), ms=6, ls="none")
    left.set_xlabel("frame (run index; ▲ = keyframe)")
    left.set_ylabel("invoke latency (ms)")
    left.set_title("per-frame latency, last round")
    left.legend(fontsize=8)
    periods = [row["period"] for row in table if row["period"] > 1]
    right.plot(periods, [row["flops_reduction"] for row in table if row["period"] > 1], "o-",
               label="FLOPs reduction (info)")
    right.plot(periods, [row["latency_reduction"] for row in table if row["period"] > 1], "s-",
               label="measured latency reduction (mean invoke)")
    right.set_xscale("log", base=2)
    right.set_xticks(periods, [str(p) for p in periods])
    right.set_xlabel("keyframe interval T")
    right.set_ylabel("x fewer than T=1")
    right.set_title("FLOPs vs latency reduction")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--periods", default="2,4,8")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--num_runs", type=int, default=48)
    parser.add_argument("--num_threads", type=int, default=1)
    parser.add_argument("--resolution", default="256x512", help="HxW")
    parser.add_argument("--work", type=Path, default=Path("/tmp/mobdistill-bench/delta"))
    parser.add_argument("--engine", type=Path, default=None, help="a mobdistill-engine build")
    parser.add_argument("--export-only", action="store_true",
                        help="make the export (run at nice 19, outside the bench lock) and stop")
    args = parser.parse_args()
    height, width = (int(v) for v in args.resolution.split("x"))
    periods = [1] + [int(p) for p in args.periods.split(",")]
    step = lcm(*periods)
    if args.num_runs % step:
        parser.error(f"--num_runs must be a multiple of {step} (every T)")
    manifest = export(args.work, (height, width))
    if args.export_only:
        print(manifest)
        return

    load_start = os.getloadavg()
    frames = decode_to_raw(None, args.work / f"bikes-{height}x{width}.rgb",
                           resolution=(height, width), max_frames=step + args.num_runs)
    base = EngineOptions(num_threads=args.num_threads, warmup_runs=step,
                         num_runs=args.num_runs, engine_binary=args.engine, timeout_s=900)
    order_rng = random.Random(SEED)
    runs: dict[int, list[ProfileResult]] = {p: [] for p in periods}
    orders = []
    with LocalDevice(args.work / "device") as device:
        for _ in range(args.rounds):
            order = periods[:]
            order_rng.shuffle(order)
            orders.append(order)
            for period in order:
                result = run_engine(device, manifest, replace(base, keyframe_interval=period),
                                    frames_path=frames.path, out_dir=args.work / "runs" /
                                    f"r{len(orders)}-t{period}")
                runs[period].append(result)
                print(f"round {len(orders)} T={period}: mean invoke "
                      f"{np.mean(result.measured_invoke_us()) / 1000:.2f} ms", flush=True)
    load_end = os.getloadavg()

    keyframe_flops = flops((height, width))
    summaries = {p: summarise(runs[p]) for p in periods}
    original = summaries[1]
    table = []
    for period in periods:
        s = summaries[period]
        average_flops = (keyframe_flops["keyframe"] + (period - 1) * keyframe_flops["delta"]) \
            / period
        paired = [o / m for o, m in zip(original["mean_invoke_ms_per_round"],
                                        s["mean_invoke_ms_per_round"])]
        table.append({
            "period": period,
            "average_gflops": average_flops / 1e9,
            "flops_reduction": keyframe_flops["keyframe"] / average_flops,
            "latency_reduction": original["invoke"]["mean_ms"] / s["invoke"]["mean_ms"],
            "latency_reduction_per_round": paired,
            "frame_latency_reduction": original["frame"]["mean_ms"] / s["frame"]["mean_ms"],
            **s,
        })
    RESULTS.mkdir(exist_ok=True)
    plot({p: runs[p][-1] for p in periods}, table, RESULTS / "delta_latency.png")
    settings = {"model": MODEL, "config": "paper", "weights": f"seeded random (torch seed {SEED})",
                "resolution": [height, width], "periods": periods, "rounds": args.rounds,
                "order_seed": SEED, "orders": orders, "warmup_runs": step,
                "num_runs": args.num_runs, "num_threads": args.num_threads,
                "delegate": base.delegate.value, "video": frames.video,
                "manifest": str(manifest)}
    record = {**provenance(settings),
              "load_average_start": load_start, "load_average_end": load_end,
              "flops": {"keyframe_gflops": keyframe_flops["keyframe"] / 1e9,
                        "delta_gflops": keyframe_flops["delta"] / 1e9,
                        "source": "models.complexity.describe (mobdistill info)"},
              "engine": runs[1][0].summary.get("engine_version"),
              "runtime": runs[1][0].summary.get("runtime_version"),
              "results": table}
    (RESULTS / "delta_latency.json").write_text(json.dumps(record, indent=2) + "\n")
    for row in table:
        key = row["keyframe_invoke"]["mean_ms"] if row["keyframe_invoke"] else float("nan")
        delta = row["delta_invoke"]["mean_ms"] if row["delta_invoke"] else float("nan")
        print(f"T={row['period']}: keyframe {key:.2f} ms, delta {delta:.2f} ms, average "
              f"{row['invoke']['mean_ms']:.2f} ms, p99/p50 {row['invoke_p99_over_p50']:.2f}; "
              f"FLOPs {row['flops_reduction']:.2f}x fewer, latency "
              f"{row['latency_reduction']:.2f}x lower")


if __name__ == "__main__":
    main()
