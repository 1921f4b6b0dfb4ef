"""`mobdistill delta train`: Delta Distillation's training (seed 003, Algorithm 1 with the task
loss) of `deeplab-delta` on real clips labelled by a teacher (docs/delta-distillation.md).

Writes `deeplab-delta.pt` (the whole model's state dict, which `mobdistill export --checkpoint`
takes) and `delta-train.json` (settings, losses, clip digests) into --out, and prints the export
command that matches the trained configuration.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

from mobdistill.errors import UsageError

MODEL = "deeplab-delta"
CHECKPOINT = f"{MODEL}.pt"
RECORD = "delta-train.json"


def add_parser(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="delta_command", metavar="ACTION", required=True)
    train = sub.add_parser("train", help="train the base, then the delta students (writes .pt)")
    train.add_argument("--out", type=Path, required=True, help="folder for the checkpoint")
    train.add_argument("--tiny", action="store_true",
                       help="the tiny config (ASPP 16, two units; matches `export --tiny`)")
    train.add_argument("--resolution", default="64x128", help="HEIGHTxWIDTH (64x128)")
    train.add_argument("--keyframe-period", type=int, default=None,
                       help="T: windows of a keyframe and T-1 delta frames (config's: 3)")
    train.add_argument("--iterations", type=int, default=300, help="student steps (300)")
    train.add_argument("--base-iterations", type=int, default=300,
                       help="steps training the original network first (300; 0 with "
                            "--base-checkpoint)")
    train.add_argument("--base-checkpoint", type=Path, default=None,
                       help="a trained plain `deeplab` state dict to start from (no base phase)")
    train.add_argument("--batch-size", type=int, default=4, help="windows per step (4)")
    train.add_argument("--lr", type=float, default=1e-3, help="students' Adam rate (1e-3)")
    train.add_argument("--alpha", type=float, default=1.0,
                       help="weight of the distillation loss against the task loss (1)")
    train.add_argument("--clips", default=None,
                       help="training clips, comma-separated (default: the pretraining clips)")
    train.add_argument("--max-frames", type=int, default=120, help="frames read per clip (120)")
    train.add_argument("--teacher", default="selfie",
                       help="built-in teacher (selfie), a .tflite/.onnx file or file.py:factory")
    train.add_argument("--seed", type=int, default=0, help="init and sampling seed (0)")
    train.add_argument("--num-threads", type=int, default=2, help="torch threads (2)")
    train.add_argument("--json", action="store_true", help="print the record as JSON")
    train.set_defaults(func=run_train)


def _clip_names(text: str | None) -> tuple[str, ...]:
    from mobdistill import clips

    if text is None:
        return tuple(c.name for c in clips.clips_with_role(clips.Role.PRETRAINING))
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    scored = [n for n in names if clips.role_of(n) is clips.Role.EVALUATION]
    if scored or not names:
        raise UsageError(f"training clips {scored or '(none)'}: give clips that are not "
                         "evaluation clips (docs/clips.md): accuracy is scored on those")
    return names


def run_train(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from mobdistill import clips
    from mobdistill.export.checkpoint import load_checkpoint
    from mobdistill.files import atomic_write_text, sha256_file
    from mobdistill.models import delta_distill, registry
    from mobdistill.server.teachers import load_teacher
    from mobdistill.training import delta_trainer as trainer

    names = _clip_names(args.clips)
    resolution = registry.parse_resolution(args.resolution)
    entry = registry.get(MODEL)
    registry.check_resolution(entry, *resolution)
    teacher = load_teacher(args.teacher)
    overrides = {"num_classes": teacher.num_classes}
    if args.keyframe_period is not None:
        overrides["keyframe_period"] = args.keyframe_period
    config = registry.configure(entry, tiny=args.tiny, **overrides)
    base_iterations = 0 if args.base_checkpoint else args.base_iterations
    try:
        settings = trainer.DeltaTrainConfig(
            period=config.keyframe_period, iterations=args.iterations,
            base_iterations=base_iterations, batch_size=args.batch_size, lr=args.lr,
            alpha=args.alpha, seed=args.seed)
    except ValueError as err:
        raise UsageError(str(err)) from None
    torch.set_num_threads(args.num_threads)
    torch.manual_seed(args.seed)
    model = delta_distill.build(config)
    if args.base_checkpoint:
        load_checkpoint(model.base, args.base_checkpoint)
    started = time.perf_counter()
    data = trainer.load_clips(names, resolution, teacher, max_frames=args.max_frames)
    with tqdm(total=base_iterations + args.iterations, desc="delta train", unit="step",
              leave=False) as bar:
        def progress(phase: str, done: int, total: int, loss: float) -> None:
            bar.update(1)
            bar.set_postfix(phase=phase, loss=f"{loss:.3f}", refresh=False)

        base_losses = trainer.train_base(model, data, settings, progress)
        trainer.start_students_from_hold(model)
        history = trainer.train_students(model, data, settings, progress)
    args.out.mkdir(parents=True, exist_ok=True)
    partial = args.out / (CHECKPOINT + ".part")
    torch.save(model.state_dict(), partial)
    partial.replace(args.out / CHECKPOINT)
    record = {
        "model": MODEL, "config": asdict(config), "resolution": list(resolution),
        "settings": asdict(settings), "teacher": args.teacher,
        "base_checkpoint": str(args.base_checkpoint) if args.base_checkpoint else None,
        "clips": {n: sha256_file(clips.clip_path(n)) for n in names},
        "max_frames": args.max_frames, "frames": sum(len(c.frames) for c in data),
        "base_loss_first_last": base_losses[:1] + base_losses[-1:],
        "students_first_last": history[:1] + history[-1:],
        "seconds": round(time.perf_counter() - started, 1),
        "export": export_command(args, config, resolution),
    }
    atomic_write_text(args.out / RECORD, json.dumps(record, indent=1) + "\n")
    if args.json:
        print(json.dumps(record, indent=1))
    else:
        last = history[-1] if history else {}
        print(f"trained {MODEL} T={config.keyframe_period} in {record['seconds']} s: "
              f"{args.out / CHECKPOINT} (last step {last}); export with:\n  {record['export']}")
    return 0


def export_command(args: argparse.Namespace, config, resolution: tuple[int, int]) -> str:
    """The `mobdistill export` call that builds the trained configuration."""
    tiny = " --tiny" if args.tiny else ""
    return (f"mobdistill export --model {MODEL}{tiny} --resolution {resolution[0]}x{resolution[1]}"
            f" --num-classes {config.num_classes} --keyframe-period {config.keyframe_period}"
            f" --checkpoint {args.out / CHECKPOINT}")
