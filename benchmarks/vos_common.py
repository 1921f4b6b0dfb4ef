"""What the MobileVOS benchmarks (vos_loss.py, vos_queue.py) share: the made-here DAVIS folder,
the one teacher, the students (cached in a work folder, so a re-run reuses finished stages), their
exports, and J&F through the engine.

Data: real clips turned into the DAVIS-2017 layout with the selfie teacher's foreground as object
1 (`mobdistill vos data` does the same). The training sequences come from the clips whose role is
pretraining; the held-out sequences from clips of other scenes (mobdistill.clips keeps scenes
apart), so no scene is both trained and scored on.

Recipe for random-init backbones (no ImageNet, STCN or DAVIS weights here): the encoders' BN
statistics are set from training frames before training (`calibrate_batchnorm`), Adam at 1e-4
(at 1e-3 the memory path collapsed to a constant prediction), and a quarter of the training
windows take the complement of the mask as the object, so that only the first frame's mask in
memory tells object from background: with three training scenes, a model trained on the plain
masks learns each scene's foreground by appearance and ignores the memory (with half the
windows inverted, it learned nothing in 1,000 iterations).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats

from mobdistill import davis
from mobdistill.experiments.vos_eval import evaluate
from mobdistill.export.api import export_model
from mobdistill.models import mobilevos
from mobdistill.runtime.device import LocalDevice
from mobdistill.runtime.engine import EngineOptions
from mobdistill.training import mobilevos_trainer as trainer
from mobdistill.training.mobilevos_loss import MobileVOSLossConfig
from mobdistill.training.mobilevos_trainer import load_clip
from mobdistill.training.vos_data import load_clips, write_teacher_sequences

RESULTS = Path(__file__).parent / "results"
ENGINE_SCORING_HELP = ("always: export and score every model through the engine; cached: only the "
                       "exports --work already holds (PyTorch scores every model)")
TRAIN_CLIPS = ("Megamind.avi", "bigbuckbunny.mp4", "box.mp4")  # role: pretraining
HELD_OUT_CLIPS = ("carphone_pristine.mp4", "cup.mp4", "vtest.avi")  # evaluation, verification


@dataclass(frozen=True)
class VosSettings:
    size: tuple[int, int] = (64, 64)
    train_frames: int = 120
    held_out_frames: int = 40
    teacher_iterations: int = 500
    student_iterations: int = 300
    lr: float = 1e-4  # 1e-3 collapsed the memory path to a constant prediction
    omega: float = 0.95
    teacher_seed: int = 0
    num_threads: int = 1
    calibrate_bn: bool = True  # encoder BN statistics set from training frames before training
    # share of training windows whose object is the complement: appearance alone cannot
    # separate object from background, so the model must read the first frame's mask in memory
    invert_probability: float = 0.25

    def student_config(self, queue_length: int = 2) -> mobilevos.Config:
        return replace(mobilevos.tiny_config(), queue_length=queue_length)

    def teacher_config(self, queue_length: int) -> mobilevos.Config:
        d16, d8, d4 = self.student_config().decoder_dims
        return replace(self.student_config(), decoder_dims=(2 * d16, 2 * d8, 2 * d4),
                       queue_length=queue_length)

    def key(self) -> str:
        h, w = self.size
        return (f"{h}x{w}-f{self.train_frames}-{self.held_out_frames}-t{self.teacher_iterations}"
                f"-s{self.student_iterations}-lr{self.lr:g}-w{self.omega:g}"
                + ("-bncal" if self.calibrate_bn else "")
                + (f"-inv{self.invert_probability:g}" if self.invert_probability else ""))


def paired_difference(ours: list[float], base: list[float]) -> dict[str, Any]:
    """Mean of the per-seed differences with a 95% t interval (seeds are the pairs)."""
    diff = np.asarray(ours) - np.asarray(base)
    n = diff.size
    half = (float(stats.t.ppf(0.975, n - 1) * diff.std(ddof=1) / math.sqrt(n))
            if n > 1 else float("nan"))
    mean = float(diff.mean())
    return {"mean": mean, "ci95": [mean - half, mean + half], "per_seed": diff.tolist(), "n": n}


class VosWork:
    """Stages of the experiment under one work folder, each done once."""

    def __init__(self, work: Path, settings: VosSettings) -> None:
        self.settings = settings
        self.root = work / settings.key()
        self.root.mkdir(parents=True, exist_ok=True)
        torch.set_num_threads(settings.num_threads)

    @property
    def davis(self) -> Path:
        return self.root / "davis"

    def data(self) -> Path:
        done = self.davis / "made.json"
        if not done.is_file():
            from mobdistill.server.teachers import selfie_teacher

            s, teacher = self.settings, selfie_teacher()
            write_teacher_sequences(self.davis, TRAIN_CLIPS, teacher, size=s.size,
                                    frames=s.train_frames, split="train")
            write_teacher_sequences(self.davis, HELD_OUT_CLIPS, teacher, size=s.size,
                                    frames=s.held_out_frames, split="val")
            done.write_text(json.dumps({"train": TRAIN_CLIPS, "val": HELD_OUT_CLIPS}))
        return self.davis

    def _train(self, name: str, model: mobilevos.MobileVOS, config: trainer.TrainConfig,
               teacher: mobilevos.MobileVOS | None = None) -> Path:
        """Trains `model` unless `name`.pt exists; writes its losses and time beside it."""
        path = self.root / f"{name}.pt"
        if path.is_file():
            model.load_state_dict(torch.load(path, weights_only=True))
            return path
        clips = load_clips(self.data(), "train", self.settings.size)
        start = time.monotonic()
        result = trainer.train(model, clips, config, teacher=teacher)
        (self.root / f"{name}.json").write_text(json.dumps(
            {"seconds": time.monotonic() - start, "config": repr(config), **asdict(result)}))
        partial = path.with_suffix(".pt.partial")
        torch.save(model.state_dict(), partial)
        partial.replace(path)
        return path

    def teacher(self) -> tuple[mobilevos.MobileVOS, Path]:
        """The unbounded-memory teacher, trained with the supervised loss alone."""
        s = self.settings
        torch.manual_seed(s.teacher_seed)
        model = mobilevos.build(s.teacher_config(queue_length=2))
        path = self._train("teacher", model, trainer.TrainConfig(
            iterations=s.teacher_iterations, lr=s.lr, seed=s.teacher_seed, distill=False,
            student_memory=None, calibrate_bn=s.calibrate_bn,
            invert_probability=s.invert_probability))
        return model.eval(), path

    def student(self, seed: int, loss: str) -> Path:
        """A Q = 2 student of `seed` trained with `loss` ("unified" or "ce"); the seed fixes the
        initial weights and the training windows, so the two losses' runs are paired."""
        s = self.settings
        distill = loss == "unified"
        teacher = self.teacher()[0] if distill else None
        torch.manual_seed(seed)
        model = mobilevos.build(s.student_config())
        return self._train(f"student-{loss}-s{seed}", model, trainer.TrainConfig(
            iterations=s.student_iterations, lr=s.lr, seed=seed, distill=distill,
            loss=MobileVOSLossConfig(omega=s.omega), student_memory=2,
            calibrate_bn=s.calibrate_bn, invert_probability=s.invert_probability),
            teacher=teacher)

    def exported(self, name: str) -> bool:
        return any((self.root / "exports" / name).glob("*.manifest.json"))

    def export(self, checkpoint: Path, config: mobilevos.Config, name: str) -> Path:
        """The verified TFLite export of `checkpoint` (its manifest path)."""
        out = self.root / "exports" / name
        done = sorted(out.glob("*.manifest.json"))
        if done:
            return done[0]
        return export_model("mobilevos", out_dir=out, formats=("tflite",),
                            resolution=self.settings.size, config=config,
                            checkpoint=checkpoint).manifest_path

    def score_pytorch(self, checkpoint: Path, config: mobilevos.Config, name: str,
                      split: str = "val") -> dict[str, Any]:
        """J&F of the PyTorch model on `split` (cached as `name`): the engine's protocol (init on
        frame 0 with its annotation, a step per later frame, memory = first + last Q−1 in the
        engine's `MemoryQueue`, which repeats the first frame until the FIFO fills; the
        trainer's unpadded memory differs for Q > 2)."""
        cached = self.root / "pytorch-queue" / f"{name}-{split}.json"
        if cached.is_file():
            return dict(json.loads(cached.read_text()))
        model = mobilevos.build(config)
        model.load_state_dict(torch.load(checkpoint, weights_only=True))
        scores = []
        for sequence in davis.read_davis(self.data(), split):
            clip = load_clip(sequence.name, sequence.frames, sequence.annotations,
                             self.settings.size)
            predicted = trainer.predict_clip(model, clip, config.queue_length)
            truths = [sequence.mask(i) for i in range(len(sequence.frames))]
            scores.extend(davis.score_sequence(sequence.name, predicted, truths))
        result = {"overall": davis.summarise(scores), "objects": [asdict(s) for s in scores]}
        cached.parent.mkdir(exist_ok=True)
        cached.write_text(json.dumps(result))
        return result

    def reference_scores(self, split: str = "val") -> dict[str, dict[str, float]]:
        """J&F of two model-free predictors, the floor a trained model must clear: the first
        frame's annotation repeated on every frame, and every pixel foreground."""
        copy, everything = [], []
        for sequence in davis.read_davis(self.data(), split):
            truths = [sequence.mask(i) for i in range(len(sequence.frames))]
            copy.extend(davis.score_sequence(sequence.name, [truths[0]] * len(truths), truths))
            everything.extend(davis.score_sequence(
                sequence.name, [truths[0]] + [np.ones_like(t) for t in truths[1:]], truths))
        return {"first_frame_copied": davis.summarise(copy),
                "all_foreground": davis.summarise(everything)}

    def score(self, manifest: Path, split: str = "val") -> dict[str, Any]:
        """J&F of an export on `split` through the engine (cached beside the export)."""
        cached = manifest.parent / f"jf-{split}.json"
        if cached.is_file():
            return dict(json.loads(cached.read_text()))
        options = EngineOptions(num_threads=self.settings.num_threads)
        # a device folder per export: stages run in parallel processes
        with LocalDevice(self.root / "devices" / manifest.parent.name) as device:
            result = evaluate(device, manifest, self.data(), split, options)
        cached.write_text(json.dumps(result))
        return result


def add_vos_arguments(parser: argparse.ArgumentParser) -> None:
    """The options both VOS benchmarks share: seeds, budgets, work and results folders, scoring."""
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--student-iterations", type=int,
                        default=VosSettings().student_iterations)
    parser.add_argument("--teacher-iterations", type=int,
                        default=VosSettings().teacher_iterations)
    parser.add_argument("--lr", type=float, default=VosSettings().lr)
    parser.add_argument("--invert-probability", type=float,
                        default=VosSettings().invert_probability,
                        help="share of training windows whose object is the complement")
    parser.add_argument("--work", type=Path, default=Path("/tmp/mobdistill-bench/vos"))
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    parser.add_argument("--engine", choices=("always", "cached"), default="always",
                        help=ENGINE_SCORING_HELP)


def settings_from(args: argparse.Namespace) -> VosSettings:
    return replace(VosSettings(), student_iterations=args.student_iterations,
                   teacher_iterations=args.teacher_iterations, lr=args.lr,
                   invert_probability=args.invert_probability)
