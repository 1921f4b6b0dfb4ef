"""`mobdistill pretrain`: distill the teacher into the student on the pretraining clips (the
"No Customization" starting point), cached; report its accuracy on held-out evaluation clips."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="deeplab", choices=("deeplab", "jitnet"),
                        help="student: deeplab (AMS's) or jitnet (JITNet's, m=0.5)")
    parser.add_argument("--teacher", default="selfie",
                        help="built-in teacher (selfie), a .tflite or .onnx file, or "
                             "file.py:factory")
    parser.add_argument("--resolution", help="HEIGHTxWIDTH, the streaming resolution (96x192)")
    parser.add_argument("--tiny", action="store_true",
                        help="ASPP width 16 / JITNet m=0.0625 (tests, smoke runs)")
    parser.add_argument("--iterations", type=int, help="Adam steps (1500)")
    parser.add_argument("--batch-size", type=int, help="frames per step (8)")
    parser.add_argument("--lr", type=float, help="Adam learning rate (1e-3)")
    parser.add_argument("--frame-step", type=int, help="train on every n-th frame (2)")
    parser.add_argument("--clips", help="pretraining clips, comma-separated (default: every "
                        "clip with the pretraining role, docs/clips.md)")
    parser.add_argument("--heldout", help="held-out clips, comma-separated (default: the "
                        "evaluation clips)")
    parser.add_argument("--heldout-step", type=int, help="score every n-th held-out frame (10)")
    parser.add_argument("--seed", type=int, help="init and sampling seed (0)")
    parser.add_argument("--num-threads", type=int, default=2, help="torch threads (2)")
    parser.add_argument("--cache", type=Path, help="cache folder (default "
                        "$MOBDISTILL_CACHE/pretrained)")
    parser.add_argument("--json", action="store_true", help="print pretrain.json to stdout")
    parser.set_defaults(func=run)


_MAP = {"iterations": "iterations", "batch_size": "batch_size", "lr": "lr",
        "frame_step": "frame_step", "heldout_step": "heldout_step", "seed": "seed"}


def config_from_args(args: argparse.Namespace):
    from mobdistill.experiments.pretrain import PretrainConfig
    from mobdistill.models.registry import parse_resolution

    kw = {dest: getattr(args, src) for src, dest in _MAP.items() if getattr(args, src) is not None}
    if args.clips:
        kw["clips"] = _names(args.clips)
    if args.heldout:
        kw["heldout_clips"] = _names(args.heldout)
    if args.resolution:
        kw["resolution"] = parse_resolution(args.resolution)
    else:
        kw["resolution"] = (96, 192)  # StreamConfig's default: the student `stream` runs
    if args.tiny:
        kw["aspp_channels" if args.model == "deeplab" else "width_multiplier"] = (
            16 if args.model == "deeplab" else 0.0625)
    return PretrainConfig(model=args.model, teacher=args.teacher, **kw)


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from mobdistill.experiments.pretrain import pretrain_student
    from mobdistill.experiments.student import teacher_tag
    from mobdistill.server.teachers import load_teacher

    config = config_from_args(args)
    torch.set_num_threads(args.num_threads)
    teacher = load_teacher(config.teacher)
    with tqdm(total=config.iterations, desc="pretrain", unit="step", leave=False) as bar:
        def progress(done: int, total: int, loss: float) -> None:
            bar.update(done - bar.n)
            bar.set_postfix(loss=f"{loss:.3f}", refresh=False)

        result = pretrain_student(config, teacher, teacher_tag(config.teacher),
                                  cache=args.cache, progress=progress)
    if args.json:
        print(json.dumps({"folder": str(result.folder), **result.record}, indent=1))
    else:
        held = result.heldout
        print(f"pretrained {config.model} {config.resolution[0]}x{config.resolution[1]} "
              f"in {result.folder}: held-out mIoU vs teacher {held['miou_with_background']} "
              f"with background, {held['miou_foreground']} foreground only "
              f"({', '.join(held['clips'])})")
    return 0


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())
