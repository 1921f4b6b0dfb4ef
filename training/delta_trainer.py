"""Training a delta-distilled DeepLab on real clips labelled by a teacher (seed 003, Algorithm 1).

Two phases, both on consecutive frames of the `Role.PRETRAINING` clips with the teacher's labels:
1. the original network (`model.base`) learns the task from the teacher (Adam, cross-entropy,
   BatchNorm in train mode, horizontal flips), unless a trained base checkpoint is given: there
   are no pretrained DeepLab weights here (specs §6);
2. with the base frozen (its weights and BatchNorm statistics: a keyframe stays the original
   network), the students learn from windows of T consecutive frames, a keyframe and T-1 delta
   frames, with `delta_loss`: the per-unit distillation loss on every consecutive pair of the
   window plus the task loss of the scheduled model's delta frames.
The checkpoint is the whole model's state dict (`mobdistill export --checkpoint` takes it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mobdistill.models.delta_distill import DeltaDeepLab, DeltaStudent, run_schedule
from mobdistill.server.rates import foreground_miou, miou
from mobdistill.server.teachers import Teacher
from mobdistill.training.delta_loss import delta_distillation_loss, task_loss
from mobdistill.video import iter_frames

Progress = Callable[[str, int, int, float], None]  # (phase, step done, steps, loss)


@dataclass(frozen=True)
class LabelledClip:
    """Consecutive frames [N, 3, H, W] (float RGB 0..255) and the teacher's labels [N, H, W]."""

    name: str
    frames: Tensor
    labels: Tensor


@dataclass(frozen=True)
class DeltaTrainConfig:
    """Phase settings. `period` is T: windows hold a keyframe and T-1 delta frames."""

    period: int = 3
    iterations: int = 300
    base_iterations: int = 300
    batch_size: int = 4
    lr: float = 1e-3
    base_lr: float = 1e-3
    alpha: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.period < 2:
            raise ValueError("delta training needs a keyframe period T >= 2 (T = 1 has no "
                             "delta frames)")
        if self.iterations < 0 or self.base_iterations < 0 or self.batch_size < 1:
            raise ValueError("iterations must be >= 0 and the batch size >= 1")
        if self.alpha < 0 or self.lr <= 0 or self.base_lr <= 0:
            raise ValueError("alpha must be >= 0 and learning rates positive")


def load_clips(names: Sequence[str], size: tuple[int, int], teacher: Teacher, *,
               frame_step: int = 1, max_frames: int | None = None) -> list[LabelledClip]:
    """Each clip's frames (every `frame_step`-th, at most `max_frames`) and teacher labels."""
    clips = []
    for name in names:
        picked = list(iter_frames(name, size=size, step=frame_step, count=max_frames))
        if len(picked) < 2:
            raise ValueError(f"{name}: fewer than 2 frames")
        frames = torch.from_numpy(np.stack(picked)).permute(0, 3, 1, 2).float()
        labels = torch.from_numpy(np.stack([teacher.labels(f) for f in picked])).long()
        clips.append(LabelledClip(name, frames, labels))
    return clips


def sample_windows(clips: Sequence[LabelledClip], length: int, batch: int,
                   generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """`batch` windows of `length` consecutive frames from random clips and starts, each flipped
    horizontally at random: (frames [L, B, 3, H, W], labels [L, B, H, W])."""
    usable = [c for c in clips if len(c.frames) >= length]
    if not usable:
        raise ValueError(f"no clip has {length} frames")
    frames, labels = [], []
    for _ in range(batch):
        clip = usable[int(torch.randint(len(usable), (1,), generator=generator))]
        start = int(torch.randint(len(clip.frames) - length + 1, (1,), generator=generator))
        x, y = clip.frames[start:start + length], clip.labels[start:start + length]
        if torch.rand((), generator=generator) < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        frames.append(x)
        labels.append(y)
    return torch.stack(frames, 1), torch.stack(labels, 1)


def distillation_terms(model: DeltaDeepLab, frames: Tensor) -> list[Tensor]:
    """L_dd of every unit over the consecutive pairs of windows [L, B, 3, H, W] (L >= 2)."""
    length, batch = frames.shape[:2]
    with torch.no_grad():  # f_theta's inputs and outputs: the original network, frozen
        maps = [m.reshape(length, batch, *m.shape[1:])
                for m in model.features(frames.flatten(0, 1))]
    terms = []
    for k, student in enumerate(model.students):
        x, z = maps[k], maps[k + 1]
        true_delta = (z[1:] - z[:-1]).flatten(0, 1)
        estimate = student(x[1:].flatten(0, 1), x[:-1].flatten(0, 1))
        terms.append(delta_distillation_loss(true_delta, estimate))
    return terms


def train_base(model: DeltaDeepLab, clips: Sequence[LabelledClip], config: DeltaTrainConfig,
               progress: Progress | None = None) -> list[float]:
    """Phase 1: the original network learns the teacher's labels on single frames."""
    generator = torch.Generator().manual_seed(config.seed)
    base = model.base
    optimizer = torch.optim.Adam(base.parameters(), lr=config.base_lr)
    losses: list[float] = []
    base.train()
    for step in range(config.base_iterations):
        frames, labels = sample_windows(clips, 1, config.batch_size * 2, generator)
        loss = F.cross_entropy(base(frames[0]), labels[0])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(round(loss.item(), 5))
        if progress:
            progress("base", step + 1, config.base_iterations, losses[-1])
    base.eval()
    return losses


def start_students_from_hold(model: DeltaDeepLab) -> None:
    """Zero each student's last conv: dz~ = 0, so training starts from reusing the keyframe's
    features on delta frames (the hold baseline) instead of adding random changes."""
    for module in model.students.modules():
        if isinstance(module, DeltaStudent):
            torch.nn.init.zeros_(module.expand.weight)


def train_students(model: DeltaDeepLab, clips: Sequence[LabelledClip], config: DeltaTrainConfig,
                   progress: Progress | None = None) -> list[dict[str, float]]:
    """Phase 2 (Algorithm 1 with the task loss): the students learn, the base stays frozen.

    Returns one record per step: the total, the task loss and each unit's L_dd.
    """
    generator = torch.Generator().manual_seed(config.seed + 1)
    model.eval()  # the base's BatchNorm keeps its statistics; the students have none
    model.base.requires_grad_(False)
    optimizer = torch.optim.Adam(model.students.parameters(), lr=config.lr)
    history: list[dict[str, float]] = []
    try:
        for step in range(config.iterations):
            frames, labels = sample_windows(clips, config.period, config.batch_size, generator)
            terms = distillation_terms(model, frames)
            outputs = run_schedule(model, list(frames), config.period)
            task = task_loss([o["logits"] for o in outputs[1:]], list(labels[1:]))
            total = task + config.alpha * torch.stack(terms).sum()
            optimizer.zero_grad()
            total.backward()
            optimizer.step()
            history.append({"total": round(total.item(), 5), "task": round(task.item(), 5),
                            **{f"dd_{name}": round(t.item(), 5)
                               for name, t in zip(model.state[1:], terms)}})
            if progress:
                progress("students", step + 1, config.iterations, history[-1]["total"])
    finally:
        model.base.requires_grad_(True)
    return history


@torch.no_grad()
def schedule_scores(model: DeltaDeepLab, clip: LabelledClip, period: int, num_classes: int,
                    ) -> dict[str, list]:
    """Per-frame accuracy of the schedule against the teacher on a clip: mIoU with background
    and foreground mIoU (None where neither map has foreground), and which frames were keyframes.
    period 1 is the original network on every frame."""
    outputs = run_schedule(model, [f[None] for f in clip.frames], period)
    predicted = [o["logits"].argmax(1)[0].numpy() for o in outputs]
    target = clip.labels.numpy()
    return {"miou": [miou(p, t, num_classes) for p, t in zip(predicted, target)],
            "miou_foreground": [foreground_miou(p, t, num_classes)
                                for p, t in zip(predicted, target)],
            "keyframe": [i % period == 0 for i in range(len(predicted))]}
