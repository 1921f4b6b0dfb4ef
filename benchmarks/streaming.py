"""none / one-time / JIT / AMS (float16 and 8-bit values) on the real-clip stream.

Each scheme: the server simulated in video time, the real engine replaying every frame with
``--update_schedule`` (paced at the video rate, so swaps land on realistic frames), masks scored
against the selfie teacher. Writes ``results/streaming.json``, ``streaming.csv``,
``streaming_miou_time.png`` (mIoU over time, update swaps marked) and ``streaming_miou_kbps.png``.

    .venv/bin/python benchmarks/streaming.py [--frames-per-clip 80] [--iterations 4] ...
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import asdict, replace
from pathlib import Path

from mobdistill.runtime.ams.stream import StreamConfig, run_stream
from mobdistill.runtime.teachers import get_teacher

RESULTS = Path(__file__).resolve().parent / "results"
RUNS = (("none", {}), ("one-time", {}), ("jit", {}), ("ams", {}),
        ("ams-q8", {"value_coding": "q8"}))


def _row(name: str, r) -> dict:
    swaps = [u["engine"]["swapped_frame"] for u in r.updates
             if u["engine"] and u["engine"]["status"] == "applied"]
    return {"run": name, "scheme": r.scheme, "value_coding": r.settings["value_coding"],
            "miou": round(r.miou_mean, 4), "uplink_kbit_s": r.uplink["kbit_s"],
            "downlink_kbit_s": r.downlink["kbit_s"],
            "downlink_kbit_s_paper_clock": r.downlink["kbit_s_paper_clock"],
            "bytes_per_update": r.downlink["bytes_per_update"],
            "packets_sent": r.downlink["packets_sent"], "updates_applied": len(swaps),
            "p50_ms_while_updating": r.latency["while_updating"]["p50_ms"],
            "p99_ms_while_updating": r.latency["while_updating"]["p99_ms"],
            "p50_ms_without": r.latency["without_updates"]["p50_ms"],
            "p99_ms_without": r.latency["without_updates"]["p99_ms"],
            "wall_s": round(sum(r.timings_s.values()), 1)}


def _plots(results: dict, rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    for name, r in results.items():
        w = r["miou_over_time"]
        line, = ax.plot([(x["start_s"] + x["end_s"]) / 2 for x in w], [x["miou"] for x in w],
                        label=name, marker=".")
        fps = r["frames"] / r["duration_s"]
        for u in r["updates"]:
            e = u["engine"]
            if e and e["status"] == "applied":
                ax.axvline(e["swapped_frame"] / fps, color=line.get_color(), alpha=0.25, lw=1)
    ax.set(xlabel="video time (s)", ylabel="mIoU vs teacher",
           title="mIoU over time (vertical lines: engine swapped in an update)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "streaming_miou_time.png", dpi=110)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for row in rows:
        ax.scatter(max(row["downlink_kbit_s"], 1.0), row["miou"])
        ax.annotate(row["run"], (max(row["downlink_kbit_s"], 1.0), row["miou"]))
    ax.set(xscale="log", xlabel="downlink kbit/s (stream clock; none plotted at 1)",
           ylabel="mean mIoU vs teacher", title="accuracy vs downlink")
    fig.tight_layout()
    fig.savefig(out / "streaming_miou_kbps.png", dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames-per-clip", type=int, default=80)
    parser.add_argument("--pretrain-iterations", type=int, default=40)
    parser.add_argument("--iterations", type=int, default=4, help="AMS K per update")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--time-scale", type=float, default=0.1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--work", type=Path, default=Path("out/bench-streaming"))
    args = parser.parse_args()
    base = StreamConfig(realtime=True, max_frames_per_clip=args.frames_per_clip,
                        pretrain_iterations=args.pretrain_iterations, iterations=args.iterations,
                        batch_size=args.batch_size, time_scale=args.time_scale)
    teacher = get_teacher(base.teacher)
    results, rows = {}, []
    for name, overrides in RUNS:
        scheme = name.split("-q8")[0]
        started = time.perf_counter()
        r = run_stream(replace(base, scheme=scheme, **overrides), out_dir=args.work / name,
                       teacher=teacher)
        results[name] = asdict(r)
        rows.append(_row(name, r))
        print(json.dumps(rows[-1]), f"({time.perf_counter() - started:.0f} s)", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {"host": platform.node(), "settings": results["ams"]["settings"], "rows": rows,
               "runs": {k: {x: v[x] for x in ("miou_mean", "miou_per_clip", "miou_over_time",
                                               "uplink", "downlink", "updates", "latency",
                                               "frames", "duration_s")}
                        for k, v in results.items()}}
    (args.out / "streaming.json").write_text(json.dumps(summary, indent=1) + "\n")
    keys = list(rows[0])
    (args.out / "streaming.csv").write_text(
        ",".join(keys) + "\n" + "".join(",".join(str(r[k]) for k in keys) + "\n" for r in rows))
    _plots(results, rows, args.out)


if __name__ == "__main__":
    main()
