"""The AMS paper's evaluation (§4.2) on the evaluation clips: Table 1, the Fig. 4 frontier, the
Fig. 5 CDF and the horizon trade-off, each from one run of this script.

Every scheme runs through `mobdistill stream` (`experiments.stream.run_stream`): the server
simulated in video time, the real engine replaying every frame where a student runs (each packet
applied before its simulated arrival frame, ``--update_blocking``, so nothing depends on this
host's speed), the device-side tracker for Remote+Tracking, masks scored against the selfie
teacher with both mIoU definitions. Each seed has its own starting student (`mobdistill
pretrain` on the pretraining clips with that seed, cached; one for all with ``--shared-start``)
and its own server sampling; 95 % confidence intervals are Student-t over seeds.
The time scale compresses the server's clock only (T_update, T_horizon, δt, One-Time's 60 s,
ASR's rates); Remote+Tracking samples 1 fps of video time and JIT's δ counts real frames, so
their kbit/s are on the video clock, AMS's and One-Time's on the paper's (stream kbit/s ×
time_scale).
Runs (per seed, most important first): none; AMS T10 H240; AMS T10 at each other
``--horizons``; one-time; remote-tracking (deterministic: once, first seed); JIT at each
``--jit-thresholds``; AMS at the other ``--t-updates`` (paper seconds, time-scaled). Results are
rewritten after every run, so a stopped benchmark leaves its first runs complete. Seeds may run
in separate processes (``--out`` each; ``--reverse`` for a second process working from the
end of the plan) and be merged with ``--combine``. Writes
``results/paper_schemes.json`` (commit, engine, clips, settings, seeds, every run with its
per-frame scores), ``paper_schemes.md`` (the tables), ``paper_schemes_frontier.png`` and
``paper_schemes_cdf.png``.

    .venv/bin/python benchmarks/paper_schemes.py [--seeds 0,1,2,3,4] [--out DIR]
    .venv/bin/python benchmarks/paper_schemes.py --combine A/paper_schemes.json B/...json
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import provenance  # noqa: E402

from mobdistill import clips  # noqa: E402
from mobdistill.experiments.config import StreamConfig  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
WORK = Path(__file__).resolve().parents[1] / "out"  # each run's packets and logs (ignored)
NAME = "paper_schemes"
# The evaluation stream: carphone, then bikes' street cuts, then vtest's walkers, then carphone
# again (compressed): a scene that returns, after the short horizon has forgotten it.
STREAM = ("carphone_pristine.mp4", "bikes.mp4", "vtest.avi", "carphone_distorted.mp4")


def run_folder(name: str, seed: int, benchmark: str = NAME) -> Path:
    """A fresh folder for one run's packets and logs under ``out/<benchmark>`` (processes
    running the same run and seed at once never share one)."""
    (WORK / benchmark).mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{name.replace(' ', '_')}-s{seed}-",
                                 dir=WORK / benchmark))


def engine_binary() -> dict[str, str]:
    """The engine build that ran: $MOBDISTILL_ENGINE (a fixed copy, so that rebuilds of a shared
    tree cannot change it mid-run) or the checkout's build, with its SHA-256."""
    from mobdistill.files import sha256_file
    from mobdistill.runtime.engine import find_engine

    path = find_engine()
    return {"path": str(path), "sha256": sha256_file(path)}


def plan(args: argparse.Namespace) -> list[tuple[str, dict[str, Any]]]:
    """(run name, StreamConfig overrides), most important first: the Table 1 schemes and the
    horizon pair, then the rest of the Fig. 4 sweeps."""
    t_updates, thresholds = args.t_updates, args.jit_thresholds
    ams = [(f"ams T{t:g} H240", {"scheme": "ams", "t_update_paper_s": t}) for t in t_updates]
    horizons = [(f"ams T{t_updates[0]:g} H{h:g}",
                 {"scheme": "ams", "t_update_paper_s": t_updates[0], "t_horizon_paper_s": h})
                for h in args.horizons if h != 240]
    jits = [(f"jit {t:g}", {"scheme": "jit", "jit_threshold": t}) for t in thresholds]
    middle = len(jits) // 2
    return [("none", {"scheme": "none"}), ams[0], *horizons, ("one-time", {"scheme": "one-time"}),
            ("remote-tracking", {"scheme": "remote-tracking"}), jits[middle],
            *jits[:middle], *jits[middle + 1:], *ams[:0:-1]]


def stream_config(base: StreamConfig, overrides: dict[str, Any], seed: int) -> StreamConfig:
    kw = dict(overrides)
    scale = base.time_scale
    if "t_update_paper_s" in kw:
        kw["t_update_s"] = kw.pop("t_update_paper_s") * scale
    if "t_horizon_paper_s" in kw:
        kw["t_horizon_s"] = kw.pop("t_horizon_paper_s") * scale
    return replace(base, seed=seed, **kw)


def measure(name: str, config: StreamConfig, out: Path, teacher) -> dict[str, Any]:
    from mobdistill.experiments.stream import run_stream

    started = time.perf_counter()
    result = run_stream(config, out_dir=out, teacher=teacher)
    with open(out / "frames.csv") as f:
        frames = list(csv.DictReader(f))
    return {"run": name, "seed": config.seed, "scheme": config.scheme,
            "jit_threshold": config.jit_threshold if config.scheme == "jit" else None,
            "t_update_paper_s": config.update_interval_s / config.time_scale,
            "t_horizon_paper_s": config.horizon_s / config.time_scale,
            "miou_with_background": result.miou_with_background["mean"],
            "miou_foreground": result.miou_foreground["mean"],
            "per_clip_with_background": result.miou_with_background["per_clip"],
            "uplink_kbit_s": result.uplink["kbit_s"],
            "uplink_kbit_s_paper_clock": result.uplink["kbit_s_paper_clock"],
            "downlink_kbit_s": result.downlink["kbit_s"],
            "downlink_kbit_s_paper_clock": result.downlink["kbit_s_paper_clock"],
            "packets_applied": result.downlink["packets_applied"],
            "packets_late": result.downlink["packets_late"],
            "frame_miou_with_background": [round(float(r["miou_with_background"]), 4)
                                           for r in frames],
            "wall_s": round(time.perf_counter() - started, 1)}


# ----------------------------------------------------------------------------- summaries
def ci95(values: list[float]) -> tuple[float, float | None]:
    """(mean, half-width of the Student-t 95 % interval; None with fewer than 2 values)."""
    from scipy import stats

    v = np.asarray(values, float)
    if v.size < 2:
        return float(v.mean()), None
    return float(v.mean()), float(stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1)
                                  / np.sqrt(v.size))


def by_run(runs: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in runs:
        out.setdefault(r["run"], []).append(r)
    return out


def summarize(runs: list[dict]) -> dict[str, dict[str, Any]]:
    rows = {}
    for name, group in by_run(runs).items():
        row: dict[str, Any] = {"seeds": sorted(r["seed"] for r in group)}
        for key in ("miou_with_background", "miou_foreground", "uplink_kbit_s_paper_clock",
                    "downlink_kbit_s_paper_clock", "uplink_kbit_s", "downlink_kbit_s"):
            mean, half = ci95([r[key] for r in group if r[key] is not None])
            row[key] = {"mean": round(mean, 4), "ci95": None if half is None else round(half, 4)}
        rows[name] = row
    return rows


def matched_jit(summary: dict[str, dict], ams_run: str) -> str | None:
    """The JIT threshold whose mIoU is closest to AMS's (the paper's bandwidth comparison)."""
    jits = [n for n in summary if n.startswith("jit ")]
    if not jits or ams_run not in summary:
        return None
    target = summary[ams_run]["miou_with_background"]["mean"]
    return min(jits, key=lambda n: abs(summary[n]["miou_with_background"]["mean"] - target))


def jit_downlink_at(summary: dict[str, dict], miou: float) -> float | None:
    """JIT's downlink at a given mIoU, interpolated along its threshold sweep (log kbit/s
    linear in mIoU between the two thresholds around it); None outside the swept range."""
    points = sorted((summary[n]["miou_with_background"]["mean"],
                     summary[n]["downlink_kbit_s_paper_clock"]["mean"])
                    for n in summary if n.startswith("jit "))
    for (m0, d0), (m1, d1) in zip(points, points[1:]):
        if m0 <= miou <= m1 and d0 > 0 and d1 > 0:
            w = 0.0 if m1 == m0 else (miou - m0) / (m1 - m0)
            return float(np.exp((1 - w) * np.log(d0) + w * np.log(d1)))
    return None


def cdf_gains(runs: list[dict], names: list[str]) -> dict[str, list[float]]:
    """Per-frame mIoU gain over `none` of the same seed, every frame of every seed."""
    none = {r["seed"]: np.asarray(r["frame_miou_with_background"]) for r in runs
            if r["run"] == "none"}
    gains: dict[str, list[float]] = {}
    for r in runs:
        if r["run"] in names:
            base = none.get(r["seed"], none.get(min(none)) if none else None)
            if base is not None:
                gains.setdefault(r["run"], []).extend(
                    (np.asarray(r["frame_miou_with_background"]) - base).tolist())
    return gains


def _fmt(cell: dict) -> str:
    if cell["ci95"] is None:
        return f"{100 * cell['mean']:.1f}"
    return f"{100 * cell['mean']:.1f} ± {100 * cell['ci95']:.1f}"


def _kbit(cell: dict) -> str:
    return f"{cell['mean']:.1f}"


def paired(runs: list[dict], a: str, b: str, key: str = "miou_with_background",
           clip: str | None = None) -> dict[str, Any] | None:
    """Run a minus run b on the seeds both have (same starting student and stream): mean and
    95 % CI of the per-seed differences; ``clip``: on that clip's frames only."""
    def value(r: dict) -> float:
        return r["per_clip_with_background"][clip] if clip else r[key]

    left = {r["seed"]: value(r) for r in runs if r["run"] == a}
    right = {r["seed"]: value(r) for r in runs if r["run"] == b}
    seeds = sorted(set(left) & set(right))
    if not seeds:
        return None
    mean, half = ci95([left[s] - right[s] for s in seeds])
    return {"a": a, "b": b, "clip": clip, "seeds": seeds, "mean": round(mean, 4),
            "ci95": None if half is None else round(half, 4)}


def write_outputs(doc: dict[str, Any], out: Path) -> None:
    runs = doc["runs"]
    summary = summarize(runs)
    first_t = doc["settings"]["t_updates_paper_s"][0]
    ams = f"ams T{first_t:g} H240"
    jit = matched_jit(summary, ams)
    table_runs = [n for n in ("none", "one-time", "remote-tracking", jit, ams) if n in summary]
    gains = cdf_gains(runs, [n for n in summary if n != "none"])
    doc["summary"] = summary
    doc["table1"] = {"runs": table_runs, "jit_matched_to_ams": jit}
    if ams in summary:
        at = jit_downlink_at(summary, summary[ams]["miou_with_background"]["mean"])
        ams_down = summary[ams]["downlink_kbit_s_paper_clock"]["mean"]
        doc["jit_at_ams_accuracy"] = {
            "ams_miou": summary[ams]["miou_with_background"]["mean"],
            "ams_downlink_kbit_s": ams_down,
            "jit_downlink_kbit_s": None if at is None else round(at, 1),
            "ratio": None if at is None or not ams_down else round(at / ams_down, 2)}
    doc["cdf_better_than_none"] = {n: round(float(np.mean(np.asarray(g) > 0)), 4)
                                   for n, g in gains.items()}
    returning = f"{len(doc['settings']['stream']) - 1}:{doc['settings']['stream'][-1]}"
    pairs = [(ams, n, None) for n in ("none", "one-time", jit) if n]
    pairs += [(ams, n, c) for n in summary if n.startswith(f"ams T{first_t:g} H") and n != ams
              for c in (None, returning)]
    doc["paired"] = [d for a, b, c in pairs if (d := paired(runs, a, b, clip=c))]
    (out / f"{NAME}.json").write_text(json.dumps(doc, indent=1) + "\n")
    lines = [f"# {NAME}: commit {doc['commit']}", "",
             f"Stream: {', '.join(doc['settings']['stream'])}. mIoU in %, mean ± 95 % CI "
             "(Student-t over seeds, each seed its own starting student). kbit/s on each "
             "scheme's own clock: the paper's for AMS and One-Time (stream kbit/s × time "
             "scale), the video's for JIT (δ in real frames) and Remote+Tracking (1 fps of "
             "video time). Remote+Tracking runs no student and is deterministic: one run.", "",
             "| run | seeds | mIoU with background | mIoU foreground | uplink kbit/s | "
             "downlink kbit/s | frames better than none |", "|---|---|---|---|---|---|---|"]
    for name in [*table_runs, *[n for n in summary if n not in table_runs]]:
        row = summary[name]
        better = doc["cdf_better_than_none"].get(name)
        lines.append(f"| {name}{' (matched)' if name == jit else ''} | {len(row['seeds'])} | "
                     f"{_fmt(row['miou_with_background'])} | {_fmt(row['miou_foreground'])} | "
                     f"{_kbit(row['uplink_kbit_s_paper_clock'])} | "
                     f"{_kbit(row['downlink_kbit_s_paper_clock'])} | "
                     f"{'' if better is None else f'{100 * better:.0f} %'} |")
    match = doc.get("jit_at_ams_accuracy") or {}
    if match.get("ratio") is not None:
        lines += ["", f"JIT's downlink at AMS's mean mIoU ({100 * match['ams_miou']:.1f} %), "
                  f"interpolated along its threshold sweep: {match['jit_downlink_kbit_s']} "
                  f"kbit/s, {match['ratio']}× AMS's {match['ams_downlink_kbit_s']:.1f}."]
    elif match:
        lines += ["", f"AMS's mean mIoU ({100 * match['ams_miou']:.1f} %) is outside JIT's swept "
                  "range: no bandwidth at equal accuracy."]
    lines += ["", "Paired differences (same seeds; mIoU with background, points):", "",
              "| a − b | on | seeds | mean ± 95 % CI |", "|---|---|---|---|"]
    for d in doc["paired"]:
        lines.append(f"| {d['a']} − {d['b']} | {d['clip'] or 'whole stream'} | "
                     f"{len(d['seeds'])} | {_fmt(d)} |")
    (out / f"{NAME}.md").write_text("\n".join(lines) + "\n")
    _plots(summary, {n: g for n, g in gains.items() if n in table_runs}, out)


def _plots(summary: dict[str, dict], gains: dict[str, list[float]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for prefix, marker in (("jit ", "s"), ("ams T", "o")):
        names = [n for n in summary if n.startswith(prefix)
                 and (prefix == "jit " or n.endswith("H240"))]
        xs = [summary[n]["downlink_kbit_s_paper_clock"]["mean"] for n in names]
        ys = [100 * summary[n]["miou_with_background"]["mean"] for n in names]
        errs = [100 * (summary[n]["miou_with_background"]["ci95"] or 0) for n in names]
        ax.errorbar(xs, ys, yerr=errs, fmt=marker, label=prefix.strip(), capsize=3)
        for x, y, n in zip(xs, ys, names):
            ax.annotate(n.split(" ")[1], (x, y), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("downlink kbit/s (paper clock)")
    ax.set_ylabel("mIoU with background (%)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / f"{NAME}_frontier.png", dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, values in gains.items():
        v = np.sort(np.asarray(values)) * 100
        ax.plot(v, np.arange(1, v.size + 1) / v.size, label=name)
    ax.axvline(0, color="grey", lw=0.5)
    ax.set_xlabel("per-frame mIoU gain over No Customization (points)")
    ax.set_ylabel("CDF")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / f"{NAME}_cdf.png", dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------- main
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--resolution", default="32x64")
    p.add_argument("--aspp", type=int, default=16, help="ASPP width (paper: 256)")
    p.add_argument("--time-scale", type=float, default=0.04)
    p.add_argument("--iterations", type=int, default=5, help="K (paper: 20)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--pretrain-iterations", type=int, default=200)
    p.add_argument("--max-frames", type=int, default=60, help="frames per clip")
    p.add_argument("--t-updates", default="10,20,40", help="AMS T_update sweep, paper seconds")
    p.add_argument("--jit-thresholds", default="0.55,0.7,0.85")
    p.add_argument("--tracking", action=argparse.BooleanOptionalAction, default=True,
                   help="run Remote+Tracking (deterministic: once, with the first seed)")
    p.add_argument("--horizons", default="240,60", help="T_horizon values, paper seconds")
    p.add_argument("--shared-start", action="store_true",
                   help="one starting student (pretrain seed 0) for every seed: the CIs then "
                        "cover the server's randomness only")
    p.add_argument("--only", help="run names to run, comma-separated (default: all)")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--combine", nargs="+", type=Path, help="merge these JSON files instead")
    p.add_argument("--reverse", action="store_true",
                   help="run the plan last run first (a second process for the same seeds "
                        "meets the first in the middle; --combine keeps one of each run)")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.combine:
        docs = [json.loads(f.read_text()) for f in args.combine]
        runs = {(r["run"], r["seed"]): r for d in reversed(docs) for r in d["runs"]}
        merged = {**docs[0], "runs": list(runs.values()),  # a (run, seed) twice: the first
                  "combined_from": [str(f) for f in args.combine],
                  "commits": sorted({d["commit"] for d in docs})}
        write_outputs(merged, args.out)
        return
    args.t_updates = [float(v) for v in args.t_updates.split(",")]
    args.jit_thresholds = [float(v) for v in args.jit_thresholds.split(",")]
    args.horizons = [float(v) for v in args.horizons.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    from mobdistill.models.registry import parse_resolution
    from mobdistill.server.teachers import get_teacher

    base = StreamConfig(videos=STREAM, max_frames_per_clip=args.max_frames,
                        resolution=parse_resolution(args.resolution),
                        aspp_channels=args.aspp, time_scale=args.time_scale,
                        iterations=args.iterations, batch_size=args.batch_size,
                        pretrain_iterations=args.pretrain_iterations, num_threads=1,
                        update_blocking=True,  # swaps at the simulated arrival frame
                        pretrain_seed=0 if args.shared_start else None)
    settings = {**asdict(base), "stream": list(STREAM), "seeds": seeds,
                "t_updates_paper_s": args.t_updates, "jit_thresholds": args.jit_thresholds,
                "horizons_paper_s": args.horizons,
                "returning_scene": "carphone (pristine first, distorted last)"}
    doc = {**provenance(settings), "engine": engine_binary(),
           "clips": {c.name: {"role": c.role.value, "sha256": c.sha256}
                     for c in clips.CLIPS if c.name in STREAM},
           "runs": []}
    teacher = get_teacher(base.teacher)
    wanted = set(args.only.split(",")) if args.only else None
    for name, overrides in plan(args)[::-1 if args.reverse else 1]:
        if (wanted and name not in wanted) or (name == "remote-tracking" and not args.tracking):
            continue
        for seed in seeds[:1] if name == "remote-tracking" else seeds:
            config = stream_config(base, overrides, seed)
            row = measure(name, config, run_folder(name, seed), teacher)
            doc["runs"].append(row)
            print(f"{name} seed {seed}: {row['miou_with_background']:.4f} "
                  f"down {row['downlink_kbit_s_paper_clock']} kbit/s ({row['wall_s']} s)",
                  flush=True)
            write_outputs(doc, args.out)


if __name__ == "__main__":
    main()
