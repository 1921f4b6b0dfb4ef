"""MobileVOS: J&F of a student trained with the unified loss vs plain cross-entropy (seed 002's
Table 5, here on made-here sequences), paired by seed, each scored through the engine.

Per seed, the two students start from the same initial weights and see the same training windows;
only the loss differs. Both are exported (TFLite, Q = 2, verified) and scored on the held-out
sequences by the engine. One teacher (wider decoder, unbounded memory, the supervised loss alone)
serves every seed; its own export is scored too (Q = the sequence length, i.e. unbounded).

    nice -n 19 .venv/bin/python benchmarks/vos_loss.py [--seeds 0,1,2] [--work DIR]

Writes benchmarks/results/vos_loss.json and vos_loss.png. Stages are cached in --work.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from provenance import provenance  # noqa: E402
from vos_common import (  # noqa: E402
    HELD_OUT_CLIPS,
    RESULTS,
    TRAIN_CLIPS,
    VosSettings,
    VosWork,
    paired_difference,
)

LOSSES = ("ce", "unified")


def settings_from(args: argparse.Namespace) -> VosSettings:
    return replace(VosSettings(), student_iterations=args.student_iterations,
                   teacher_iterations=args.teacher_iterations)


def run(work: VosWork, seeds: list[int]) -> dict[str, Any]:
    s = work.settings
    teacher, teacher_path = work.teacher()
    teacher_export = work.export(teacher_path, s.teacher_config(queue_length=s.held_out_frames),
                                 "teacher")
    runs: dict[str, list[dict[str, Any]]] = {loss: [] for loss in LOSSES}
    for seed in seeds:
        for loss in LOSSES:
            checkpoint = work.student(seed, loss)
            manifest = work.export(checkpoint, s.student_config(queue_length=2),
                                   f"{loss}-s{seed}-q2")
            scored = work.score(manifest)
            training = json.loads((work.root / f"student-{loss}-s{seed}.json").read_text())
            runs[loss].append({"seed": seed, **scored["overall"],
                               "sequences": scored["sequences"],
                               "train_seconds": training["seconds"],
                               "final_loss_mean_last_20": sum(training["losses"][-20:]) / 20})
            print(f"seed {seed} {loss:8s} J&F {scored['overall']['J&F']:.3f}", flush=True)
    teacher_scored = work.score(teacher_export)
    teacher_training = json.loads((work.root / "teacher.json").read_text())
    return {
        "teacher": {**teacher_scored["overall"], "sequences": teacher_scored["sequences"],
                    "train_seconds": teacher_training["seconds"],
                    "queue_length": s.held_out_frames},
        "students": runs,
        "paired_unified_minus_ce": {
            metric: paired_difference([r[metric] for r in runs["unified"]],
                                      [r[metric] for r in runs["ce"]])
            for metric in ("J&F", "J", "F")},
    }


def plot(result: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ce, unified = result["students"]["ce"], result["students"]["unified"]
    for a, b in zip(ce, unified):
        ax.plot([0, 1], [a["J&F"], b["J&F"]], "o-", color="tab:blue", alpha=0.7)
        ax.annotate(f"seed {a['seed']}", (1.02, b["J&F"]), fontsize=8, va="center")
    ax.axhline(result["teacher"]["J&F"], color="tab:gray", ls="--",
               label=f"teacher (unbounded memory) {result['teacher']['J&F']:.3f}")
    d = result["paired_unified_minus_ce"]["J&F"]
    ax.set_xticks([0, 1], ["cross-entropy", "unified loss"])
    ax.set_xlim(-0.3, 1.4)
    ax.set_ylabel("J&F on held-out sequences (engine, Q = 2)")
    ax.set_title(f"unified − CE: {d['mean']:+.3f} (95% CI {d['ci95'][0]:+.3f} … "
                 f"{d['ci95'][1]:+.3f}, n = {d['n']})", fontsize=9)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--student-iterations", type=int,
                        default=VosSettings().student_iterations)
    parser.add_argument("--teacher-iterations", type=int,
                        default=VosSettings().teacher_iterations)
    parser.add_argument("--work", type=Path, default=Path("/tmp/mobdistill-bench/vos"))
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = parser.parse_args()
    seeds = [int(v) for v in args.seeds.split(",")]
    settings = settings_from(args)
    result = run(VosWork(args.work, settings), seeds)
    args.out.mkdir(parents=True, exist_ok=True)
    record = {**provenance({**asdict(settings), "seeds": seeds, "train_clips": TRAIN_CLIPS,
                            "held_out_clips": HELD_OUT_CLIPS, "student_queue_length": 2,
                            "engine": "mobdistill engine, TFLite XNNPACK, float32"}),
              **result}
    (args.out / "vos_loss.json").write_text(json.dumps(record, indent=1) + "\n")
    plot(result, args.out / "vos_loss.png")
    d = result["paired_unified_minus_ce"]["J&F"]
    print(f"teacher J&F {result['teacher']['J&F']:.3f}; unified − CE J&F {d['mean']:+.4f} "
          f"(95% CI {d['ci95'][0]:+.4f} … {d['ci95'][1]:+.4f}, n = {d['n']})")


if __name__ == "__main__":
    main()
