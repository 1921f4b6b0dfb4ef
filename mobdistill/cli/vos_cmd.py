"""`mobdistill vos data|train|evaluate`: MobileVOS's distillation training (seed 002) and its
J&F evaluation through the engine, on DAVIS-2017 folders (docs/training.md).

  vos data      real clips -> a DAVIS folder annotated with the teacher's masks
  vos train     an unbounded-memory teacher, then the finite-memory student (unified loss or
                cross-entropy); writes student.pt, which `mobdistill export --checkpoint` takes
  vos evaluate  J, F and J&F of an exported MobileVOS on a DAVIS split, through the engine
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, replace
from pathlib import Path

from mobdistill.errors import UsageError


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not HxW (e.g. 128x128)") from None
    return h, w


def add_parser(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="vos_command", metavar="ACTION", required=True)
    data = sub.add_parser("data", help="a DAVIS-layout folder from real clips + teacher masks")
    data.add_argument("--out", type=Path, required=True, help="the DAVIS root to write")
    data.add_argument("--clip", action="append", required=True,
                      help="a clip name (mobdistill.clips) or video file (repeatable)")
    data.add_argument("--split", default="train", help="ImageSets/2017/<split>.txt")
    data.add_argument("--size", type=_size, default=(240, 432), help="HxW of the frames")
    data.add_argument("--frames", type=int, default=60, help="frames per clip")
    data.add_argument("--teacher", default="selfie", help="teacher (server.teachers spec)")
    data.set_defaults(func=run_data)

    train = sub.add_parser("train", help="train the teacher, then the student (writes .pt)")
    train.add_argument("--davis", type=Path, required=True, help="DAVIS root with a train split")
    train.add_argument("--split", default="train")
    train.add_argument("--out", type=Path, required=True, help="folder for the checkpoints")
    train.add_argument("--size", type=_size, default=(240, 432), help="training HxW")
    train.add_argument("--loss", choices=("unified", "ce"), default="unified",
                       help="unified: CE + logit + representation distillation; ce: the baseline")
    train.add_argument("--omega", type=float, default=0.95, help="ω (1: distil, 0: contrastive)")
    train.add_argument("--iterations", type=int, default=2000, help="student iterations")
    train.add_argument("--teacher-iterations", type=int, default=2000)
    train.add_argument("--teacher-checkpoint", type=Path, default=None,
                       help="reuse a trained teacher instead of training one")
    train.add_argument("--lr", type=float, default=1e-5, help="Adam learning rate (paper 1e-5)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--invert-probability", type=float, default=0.0,
                       help="share of windows whose object is the mask's complement, so only "
                            "the memory tells object from background (docs/training.md)")
    train.add_argument("--tiny", action="store_true",
                       help="the tiny student config (matches `mobdistill export --tiny`)")
    train.set_defaults(func=run_train)

    evaluate = sub.add_parser("evaluate", help="J&F of an exported MobileVOS via the engine")
    evaluate.add_argument("--artifact", type=Path, required=True, help="the .manifest.json")
    evaluate.add_argument("--davis", type=Path, required=True, help="DAVIS root")
    evaluate.add_argument("--split", default="val")
    evaluate.add_argument("--num_threads", type=int, default=None, help="engine threads")
    evaluate.add_argument("--json", action="store_true", help="print the result as JSON")
    evaluate.set_defaults(func=run_evaluate)


def run_data(args: argparse.Namespace) -> int:
    from mobdistill.server.teachers import load_teacher
    from mobdistill.training.vos_data import write_teacher_sequences

    sequences = write_teacher_sequences(args.out, args.clip, load_teacher(args.teacher),
                                        size=args.size, frames=args.frames, split=args.split)
    for s in sequences:
        print(f"{s.name}: {len(s.frames)} frames -> {args.out}")
    return 0


def run_train(args: argparse.Namespace) -> int:
    if not 0.0 <= args.invert_probability <= 1.0:
        raise UsageError(f"--invert-probability must lie in [0, 1], not {args.invert_probability}")
    import torch

    from mobdistill.models import mobilevos
    from mobdistill.training import mobilevos_trainer as trainer
    from mobdistill.training.mobilevos_loss import MobileVOSLossConfig
    from mobdistill.training.vos_data import load_clips

    clips = load_clips(args.davis, args.split, args.size)
    student_config = mobilevos.tiny_config() if args.tiny else mobilevos.paper_config()
    # the teacher: the same design twice as wide in its decoder, every past frame in memory
    d16, d8, d4 = student_config.decoder_dims
    teacher = mobilevos.build(replace(student_config, decoder_dims=(2 * d16, 2 * d8, 2 * d4)))
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict = {"settings": {k: str(v) for k, v in vars(args).items() if k != "func"}}
    if args.teacher_checkpoint:
        teacher.load_state_dict(torch.load(args.teacher_checkpoint, weights_only=True))
    else:
        taught = trainer.train(teacher, clips, trainer.TrainConfig(
            iterations=args.teacher_iterations, lr=args.lr, seed=args.seed, distill=False,
            student_memory=None, invert_probability=args.invert_probability))
        torch.save(teacher.state_dict(), args.out / "teacher.pt")
        report["teacher_losses"] = taught.losses
    torch.manual_seed(args.seed)
    student = mobilevos.build(student_config)
    config = trainer.TrainConfig(iterations=args.iterations, lr=args.lr, seed=args.seed,
                                 distill=args.loss == "unified",
                                 loss=MobileVOSLossConfig(omega=args.omega),
                                 student_memory=student_config.queue_length,
                                 invert_probability=args.invert_probability)
    result = trainer.train(student, clips, config,
                           teacher=teacher if config.distill else None)
    partial = args.out / "student.pt.partial"
    torch.save(student.state_dict(), partial)
    partial.replace(args.out / "student.pt")
    report["student"] = asdict(result)
    (args.out / "train.json").write_text(json.dumps(report, indent=1))
    print(f"student: {args.out / 'student.pt'} (export: mobdistill export --model mobilevos "
          f"--checkpoint {args.out / 'student.pt'}{' --tiny' if args.tiny else ''})")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from mobdistill.experiments.vos_eval import evaluate
    from mobdistill.runtime.device import LocalDevice
    from mobdistill.runtime.engine import EngineOptions

    if not args.artifact.is_file():
        raise UsageError(f"{args.artifact} not found: give the export's .manifest.json")
    options = EngineOptions()
    if args.num_threads is not None:
        options = replace(options, num_threads=args.num_threads)
    with LocalDevice() as device:
        result = evaluate(device, args.artifact, args.davis, args.split, options)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    for s in result["sequences"]:
        for o in s["objects"]:
            print(f"{s['sequence']:<20} object {o['object_id']}: J {o['j_mean']:.3f} "
                  f"F {o['f_mean']:.3f}")
    overall = result["overall"]
    print(f"J&F {overall['J&F']:.3f}  J {overall['J']:.3f}  F {overall['F']:.3f} "
          f"({overall['objects']} objects)")
    return 0
