"""Just-In-Time online distillation (JITNet Alg. 1, specs §2) as the AMS paper ran it (§4.1).

The teacher labels frames t ≡ 0 (mod δ), t counting real frames. On such a frame the student is
trained up to u_max times while its mIoU against the teacher is below the threshold; then δ
doubles (≤ δ_max) if the final mIoU beats the threshold, else halves (≥ δ_min). Other frames run
the student only. SGD, momentum 0.9, lr 0.01. As in the AMS paper's comparison, each training
frame is one gradient-guided phase (`selection.CoordinateDescent`, γ = 5 % of the coordinates,
momentum kept for all), so every update is a sparse cumulative packet like AMS's; the difference
is how often JIT sends one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from mobdistill.server.rates import miou
from mobdistill.server.selection import CoordinateDescent, MomentumConfig
from mobdistill.server.session import SparseDelta, changed_coordinates
from mobdistill.server.teachers import Teacher

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JitConfig:
    threshold: float = 0.8  # the only user knob: 0.7 / 0.8 / 0.9
    u_max: int = 8
    delta_min: int = 8
    delta_max: int = 64
    lr: float = 0.01
    momentum: float = 0.9
    gamma: float = 0.05  # fraction of coordinates one training frame may change
    box_weight: float = 1.0  # JITNet §3.2: 5, the pixel loss inside the teacher's boxes
    box_dilation: float = 0.15  # each box's width and height grow by this fraction
    seed: int = 0


@dataclass(frozen=True)
class JitFrameResult:
    index: int
    labels: np.ndarray  # the student's prediction [H, W] (after any update on this frame)
    teacher_ran: bool
    updates: int
    miou_vs_teacher: float | None
    stride: int  # δ after this frame
    delta: SparseDelta = field(repr=False, default_factory=dict)  # what changed, if it trained


class JitDistiller:
    """Feeds frames one at a time; keeps δ and the optimizer state between frames. Trains the
    named ``trainable`` parameters (default: all of them)."""

    def __init__(self, student: torch.nn.Module, teacher: Teacher,
                 config: JitConfig = JitConfig(), *,
                 trainable: list[str] | None = None) -> None:
        self.student, self.teacher, self.config = student, teacher, config
        self.params = dict(student.named_parameters())
        self.names = list(trainable) if trainable is not None else list(self.params)
        self.optimizer = CoordinateDescent(
            [self.params[n] for n in self.names], gamma=config.gamma, variant="paper",
            rule=MomentumConfig(lr=config.lr, momentum=config.momentum),
            generator=torch.Generator().manual_seed(config.seed))
        self.stride = config.delta_min
        self.index = 0
        self.teacher_frames = 0

    @property
    def next_teacher_frame(self) -> int:
        """The first frame ≥ the current one with t ≡ 0 (mod δ)."""
        return -(-self.index // self.stride) * self.stride

    def _predict(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        logits = self.student(x)
        if logits.shape[-2:] != size:
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits

    def step(self, frame: np.ndarray) -> JitFrameResult:
        x = torch.from_numpy(np.array(frame)).permute(2, 0, 1).float()[None]  # a writable copy
        size = tuple(frame.shape[:2])
        index, self.index = self.index, self.index + 1
        if index % self.stride:
            with torch.no_grad():
                labels = self._predict(x, size).argmax(1)[0].numpy()
            return JitFrameResult(index, labels, False, 0, None, self.stride)
        self.teacher_frames += 1
        target = torch.from_numpy(self.teacher.labels(frame, size=size))[None]
        score, updates, labels, delta = self._train_on(x, target, size)
        c = self.config
        self.stride = (min(c.delta_max, 2 * self.stride) if score > c.threshold
                       else max(c.delta_min, self.stride // 2))
        return JitFrameResult(index, labels, True, updates, score, self.stride, delta)

    def _train_on(self, x: torch.Tensor, target: torch.Tensor, size: tuple[int, int],
                  ) -> tuple[float, int, np.ndarray, SparseDelta]:
        before = {n: self.params[n].detach().clone() for n in self.names}
        weights = None if self.config.box_weight == 1.0 else torch.from_numpy(
            box_weights(target[0].numpy(), self.config.box_weight, self.config.box_dilation))
        updates = 0
        while True:
            logits = self._predict(x, size)
            labels = logits.argmax(1)[0].detach().numpy()
            score = miou(labels, target[0].numpy(), self.teacher.num_classes)
            if score >= self.config.threshold or updates == self.config.u_max:
                break
            if updates == 0:
                self.optimizer.begin_phase()
            self.optimizer.zero_grad()
            _weighted_loss(logits, target, weights).backward()
            self.optimizer.step()
            updates += 1
        if not updates:
            return score, 0, labels, {}
        masks = self.optimizer.end_phase()
        if not all(torch.isfinite(self.params[n]).all() for n in self.names):
            self._restore(before)
            return score, 0, labels, {}
        return score, updates, labels, changed_coordinates(self.params, masks, self.names, before)

    @torch.no_grad()
    def _restore(self, before: dict[str, torch.Tensor]) -> None:
        log.warning("jit diverged at frame %d (SGD lr %.3g): weights restored, momentum reset",
                    self.index - 1, self.config.lr)
        for name, value in before.items():
            self.params[name].copy_(value)
        for m in self.optimizer.m:
            m.zero_()


def box_weights(labels: np.ndarray, inside: float = 5.0, dilation: float = 0.15) -> np.ndarray:
    """JITNet's pixel weights (§3.2): ``inside`` within each teacher box, 1 elsewhere. A box is
    the bounding box of one connected component of one foreground class (label > 0, 8-connected)
    in the teacher's label map, its width and height grown by ``dilation`` (half on each side,
    rounded outward to whole pixels), clipped to the frame. The selfie teacher gives no
    instances, so components stand in for Mask R-CNN's instance boxes."""
    from scipy import ndimage

    weights = np.ones(labels.shape, np.float32)
    h, w = labels.shape
    for cls in np.unique(labels[labels > 0]):
        components, _ = ndimage.label(labels == cls, structure=np.ones((3, 3), bool))
        for rows, cols in ndimage.find_objects(components):
            grow_y = dilation * (rows.stop - rows.start) / 2
            grow_x = dilation * (cols.stop - cols.start) / 2
            y0, y1 = max(0, int(rows.start - grow_y)), min(h, int(np.ceil(rows.stop + grow_y)))
            x0, x1 = max(0, int(cols.start - grow_x)), min(w, int(np.ceil(cols.stop + grow_x)))
            weights[y0:y1, x0:x1] = inside
    return weights


def _weighted_loss(logits: torch.Tensor, target: torch.Tensor,
                   weights: torch.Tensor | None) -> torch.Tensor:
    """Cross-entropy, each pixel's term times its weight, averaged over pixels."""
    if weights is None:
        return F.cross_entropy(logits, target)
    return (F.cross_entropy(logits, target, reduction="none") * weights).mean()
