"""Just-In-Time online distillation (JITNet, specs §2, paper Alg. 1).

The teacher labels frames t ≡ 0 (mod δ). On such a frame the student is trained up to u_max
times while its mIoU against the teacher is below the threshold; then δ doubles (≤ δ_max) if the
final mIoU beats the threshold, else halves (≥ δ_min). Other frames run the student only.
SGD, momentum 0.9, lr 0.01, all layers updated. Unlike AMS, every step changes the full model,
which is why JIT needs Mbit/s of downlink when the student runs on a phone (specs §3, Table 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from mobdistill.server.rates import miou
from mobdistill.server.teachers import Teacher


@dataclass(frozen=True)
class JitConfig:
    threshold: float = 0.8  # the only user knob: 0.7 / 0.8 / 0.9
    u_max: int = 8
    delta_min: int = 8
    delta_max: int = 64
    lr: float = 0.01
    momentum: float = 0.9


@dataclass(frozen=True)
class JitFrameResult:
    index: int
    labels: np.ndarray  # the student's prediction [H, W] (after any update on this frame)
    teacher_ran: bool
    updates: int
    miou_vs_teacher: float | None
    stride: int  # δ after this frame


class JitDistiller:
    """Feeds frames one at a time; keeps δ and the SGD state between frames."""

    def __init__(self, student: torch.nn.Module, teacher: Teacher,
                 config: JitConfig = JitConfig()) -> None:
        self.student, self.teacher, self.config = student, teacher, config
        self.optimizer = torch.optim.SGD(student.parameters(), lr=config.lr,
                                         momentum=config.momentum)
        self.stride = config.delta_min
        self.index = 0
        self.next_teacher_frame = 0
        self.teacher_frames = 0

    def _predict(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        logits = self.student(x)
        if logits.shape[-2:] != size:
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits

    def step(self, frame: np.ndarray) -> JitFrameResult:
        x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1).float()[None]
        size = tuple(frame.shape[:2])
        index, self.index = self.index, self.index + 1
        if index < self.next_teacher_frame:
            with torch.no_grad():
                labels = self._predict(x, size).argmax(1)[0].numpy()
            return JitFrameResult(index, labels, False, 0, None, self.stride)
        self.teacher_frames += 1
        target = torch.from_numpy(self.teacher.labels(frame, size=size))[None]
        score, updates, labels = self._train_on(x, target, size)
        c = self.config
        self.stride = (min(c.delta_max, 2 * self.stride) if score > c.threshold
                       else max(c.delta_min, self.stride // 2))
        self.next_teacher_frame = index + self.stride
        return JitFrameResult(index, labels, True, updates, score, self.stride)

    def _train_on(self, x: torch.Tensor, target: torch.Tensor,
                  size: tuple[int, int]) -> tuple[float, int, np.ndarray]:
        n_classes = self.teacher.num_classes
        updates = 0
        while True:
            logits = self._predict(x, size)
            labels = logits.argmax(1)[0].detach().numpy()
            score = miou(labels, target[0].numpy(), n_classes)
            if score >= self.config.threshold or updates == self.config.u_max:
                return score, updates, labels
            self.optimizer.zero_grad()
            F.cross_entropy(logits, target).backward()
            self.optimizer.step()
            updates += 1
