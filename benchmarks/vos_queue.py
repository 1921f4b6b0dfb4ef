"""MobileVOS: J&F vs memory queue length Q for the exported student, through the engine (the
accuracy side of seed 002's Fig. 4; benchmarks/queue_sweep.py measured the latency side).

The students of vos_loss.py (trained with Q = 2) are exported at each Q (the weights do not
depend on Q; the memory's shape does) and scored on the held-out sequences through the engine, and
in PyTorch with the same protocol. The figure puts the mean over seeds (95% CI) beside the latency
curve in results/mobilevos_queue_sweep.json.

    nice -n 19 .venv/bin/python benchmarks/vos_queue.py [--seeds 0,1,2] [--queue-lengths 1,2,4,8]
        [--losses ce,unified] [--engine cached]   # engine figures only for exports in --work

Writes benchmarks/results/vos_queue.json and vos_queue.png. Stages are cached in --work.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from scipy import stats

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from provenance import provenance  # noqa: E402
from vos_common import (  # noqa: E402
    HELD_OUT_CLIPS,
    RESULTS,
    TRAIN_CLIPS,
    VosWork,
    add_vos_arguments,
    settings_from,
)

LATENCY = RESULTS / "mobilevos_queue_sweep.json"


def mean_ci(values: list[float]) -> dict[str, Any]:
    v = np.asarray(values)
    half = (float(stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
            if v.size > 1 else float("nan"))
    return {"mean": float(v.mean()), "ci95": [float(v.mean()) - half, float(v.mean()) + half],
            "per_seed": v.tolist()}


def run(work: VosWork, seeds: list[int], queue_lengths: list[int], losses: list[str],
        engine: str) -> dict[str, Any]:
    curves = {}
    for loss in losses:
        points = []
        for q in queue_lengths:
            config = work.settings.student_config(queue_length=q)
            per_seed = []
            for seed in seeds:
                checkpoint, name = work.student(seed, loss), f"{loss}-s{seed}-q{q}"
                scored = (work.score(work.export(checkpoint, config, name))
                          if engine == "always" or work.exported(name) else None)
                per_seed.append({
                    "seed": seed,
                    "pytorch": work.score_pytorch(checkpoint, config, name)["overall"],
                    "engine": scored["overall"] if scored else None,
                    "engine_invoke_ms_median": float(np.median(
                        [s["invoke_ms_median"] for s in scored["sequences"]])) if scored else None})
            point: dict[str, Any] = {"queue_length": q, "runs": per_seed}
            for scorer in ("pytorch", "engine"):
                values = [r[scorer] for r in per_seed if r[scorer] is not None]
                if values:
                    point[scorer] = {m: mean_ci([v[m] for v in values]) for m in ("J&F", "J", "F")}
            points.append(point)
            print(f"{loss} Q={q}: J&F pytorch {point['pytorch']['J&F']['mean']:.3f}", flush=True)
        curves[loss] = points
    return {"curves": curves}


def plot(result: dict[str, Any], latency: dict[str, Any] | None,
         reference: float, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = {("unified", "pytorch"): ("o-", "tab:blue"), ("ce", "pytorch"): ("o-", "tab:green"),
              ("unified", "engine"): ("D", "tab:blue"), ("ce", "engine"): ("D", "tab:green")}
    qs: list[int] = []
    for loss, points in result["curves"].items():
        for scorer in ("pytorch", "engine"):
            shown = [p for p in points if scorer in p]
            if not shown:
                continue
            qs = sorted(set(qs) | {p["queue_length"] for p in points})
            means = np.array([p[scorer]["J&F"]["mean"] for p in shown])
            low = means - np.array([p[scorer]["J&F"]["ci95"][0] for p in shown])
            high = np.array([p[scorer]["J&F"]["ci95"][1] for p in shown]) - means
            marker, colour = styles[(loss, scorer)]
            ax.errorbar([p["queue_length"] for p in shown], means, yerr=[low, high], fmt=marker,
                        color=colour, capsize=3, mfc="none" if scorer == "engine" else colour,
                        label=f"J&F {loss}, {scorer} (mean, 95% CI over seeds)")
    ax.axhline(reference, color="tab:red", ls=":",
               label=f"first frame's mask copied {reference:.3f}")
    ax.set_xlabel("memory queue length Q")
    ax.set_ylabel("J&F on held-out sequences, student 64×64")
    ax.set_ylim(0, 1)
    ax.set_xscale("log", base=2)
    ax.set_xticks(qs, [str(q) for q in qs])
    handles, labels = ax.get_legend_handles_labels()
    if latency is not None:
        right = ax.twinx()
        points = [p for p in latency["points"] if p["queue_length"] <= max(qs)]
        line = right.plot([p["queue_length"] for p in points], [p["p50_ms"] for p in points],
                          "s--", color="tab:orange",
                          label="step p50 latency, paper config 480×864 (queue_sweep.py)")
        right.set_ylabel("step latency p50, ms (orange)")
        handles += line
        labels += [line[0].get_label()]
    fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=2,
               bbox_to_anchor=(0.5, -0.02))
    fig.subplots_adjust(bottom=0.3)
    ax.set_title("MobileVOS: accuracy and latency vs queue length", fontsize=10)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_vos_arguments(parser)
    parser.add_argument("--queue-lengths", default="1,2,4,8")
    parser.add_argument("--losses", default="ce,unified")
    args = parser.parse_args()
    seeds = [int(v) for v in args.seeds.split(",")]
    queue_lengths = [int(v) for v in args.queue_lengths.split(",")]
    settings = settings_from(args)
    work = VosWork(args.work, settings)
    result = run(work, seeds, queue_lengths, args.losses.split(","), args.engine)
    reference = work.reference_scores()["first_frame_copied"]["J&F"]
    latency = json.loads(LATENCY.read_text()) if LATENCY.is_file() else None
    args.out.mkdir(parents=True, exist_ok=True)
    record = {**provenance({**asdict(settings), "seeds": seeds, "queue_lengths": queue_lengths,
                            "train_clips": TRAIN_CLIPS, "held_out_clips": HELD_OUT_CLIPS,
                            "trained_queue_length": 2, "engine_scoring": args.engine,
                            "invoke_ms_median": "the engine's step time during scoring, "
                                                "under nice 19 on a shared host: not a timing "
                                                "benchmark",
                            "latency_curve": str(LATENCY.relative_to(RESULTS.parent.parent))}),
              "first_frame_copied_J&F": reference, **result}
    (args.out / "vos_queue.json").write_text(json.dumps(record, indent=1) + "\n")
    plot(result, latency, reference, args.out / "vos_queue.png")


if __name__ == "__main__":
    main()
