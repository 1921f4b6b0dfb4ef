"""Delta Distillation: accuracy against the teacher on real clips for keyframe periods T, and the
FLOPs each T saves (seed 003; docs/delta-distillation.md).

Per seed: the original DeepLab (`deeplab-delta`'s base) is trained on the pretraining clips with
the teacher's labels, then for each T a copy gets its students trained (Algorithm 1 with the task
loss, windows of T frames). Every model runs the schedule (Algorithm 2) over the evaluation clips
and is scored per frame against the teacher (mIoU with background; foreground mIoU where either
map has foreground). Compared on the same frames, paired by seed:
  original  the base on every frame (T = 1),
  delta     the schedule with the trained students (trained from dz~ = 0),
  hold      the same schedule with the students zeroed: a delta frame reuses the last keyframe's
            features (what skipping frames gives; the students must beat it to be worth anything).
95% CIs are Student-t over seeds. FLOPs per frame (keyframe, delta, average over T) are counted
at the benchmark's resolution and at the paper's 256x512; latency is measured by the engine
benchmark (benchmarks/delta_latency.py), not here.

Runs one process per seed list and merges with --combine:
  nice -n 19 python benchmarks/delta_accuracy.py --seeds 0 --out /tmp/dacc-0.json
  python benchmarks/delta_accuracy.py --combine /tmp/dacc-*.json \
      --out benchmarks/results/delta_accuracy.json
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from provenance import provenance  # noqa: E402

from mobdistill import clips  # noqa: E402
from mobdistill.models import complexity, registry  # noqa: E402
from mobdistill.models import delta_distill as dd  # noqa: E402
from mobdistill.server.teachers import get_teacher  # noqa: E402
from mobdistill.training import delta_trainer as trainer  # noqa: E402

MODEL = "deeplab-delta"
TRAIN_CLIPS = tuple(c.name for c in clips.clips_with_role(clips.Role.PRETRAINING))
EVAL_CLIPS = ("carphone_pristine.mp4", "bikes.mp4")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--periods", type=int, nargs="+", default=[2, 4, 8])
    p.add_argument("--resolution", default="64x128")
    p.add_argument("--base-iterations", type=int, default=250)
    p.add_argument("--iterations", type=int, default=120, help="student steps per T")
    p.add_argument("--batch-size", type=int, default=2, help="windows per student step")
    p.add_argument("--lr", type=float, default=1e-3, help="students' Adam learning rate")
    p.add_argument("--max-frames", type=int, default=100, help="frames read per training clip")
    p.add_argument("--eval-clips", nargs="+", default=list(EVAL_CLIPS))
    p.add_argument("--eval-frames", type=int, default=80, help="frames scored per clip")
    p.add_argument("--frame-step", type=int, default=1,
                   help="use every n-th frame of every clip (a camera at fps/n: larger changes "
                        "between consecutive processed frames)")
    p.add_argument("--num-threads", type=int, default=1)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--combine", type=Path, nargs="+", help="merge per-seed JSONs into --out")
    return p.parse_args(argv)


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items() if k not in ("out", "combine", "seeds")} | {
        "train_clips": list(TRAIN_CLIPS), "model": MODEL, "teacher": "selfie",
        "base_batch": "2 x batch-size single frames", "base_lr": 1e-3, "alpha": 1.0}


def run_seed(seed: int, args: argparse.Namespace, train: list, evaluation: list,
             num_classes: int, save: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """One seed's base and students; `save` gets the partial result after each step."""
    config = registry.configure(registry.get(MODEL), num_classes=num_classes)
    torch.manual_seed(seed)
    model = dd.build(config)
    started = time.perf_counter()
    settings = trainer.DeltaTrainConfig(period=2, iterations=args.iterations,
                                        base_iterations=args.base_iterations,
                                        batch_size=args.batch_size, seed=seed)
    base_losses = trainer.train_base(model, train, settings)
    out: dict[str, Any] = {"seed": seed, "base_loss_first_last": [base_losses[0],
                                                                   base_losses[-1]],
                           "base_seconds": round(time.perf_counter() - started, 1),
                           "original": _scores(model, evaluation, 1, num_classes), "periods": {}}
    save(out)
    for period in args.periods:
        started = time.perf_counter()
        student = copy.deepcopy(model)
        trainer.start_students_from_hold(student)
        history = trainer.train_students(
            student, train, trainer.DeltaTrainConfig(
                period=period, iterations=args.iterations, base_iterations=0,
                batch_size=args.batch_size, lr=args.lr, seed=seed))
        hold = copy.deepcopy(student)
        for s in hold.students:
            torch.nn.init.zeros_(s.expand.weight)
        out["periods"][str(period)] = {
            "delta": _scores(student, evaluation, period, num_classes),
            "hold": _scores(hold, evaluation, period, num_classes),
            "loss_first_last": [history[0], history[-1]],
            "seconds": round(time.perf_counter() - started, 1)}
        print(f"seed {seed} T={period}: delta {out['periods'][str(period)]['delta']['miou']:.4f}"
              f" hold {out['periods'][str(period)]['hold']['miou']:.4f} original "
              f"{out['original']['miou']:.4f}", flush=True)
        save(out)
    return out


def _scores(model: dd.DeltaDeepLab, evaluation: list, period: int,
            num_classes: int) -> dict[str, Any]:
    """Mean mIoU over every scored frame of every clip, and over keyframes / delta frames."""
    frames = {"miou": [], "miou_foreground": [], "keyframe": []}
    for clip in evaluation:
        scores = trainer.schedule_scores(model, clip, period, num_classes)
        for key in frames:
            frames[key] += scores[key]
    miou = np.array(frames["miou"])
    key = np.array(frames["keyframe"])
    fg = [v for v in frames["miou_foreground"] if v is not None]
    return {"miou": float(miou.mean()),
            "miou_foreground": float(np.mean(fg)) if fg else None,
            "miou_keyframes": float(miou[key].mean()),
            "miou_delta_frames": float(miou[~key].mean()) if (~key).any() else None,
            "frames": int(miou.size)}


def flops_table(periods: list[int], num_classes: int,
                resolution: tuple[int, int]) -> dict[str, Any]:
    entry = registry.get(MODEL)
    config = registry.configure(entry, num_classes=num_classes)
    table = {}
    for label, size in (("benchmark", resolution), ("paper_256x512", (256, 512))):
        flops = complexity.signature_flops(entry, config, *size)
        table[label] = {"resolution": list(size), "keyframe_flops": flops["keyframe"],
                        "delta_flops": flops["delta"],
                        "per_period": {str(t): complexity.schedule_flops(
                            flops["keyframe"], flops["delta"], t) for t in periods}}
    return table


def ci95(values: list[float]) -> dict[str, Any]:
    from scipy import stats

    v = np.array(values, float)
    half = (float(stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
            if v.size > 1 else None)
    return {"mean": float(v.mean()), "ci95_half_width": half, "n": int(v.size)}


def summarise(seeds: list[dict[str, Any]], periods: list[str]) -> dict[str, Any]:
    summary: dict[str, Any] = {"original_miou": ci95([s["original"]["miou"] for s in seeds])}
    for t in periods:
        rows = [s["periods"][t] for s in seeds]
        summary[f"T={t}"] = {
            "delta_miou": ci95([r["delta"]["miou"] for r in rows]),
            "hold_miou": ci95([r["hold"]["miou"] for r in rows]),
            "delta_miou_delta_frames": ci95([r["delta"]["miou_delta_frames"] for r in rows]),
            "delta_minus_original": ci95([r["delta"]["miou"] - s["original"]["miou"]
                                          for r, s in zip(rows, seeds)]),
            "delta_minus_hold": ci95([r["delta"]["miou"] - r["hold"]["miou"] for r in rows]),
        }
    return summary


def combine(paths: list[Path], out: Path) -> None:
    parts = [json.loads(p.read_text()) for p in paths]
    seeds = sorted((s for p in parts for s in p["seeds"]), key=lambda s: s["seed"])
    first = parts[0]
    periods = [t for t in seeds[0]["periods"] if all(t in s["periods"] for s in seeds)]
    result = {**{k: first[k] for k in ("commit", "settings", "host", "flops")},
              "commits": sorted({p["commit"] for p in parts}),
              "seeds": seeds, "summary": summarise(seeds, periods)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.combine:
        combine(args.combine, args.out)
        return 0
    torch.set_num_threads(args.num_threads)
    teacher = get_teacher("selfie")
    resolution = registry.parse_resolution(args.resolution)
    started = time.perf_counter()
    train = trainer.load_clips(TRAIN_CLIPS, resolution, teacher, max_frames=args.max_frames,
                               frame_step=args.frame_step)
    evaluation = trainer.load_clips(args.eval_clips, resolution, teacher,
                                    max_frames=args.eval_frames, frame_step=args.frame_step)
    record = {**provenance(settings_of(args)), "load_average_at_start": os.getloadavg(),
              "flops": flops_table(args.periods, teacher.num_classes, resolution), "seeds": []}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for index, seed in enumerate(args.seeds):
        def save(partial: dict[str, Any], index: int = index) -> None:  # partial results survive
            record["seeds"][index:] = [partial]
            record["seconds"] = round(time.perf_counter() - started, 1)
            args.out.write_text(json.dumps(record, indent=1) + "\n")

        run_seed(seed, args, train, evaluation, teacher.num_classes, save)
    if len(args.seeds) > 1:
        record["summary"] = summarise(record["seeds"], [str(t) for t in args.periods])
        args.out.write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
