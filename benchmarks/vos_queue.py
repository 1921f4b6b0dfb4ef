"""MobileVOS: J&F vs memory queue length Q for the exported student, through the engine (the
accuracy side of seed 002's Fig. 4; benchmarks/queue_sweep.py measured the latency side).

The unified-loss students of vos_loss.py (trained with Q = 2) are exported at each Q (the weights
do not depend on Q; the memory's shape does) and scored on the held-out sequences. The figure puts
the mean over seeds (95% CI) beside the latency curve in results/mobilevos_queue_sweep.json.

    nice -n 19 .venv/bin/python benchmarks/vos_queue.py [--seeds 0,1,2] [--queue-lengths 1,2,4,8]

Writes benchmarks/results/vos_queue.json and vos_queue.png. Stages are cached in --work.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from scipy import stats

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from provenance import provenance  # noqa: E402
from vos_common import HELD_OUT_CLIPS, RESULTS, TRAIN_CLIPS, VosSettings, VosWork  # noqa: E402

LATENCY = RESULTS / "mobilevos_queue_sweep.json"


def mean_ci(values: list[float]) -> dict[str, Any]:
    v = np.asarray(values)
    half = (float(stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
            if v.size > 1 else float("nan"))
    return {"mean": float(v.mean()), "ci95": [float(v.mean()) - half, float(v.mean()) + half],
            "per_seed": v.tolist()}


def run(work: VosWork, seeds: list[int], queue_lengths: list[int], loss: str) -> dict[str, Any]:
    points = []
    for q in queue_lengths:
        per_seed = []
        for seed in seeds:
            manifest = work.export(work.student(seed, loss),
                                   work.settings.student_config(queue_length=q),
                                   f"{loss}-s{seed}-q{q}")
            scored = work.score(manifest)
            per_seed.append({"seed": seed, **scored["overall"],
                             "invoke_ms_median": float(np.median(
                                 [s["invoke_ms_median"] for s in scored["sequences"]]))})
            print(f"Q={q} seed {seed} J&F {scored['overall']['J&F']:.3f}", flush=True)
        points.append({"queue_length": q, "runs": per_seed,
                       **{m: mean_ci([r[m] for r in per_seed]) for m in ("J&F", "J", "F")}})
    return {"loss": loss, "points": points}


def plot(result: dict[str, Any], latency: dict[str, Any] | None, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 4))
    qs = [p["queue_length"] for p in result["points"]]
    means = [p["J&F"]["mean"] for p in result["points"]]
    errors = [[m - p["J&F"]["ci95"][0] for m, p in zip(means, result["points"])],
              [p["J&F"]["ci95"][1] - m for m, p in zip(means, result["points"])]]
    ax.errorbar(qs, means, yerr=errors, fmt="o-", color="tab:blue", capsize=3,
                label="J&F, tiny student 96×128 (mean, 95% CI over seeds)")
    ax.set_xlabel("memory queue length Q")
    ax.set_ylabel("J&F on held-out sequences (engine)", color="tab:blue")
    ax.set_xscale("log", base=2)
    ax.set_xticks(qs, [str(q) for q in qs])
    if latency is not None:
        right = ax.twinx()
        points = [p for p in latency["points"] if p["queue_length"] <= max(qs)]
        right.plot([p["queue_length"] for p in points], [p["p50_ms"] for p in points], "s--",
                   color="tab:orange",
                   label="step p50 latency, paper config 480×864 (queue_sweep.py)")
        right.set_ylabel("step latency p50 (ms)", color="tab:orange")
        fig.legend(fontsize=7, loc="lower center", ncol=1, bbox_to_anchor=(0.5, 0.0))
        fig.subplots_adjust(bottom=0.28)
    else:
        ax.legend(fontsize=8)
    ax.set_title("MobileVOS: accuracy and latency vs queue length", fontsize=10)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--queue-lengths", default="1,2,4,8")
    parser.add_argument("--loss", choices=("unified", "ce"), default="unified")
    parser.add_argument("--student-iterations", type=int,
                        default=VosSettings().student_iterations)
    parser.add_argument("--teacher-iterations", type=int,
                        default=VosSettings().teacher_iterations)
    parser.add_argument("--work", type=Path, default=Path("/tmp/mobdistill-bench/vos"))
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = parser.parse_args()
    seeds = [int(v) for v in args.seeds.split(",")]
    queue_lengths = [int(v) for v in args.queue_lengths.split(",")]
    settings = replace(VosSettings(), student_iterations=args.student_iterations,
                       teacher_iterations=args.teacher_iterations)
    result = run(VosWork(args.work, settings), seeds, queue_lengths, args.loss)
    latency = json.loads(LATENCY.read_text()) if LATENCY.is_file() else None
    args.out.mkdir(parents=True, exist_ok=True)
    record = {**provenance({**asdict(settings), "seeds": seeds, "queue_lengths": queue_lengths,
                            "train_clips": TRAIN_CLIPS, "held_out_clips": HELD_OUT_CLIPS,
                            "trained_queue_length": 2,
                            "invoke_ms_median": "the engine's step time during scoring, "
                                                "under nice 19 on a shared host: not a timing "
                                                "benchmark",
                            "latency_curve": str(LATENCY.relative_to(RESULTS.parent.parent))}),
              **result}
    (args.out / "vos_queue.json").write_text(json.dumps(record, indent=1) + "\n")
    plot(result, latency, args.out / "vos_queue.png")
    for p in result["points"]:
        print(f"Q={p['queue_length']}: J&F {p['J&F']['mean']:.3f} "
              f"(95% CI {p['J&F']['ci95'][0]:.3f} … {p['J&F']['ci95'][1]:.3f})")


if __name__ == "__main__":
    main()
