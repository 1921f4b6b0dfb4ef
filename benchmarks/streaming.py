"""none / one-time / JIT / AMS (float16 and 8-bit values) on the real-clip stream.

Each scheme: the server simulated in video time, the real engine replaying every frame with
``--update_schedule`` (paced at the video rate, so swaps land on realistic frames; packets
authenticated with a per-run key and device id), masks scored against the selfie teacher with
both mIoU definitions (with background: AMS's; foreground only: JITNet's). The paper's settings:
K = 20, γ = 5 %, δt = T_update, no link cap; JIT with the same γ-sparse gradient-guided updates.
Writes ``results/streaming.json`` (commit, settings, seeds, per-seed rows and runs),
``streaming.csv``, ``streaming_miou_time.png`` (mIoU over time, update swaps marked) and
``streaming_miou_kbps.png``.

    .venv/bin/python benchmarks/streaming.py [--frames-per-clip N] [--iterations 20] [--seeds 0,1]
    .venv/bin/python benchmarks/streaming.py --combine A/streaming.json B/streaming.json

Several seeds (each: its own starting point and server sampling) are run one after the other
(or in separate processes, each with its own ``--out``, then merged with ``--combine``); the
summary rows give the mean over seeds and each seed's value, and the results are rewritten after
every run so an interrupted benchmark still leaves a consistent file.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from dataclasses import asdict, replace
from pathlib import Path

from mobdistill.experiments.config import StreamConfig
from mobdistill.experiments.stream import run_stream
from mobdistill.server.teachers import get_teacher

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]
RUNS = (("none", {}), ("one-time", {}), ("jit", {}), ("ams", {}),
        ("ams-q8", {"value_coding": "q8"}))
RATE_KEYS = ("uplink_kbit_s", "downlink_kbit_s", "downlink_kbit_s_paper_clock",
             "bytes_per_update", "packets_delivered", "packets_late", "updates_applied",
             "wall_s")


def _commit() -> dict:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout
    dirty = [line[3:] for line in git("status", "--porcelain").splitlines()
             if line[3:].startswith(("server/", "experiments/", "benchmarks/streaming.py"))]
    return {"commit": git("rev-parse", "HEAD").strip(), "streaming_files_modified": dirty}


def _row(name: str, r, seed: int) -> dict:
    return {"run": name, "seed": seed, "scheme": r.scheme,
            "value_coding": r.settings["value_coding"],
            "miou_with_background": round(r.miou_with_background["mean"], 4),
            "miou_foreground": round(r.miou_foreground["mean"], 4),
            "frames_without_foreground": r.miou_foreground["frames_not_scored"],
            "uplink_kbit_s": r.uplink["kbit_s"], "downlink_kbit_s": r.downlink["kbit_s"],
            "downlink_kbit_s_paper_clock": r.downlink["kbit_s_paper_clock"],
            "bytes_per_update": r.downlink["bytes_per_update"],
            "packets_delivered": r.downlink["packets_delivered"],
            "packets_late": r.downlink["packets_late"],
            "updates_applied": r.downlink["packets_applied"],
            "p50_ms_while_updating": r.latency["while_updating"]["p50_ms"],
            "p50_ms_without": r.latency["without_updates"]["p50_ms"],
            "wall_s": round(sum(r.timings_s.values()), 1)}


def _summary(per_seed: list[dict]) -> list[dict]:
    """One row per run done on every seed so far: means over seeds, and each seed's mIoU."""
    rows = []
    for name, _ in RUNS:
        seeds = [rows_by[name] for rows_by in per_seed if name in rows_by]
        if not seeds:
            continue
        row = {"run": name, "scheme": seeds[0]["scheme"], "value_coding": seeds[0]["value_coding"],
               "seeds": len(seeds)}
        for key in ("miou_with_background", "miou_foreground"):
            row[key] = round(sum(r[key] for r in seeds) / len(seeds), 4)
            row[f"{key}_per_seed"] = "/".join(f"{r[key]:.4f}" for r in seeds)
        for key in RATE_KEYS:
            row[key] = round(sum(r[key] for r in seeds) / len(seeds), 2)
        rows.append(row)
    return rows


def _plots(first: dict, rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    for name, r in first.items():
        w = r["miou_with_background"]["over_time"]
        line, = ax.plot([(x["start_s"] + x["end_s"]) / 2 for x in w], [x["miou"] for x in w],
                        label=name, marker=".")
        fps = r["frames"] / r["duration_s"]
        for u in r["updates"]:
            e = u["engine"]
            if e and e["status"] == "applied":
                ax.axvline(e["swapped_frame"] / fps, color=line.get_color(), alpha=0.25, lw=1)
    ax.set(xlabel="video time (s)", ylabel="mIoU vs teacher (with background)",
           title="mIoU over time, first seed (vertical lines: engine swapped in an update)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "streaming_miou_time.png", dpi=110)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for row in rows:
        x = max(row["downlink_kbit_s_paper_clock"], 1.0)
        ax.scatter(x, row["miou_with_background"])
        ax.annotate(row["run"], (x, row["miou_with_background"]))
    ax.set(xscale="log", xlabel="downlink kbit/s, paper clock (none plotted at 1)",
           ylabel="mIoU vs teacher, with background (mean over seeds)",
           title="accuracy vs downlink")
    fig.tight_layout()
    fig.savefig(out / "streaming_miou_kbps.png", dpi=110)


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
    parser.add_argument("--runs", help="comma-separated subset of: "
                        + ", ".join(name for name, _ in RUNS) + " (default: all)")
    parser.add_argument("--combine", type=Path, nargs="+",
                        help="merge the streaming.json of runs over other seeds into --out")
    args = parser.parse_args()
    if args.combine:
        combine(args.combine, args.out)
        return
    base = StreamConfig(realtime=True, max_frames_per_clip=args.frames_per_clip,
                        pretrain_iterations=args.pretrain_iterations, iterations=args.iterations,
                        batch_size=args.batch_size, lr=args.lr, time_scale=args.time_scale)
    teacher = get_teacher(base.teacher)
    seeds = [int(x) for x in args.seeds.split(",")]
    chosen = args.runs.split(",") if args.runs else [name for name, _ in RUNS]
    provenance = {"host": platform.node(), **_commit(),
                  "command": "benchmarks/streaming.py " + " ".join(
                      f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
                      if k not in ("out", "work") and v is not None)}
    per_seed: list[dict] = []
    seed_rows: list[dict] = []
    runs: dict[int, dict] = {}
    first: dict = {}
    settings: dict = {}
    for seed in seeds:
        rows: dict = {}
        per_seed.append(rows)
        runs[seed] = {}
        for name, overrides in RUNS:
            if name not in chosen:
                continue
            started = time.perf_counter()
            r = run_stream(replace(base, scheme=name.split("-q8")[0], seed=seed, **overrides),
                           out_dir=args.work / f"s{seed}" / name, teacher=teacher)
            result = asdict(r)
            settings.setdefault(name, {k: v for k, v in result["settings"].items() if k != "seed"})
            runs[seed][name] = {k: result[k] for k in (
                "miou_with_background", "miou_foreground", "uplink", "downlink", "updates",
                "latency", "frames", "duration_s")}
            if seed == seeds[0]:
                first[name] = result
            rows[name] = _row(name, r, seed)
            seed_rows.append(rows[name])
            print(json.dumps(rows[name]), f"({time.perf_counter() - started:.0f} s)", flush=True)
            _write(args.out, provenance, settings, seeds, per_seed, seed_rows, runs, first)


def combine(parts: list[Path], out: Path) -> None:
    """One result from several processes' results (other seeds or other runs, the same settings
    for the same run); each part's commit and command are kept."""
    loaded = [json.loads(p.read_text()) for p in parts]
    settings: dict = {}
    runs: dict[int, dict] = {}
    for part in loaded:
        for name, value in part["settings_per_run"].items():
            if settings.setdefault(name, value) != value:
                raise SystemExit(f"the settings of {name} differ between the parts")
        for seed, by_name in part["runs"].items():
            runs.setdefault(int(seed), {}).update(by_name)
    seed_rows = [row for part in loaded for row in part["per_seed_rows"]]
    seeds = sorted(runs)
    per_seed = [{row["run"]: row for row in seed_rows if row["seed"] == seed} for seed in seeds]
    provenance = {"host": loaded[0]["host"],
                  "parts": [{k: part[k] for k in ("commit", "streaming_files_modified", "command")}
                            for part in loaded]}
    _write(out, provenance, settings, seeds, per_seed, seed_rows, runs, runs[seeds[0]])


def _result_commit(provenance: dict) -> str:
    """The one commit every part ran at, "+dirty" when a streaming file differed from it."""
    parts = provenance.get("parts", [provenance])
    commits = {part["commit"] for part in parts}
    if len(commits) != 1:
        raise SystemExit(f"the parts ran at different commits: {sorted(commits)}")
    dirty = any(part["streaming_files_modified"] for part in parts)
    return commits.pop() + ("+dirty" if dirty else "")


def _shared_settings(settings: dict) -> dict:
    """The settings every run shares (each run's own are in ``settings_per_run``)."""
    runs = list(settings.values())
    return {k: v for k, v in runs[0].items() if all(r.get(k) == v for r in runs[1:])}


def _write(out: Path, provenance: dict, settings: dict, seeds: list[int], per_seed: list[dict],
           seed_rows: list[dict], runs: dict, first: dict) -> None:
    summary_rows = _summary(per_seed)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"commit": _result_commit(provenance), "settings": _shared_settings(settings),
               **provenance, "seeds_planned": seeds,
               "seeds_done": [s for s, r in runs.items() if len(r) == len(RUNS)],
               "settings_per_run": settings, "rows": summary_rows, "per_seed_rows": seed_rows,
               "runs": runs}
    (out / "streaming.json").write_text(json.dumps(summary, indent=1) + "\n")
    keys = list(summary_rows[0])
    (out / "streaming.csv").write_text(
        ",".join(keys) + "\n"
        + "".join(",".join(str(r.get(k, "")) for k in keys) + "\n" for r in summary_rows))
    _plots(first, summary_rows, out)


if __name__ == "__main__":
    main()
