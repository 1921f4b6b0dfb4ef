"""none / one-time / JIT / AMS (float16 and 8-bit values) on the real-clip stream.

Each scheme: the server simulated in video time, the real engine replaying every frame with
``--update_schedule`` (paced at the video rate, so swaps land on realistic frames), masks scored
against the selfie teacher. Writes ``results/streaming.json``, ``streaming.csv``,
``streaming_miou_time.png`` (mIoU over time, update swaps marked) and ``streaming_miou_kbps.png``.

    .venv/bin/python benchmarks/streaming.py [--frames-per-clip N] [--iterations 20] [--seeds 0,1]

Several seeds (each: its own starting point and server sampling) are run one after the other; the
summary rows give the mean mIoU over seeds and each seed's value, and the results are rewritten
after every seed so an interrupted run still leaves a consistent file.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import asdict, replace
from pathlib import Path

from mobdistill.experiments.stream import StreamConfig, run_stream
from mobdistill.server.teachers import get_teacher

RESULTS = Path(__file__).resolve().parent / "results"
RUNS = (("none", {}), ("one-time", {}), ("jit", {}), ("ams", {"mode": "base-relative"}),
        ("ams-q8", {"mode": "base-relative", "value_coding": "q8"}),
        ("ams-cumulative", {"mode": "cumulative"}),
        ("ams-cumulative-q8", {"mode": "cumulative", "value_coding": "q8"}))


def _row(name: str, r, seed: int) -> dict:
    swaps = [u["engine"]["swapped_frame"] for u in r.updates
             if u["engine"] and u["engine"]["status"] == "applied"]
    return {"run": name, "seed": seed, "scheme": r.scheme, "value_coding": r.settings["value_coding"],
            "mode": r.settings["mode"] if r.scheme in ("ams", "one-time") else "",
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
           title="mIoU over time, first seed (vertical lines: engine swapped in an update)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "streaming_miou_time.png", dpi=110)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for row in rows:
        ax.scatter(max(row["downlink_kbit_s"], 1.0), row["miou"])
        ax.annotate(row["run"], (max(row["downlink_kbit_s"], 1.0), row["miou"]))
    ax.set(xscale="log", xlabel="downlink kbit/s (stream clock; none plotted at 1)",
           ylabel="mIoU vs teacher (mean over seeds)", title="accuracy vs downlink")
    fig.tight_layout()
    fig.savefig(out / "streaming_miou_kbps.png", dpi=110)


def _summary(per_seed: list[dict]) -> list[dict]:
    """One row per run: mean mIoU over seeds (and each seed's), means of the rate columns."""
    rows = []
    for name, _ in RUNS:
        seeds = [rows_by[name] for rows_by in per_seed]
        row = {"run": name, "scheme": seeds[0]["scheme"], "value_coding": seeds[0]["value_coding"],
               "mode": seeds[0]["mode"], "seeds": len(seeds),
               "miou": round(sum(r["miou"] for r in seeds) / len(seeds), 4),
               "miou_per_seed": "/".join(f"{r['miou']:.4f}" for r in seeds)}
        for key in ("uplink_kbit_s", "downlink_kbit_s", "downlink_kbit_s_paper_clock",
                    "bytes_per_update", "packets_sent", "updates_applied", "wall_s"):
            row[key] = round(sum(r[key] for r in seeds) / len(seeds), 2)
        for key in ("p50_ms_while_updating", "p99_ms_while_updating", "p50_ms_without",
                    "p99_ms_without"):
            row[key] = seeds[0][key]
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames-per-clip", type=int, default=None, help="default: whole clips")
    parser.add_argument("--pretrain-iterations", type=int, default=150)
    parser.add_argument("--iterations", type=int, default=20, help="AMS K per update")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--time-scale", type=float, default=0.2)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--work", type=Path, default=Path("out/bench-streaming"))
    args = parser.parse_args()
    base = StreamConfig(realtime=True, max_frames_per_clip=args.frames_per_clip,
                        pretrain_iterations=args.pretrain_iterations, iterations=args.iterations,
                        batch_size=args.batch_size, lr=args.lr, time_scale=args.time_scale)
    teacher = get_teacher(base.teacher)
    per_seed, seed_rows, seed_runs = [], [], {}
    for seed in (int(x) for x in args.seeds.split(",")):
        results, rows = {}, {}
        for name, overrides in RUNS:
            scheme = name.split("-")[0] if name.startswith("ams") else name
            started = time.perf_counter()
            r = run_stream(replace(base, scheme=scheme, seed=seed, **overrides),
                           out_dir=args.work / f"s{seed}" / name, teacher=teacher)
            results[name] = asdict(r)
            rows[name] = _row(name, r, seed)
            print(json.dumps(rows[name]), f"({time.perf_counter() - started:.0f} s)", flush=True)
        per_seed.append(rows)
        seed_rows += rows.values()
        seed_runs[seed] = {k: {x: v[x] for x in ("miou_mean", "miou_per_clip", "miou_over_time",
                                                  "uplink", "downlink", "updates", "latency",
                                                  "frames", "duration_s")}
                           for k, v in results.items()}
        if len(per_seed) == 1:
            first = results
        summary_rows = _summary(per_seed)
        args.out.mkdir(parents=True, exist_ok=True)
        settings = dict(first["ams"]["settings"], seed=None, seeds=sorted(seed_runs))
        summary = {"host": platform.node(), "settings": settings, "rows": summary_rows,
                   "per_seed_rows": seed_rows, "runs": seed_runs}
        (args.out / "streaming.json").write_text(json.dumps(summary, indent=1) + "\n")
        keys = list(summary_rows[0])
        (args.out / "streaming.csv").write_text(
            ",".join(keys) + "\n"
            + "".join(",".join(str(r[k]) for k in keys) + "\n" for r in summary_rows))
        _plots(first, summary_rows, args.out)


if __name__ == "__main__":
    main()
