"""MobileVOS: J&F of a student trained with the unified loss vs plain cross-entropy (seed 002's
Table 5, here on made-here sequences), paired by seed, each scored through the engine.

Per seed, the two students start from the same initial weights and see the same training windows;
only the loss differs. Both are exported (TFLite, Q = 2, verified) and scored on the held-out
sequences by the engine. One teacher (wider decoder, unbounded memory, the supervised loss alone)
serves every seed; its own export is scored too (Q = the sequence length, i.e. unbounded). Every
model is also scored in PyTorch with the same protocol (cheap: no export), and two model-free
predictors (the first frame's mask copied, all foreground) give the floor.

    nice -n 19 .venv/bin/python benchmarks/vos_loss.py [--seeds 0,1,2] [--work DIR]
        [--engine cached]   # engine figures only for exports already in --work

Writes benchmarks/results/vos_loss.json and vos_loss.png. Stages are cached in --work.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

from mobdistill.models import mobilevos

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from provenance import provenance  # noqa: E402
from vos_common import (  # noqa: E402
    HELD_OUT_CLIPS,
    TRAIN_CLIPS,
    VosWork,
    add_vos_arguments,
    paired_difference,
    settings_from,
)

LOSSES = ("ce", "unified")


def _engine_score(work: VosWork, checkpoint: Path, config: mobilevos.Config, name: str,
                  engine: str) -> dict[str, Any] | None:
    """J&F through the engine of the export `name` (exported first with engine="always"; with
    "cached" only if --work already holds it), else None."""
    if engine == "cached" and not work.exported(name):
        return None
    return work.score(work.export(checkpoint, config, name))


def _paired(runs: dict[str, list[dict[str, Any]]], scorer: str) -> dict[str, Any]:
    """unified − CE per metric over the seeds both losses have a `scorer` figure for."""
    pairs = [(u[scorer], c[scorer]) for u, c in zip(runs["unified"], runs["ce"])
             if u[scorer] is not None and c[scorer] is not None]
    if not pairs:
        return {}
    return {metric: paired_difference([u[metric] for u, _ in pairs],
                                      [c[metric] for _, c in pairs])
            for metric in ("J&F", "J", "F")}


def run(work: VosWork, seeds: list[int], engine: str) -> dict[str, Any]:
    s = work.settings
    _, teacher_path = work.teacher()
    teacher_config = s.teacher_config(queue_length=s.held_out_frames)
    teacher_engine = _engine_score(work, teacher_path, teacher_config, "teacher", engine)
    runs: dict[str, list[dict[str, Any]]] = {loss: [] for loss in LOSSES}
    for seed in seeds:
        for loss in LOSSES:
            checkpoint = work.student(seed, loss)
            config = s.student_config(queue_length=2)
            name = f"{loss}-s{seed}-q2"
            scored = _engine_score(work, checkpoint, config, name, engine)
            pytorch = work.score_pytorch(checkpoint, config, name)
            training = json.loads((work.root / f"student-{loss}-s{seed}.json").read_text())
            runs[loss].append({
                "seed": seed, "engine": scored["overall"] if scored else None,
                "pytorch": pytorch["overall"],
                "engine_sequences": scored["sequences"] if scored else None,
                "train_seconds": training["seconds"],
                "loss_first_20": float(np.mean(training["losses"][:20])),
                "loss_last_20": float(np.mean(training["losses"][-20:]))})
            print(f"seed {seed} {loss:8s} J&F engine "
                  f"{scored['overall']['J&F'] if scored else float('nan'):.3f} "
                  f"pytorch {pytorch['overall']['J&F']:.3f}", flush=True)
    teacher_training = json.loads((work.root / "teacher.json").read_text())
    return {
        "teacher": {"engine": teacher_engine["overall"] if teacher_engine else None,
                    "pytorch": work.score_pytorch(teacher_path, teacher_config,
                                                  "teacher")["overall"],
                    "train_seconds": teacher_training["seconds"],
                    "loss_first_20": float(np.mean(teacher_training["losses"][:20])),
                    "loss_last_20": float(np.mean(teacher_training["losses"][-20:])),
                    "queue_length": s.held_out_frames},
        "model_free": work.reference_scores(),
        "students": runs,
        "paired_unified_minus_ce": {scorer: _paired(runs, scorer)
                                    for scorer in ("engine", "pytorch")},
    }


def plot(result: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4.2))
    ce, unified = result["students"]["ce"], result["students"]["unified"]
    for scorer, marker, colour in (("engine", "o-", "tab:blue"), ("pytorch", "x:", "tab:green")):
        for i, pair in enumerate(zip(ce, unified)):
            points = [(x, run[scorer]["J&F"]) for x, run in enumerate(pair) if run[scorer]]
            ax.plot([x for x, _ in points], [y for _, y in points], marker, color=colour,
                    alpha=0.8, label=f"{scorer} (one line per seed)" if i == 0 else None)
    references = [("teacher (unbounded memory, PyTorch)", result["teacher"]["pytorch"]["J&F"],
                   "tab:gray"),
                  ("first frame's mask copied", result["model_free"]["first_frame_copied"]["J&F"],
                   "tab:red")]
    for label, value, colour in references:
        ax.axhline(value, color=colour, ls="--", label=f"{label}: {value:.3f}")
    title = []
    for scorer in ("engine", "pytorch"):
        d = result["paired_unified_minus_ce"][scorer].get("J&F")
        if d:
            title.append(f"{scorer}: unified − CE {d['mean']:+.3f} "
                         f"[{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}], n = {d['n']}")
    ax.set_title("\n".join(title), fontsize=8)
    ax.set_xticks([0, 1], ["cross-entropy", "unified loss"])
    ax.set_xlim(-0.3, 1.3)
    ax.set_ylim(0, 1)
    ax.set_ylabel("J&F on held-out sequences (Q = 2)")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_vos_arguments(parser)
    args = parser.parse_args()
    seeds = [int(v) for v in args.seeds.split(",")]
    settings = settings_from(args)
    result = run(VosWork(args.work, settings), seeds, args.engine)
    args.out.mkdir(parents=True, exist_ok=True)
    record = {**provenance({**asdict(settings), "seeds": seeds, "train_clips": TRAIN_CLIPS,
                            "held_out_clips": HELD_OUT_CLIPS, "student_queue_length": 2,
                            "engine": "mobdistill engine, TFLite XNNPACK, float32",
                            "engine_scoring": args.engine}),
              **result}
    (args.out / "vos_loss.json").write_text(json.dumps(record, indent=1) + "\n")
    plot(result, args.out / "vos_loss.png")
    for scorer, paired in result["paired_unified_minus_ce"].items():
        if paired:
            d = paired["J&F"]
            print(f"{scorer}: unified − CE J&F {d['mean']:+.4f} "
                  f"(95% CI {d['ci95'][0]:+.4f} … {d['ci95'][1]:+.4f}, n = {d['n']})")


if __name__ == "__main__":
    main()
