"""MobileVOS's distillation training (seed 002, §3 and "Training details").

A teacher with unbounded memory (every past frame of the sequence in memory) is trained first with
the supervised loss alone, since no STCN weights exist here; the finite-memory student (first frame
+ the last Q−1) is then trained on sequences of 5 frames with the unified loss (`mobilevos_loss`)
or, as the baseline, the supervised loss alone. Data is a DAVIS-2017 folder (`mobdistill.davis`;
`vos_data` writes one from real clips with teacher masks). Memory values are encoded from the
predicted probabilities, as at inference, so gradients flow through the memory as in STCN.

BatchNorm stays frozen, as in MobileVOS, whose backbones are ImageNet-pretrained. Frozen BN with
the running statistics of a random initialisation (mean 0, variance 1) is an identity, and
PyTorch's default conv initialisation then shrinks the activations about tenfold per stride:
the stride-16 features come out near 1e-5, the keys are nearly constant, so the readout is a
uniform average, and the value barely depends on the mask. The memory then carries nothing, and
the model can only learn a per-frame saliency. So, before training, every BatchNorm of the key
and value encoders whose statistics were never set gets them from a batch of training frames and
their masks (`calibrate_batchnorm`). After that, BN stays frozen. Pretrained or loaded
statistics are left alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm import tqdm

from mobdistill.models.mobilevos import MobileVOS, run_sequence
from mobdistill.training.mobilevos_loss import (
    MobileVOSLoss,
    MobileVOSLossConfig,
    bootstrap_fraction,
    bootstrapped_poly_cross_entropy,
)

SEQUENCE_LENGTH = 5  # MobileVOS's change to STCN's 3-frame recipe


@dataclass(frozen=True)
class Clip:
    """One video's frames [T, 3, H, W] (float RGB in [0, 255]) and object-id masks [T, H, W]."""

    name: str
    frames: torch.Tensor
    masks: torch.Tensor


def load_clip(name: str, frame_paths: Sequence, mask_paths: Sequence,
              resolution: tuple[int, int]) -> Clip:
    """Frames and masks resized to (H, W) (masks by nearest neighbour). Every frame needs a mask:
    training reads the annotation of each frame it scores."""
    if len(mask_paths) < len(frame_paths):
        raise ValueError(f"{name}: {len(frame_paths)} frames but {len(mask_paths)} annotations; "
                         "training needs one per frame")
    h, w = resolution
    frames = [np.asarray(Image.open(p).convert("RGB").resize((w, h), Image.Resampling.BILINEAR))
              for p in frame_paths]
    masks = [np.asarray(Image.open(p).resize((w, h), Image.Resampling.NEAREST)) for p in mask_paths]
    return Clip(name, torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float(),
                torch.from_numpy(np.stack(masks[:len(frames)]).astype(np.int64)))


def sample_windows(clips: Sequence[Clip], max_skip: int, generator: torch.Generator,
                   invert_probability: float = 0.0,
                   ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless (frames [5, 3, H, W], masks [5, H, W]) windows: a random clip, ordered frames with
    random gaps of 1..max_skip (STCN samples with a maximum skip). With `invert_probability`,
    a window's object is its complement (the background becomes the object), so appearance
    alone cannot tell object from background: only the first frame's mask in memory can."""
    usable = [c for c in clips if len(c.frames) >= SEQUENCE_LENGTH]
    if not usable:
        raise ValueError(f"no clip has {SEQUENCE_LENGTH} frames")
    while True:
        clip = usable[int(torch.randint(len(usable), (1,), generator=generator))]
        gaps = torch.randint(1, max_skip + 1, (SEQUENCE_LENGTH - 1,), generator=generator)
        span = int(gaps.sum())
        while span >= len(clip.frames):  # shrink the gaps on short clips
            gaps = torch.clamp(gaps - 1, min=1)
            span = int(gaps.sum())
        start = int(torch.randint(len(clip.frames) - span, (1,), generator=generator))
        index = torch.cat([torch.tensor([start]), start + torch.cumsum(gaps, 0)])
        masks = (clip.masks[index] > 0).long()  # one object
        if invert_probability > 0:  # no draw when off: the window stream stays as it was
            if float(torch.rand((), generator=generator)) < invert_probability:
                masks = 1 - masks
        yield clip.frames[index], masks


class _Memory:
    """Memory of one sequence: the first frame always, then the last `capacity − 1` frames
    (None: unbounded, the teacher's)."""

    def __init__(self, first: dict[str, torch.Tensor], capacity: int | None) -> None:
        self.first, self.capacity = first, capacity
        self.recent: list[dict[str, torch.Tensor]] = []

    def push(self, entry: dict[str, torch.Tensor]) -> None:
        self.recent.append(entry)
        if self.capacity is not None:
            self.recent = self.recent[max(0, len(self.recent) - (self.capacity - 1)):]

    def stacked(self) -> tuple[torch.Tensor, torch.Tensor]:
        entries = [self.first, *self.recent]
        return (torch.cat([e["key"] for e in entries]), torch.cat([e["value"] for e in entries]))


def _run_window(model: MobileVOS, frames: torch.Tensor, masks: torch.Tensor,
                capacity: int | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(logits [1, 2, H, W], representation [1, d, H/4, W/4]) for frames 1..4 of a window."""
    first_mask = masks[0:1, None].float()
    memory = _Memory(model.init(frames[0:1], first_mask), capacity)
    outputs = []
    for t in range(1, len(frames)):
        out, features = model.step_with_features(frames[t:t + 1], *memory.stacked())
        memory.push({"key": out["key"], "value": out["value"]})
        outputs.append((out["logits"], features))
    return outputs


def _unset(layer: nn.BatchNorm2d) -> bool:
    """True for a BatchNorm whose running statistics are still those of its construction."""
    assert layer.running_mean is not None and layer.running_var is not None
    return (layer.num_batches_tracked is not None and int(layer.num_batches_tracked) == 0
            and not layer.running_mean.any() and bool((layer.running_var == 1).all()))


@torch.no_grad()
def calibrate_batchnorm(model: MobileVOS, clips: Sequence[Clip], generator: torch.Generator,
                        frames: int = 16, min_var: float = 1e-4) -> int:
    """Sets the running statistics of the encoders' never-set BatchNorms from training data.

    One forward pass of `model.init` on a batch of `frames` random training frames with their
    masks. A pre-hook on each BN sets that BN's statistics from its own input, before the BN
    applies them, so each layer sees the already-calibrated layers above it (as in a train-mode
    pass with batch statistics). Variances are floored at `min_var`. Layers whose statistics
    were already set (pretrained, or a loaded checkpoint) are left alone.

    Returns:
        The number of BatchNorm layers calibrated.
    """
    layers = [m for encoder in (model.key_encoder, model.value_encoder)
              for m in encoder.modules() if isinstance(m, nn.BatchNorm2d) and _unset(m)]
    if not layers:
        return 0
    pool = [(c, t) for c in clips for t in range(len(c.frames))]
    pick = torch.randperm(len(pool), generator=generator)[:frames].tolist()
    batch = torch.stack([pool[i][0].frames[pool[i][1]] for i in pick])
    masks = torch.stack([pool[i][0].masks[pool[i][1]] for i in pick]).gt(0).float()[:, None]

    def set_statistics(layer: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        assert isinstance(layer, nn.BatchNorm2d)
        assert layer.running_mean is not None and layer.running_var is not None
        assert layer.num_batches_tracked is not None
        x = inputs[0]
        layer.running_mean.copy_(x.mean((0, 2, 3)))
        layer.running_var.copy_(x.var((0, 2, 3)).clamp_min(min_var))
        layer.num_batches_tracked.fill_(1)

    hooks = [layer.register_forward_pre_hook(set_statistics) for layer in layers]
    was_training = model.training
    try:
        model.eval()
        model.init(batch, masks)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return len(layers)


@dataclass(frozen=True)
class TrainConfig:
    iterations: int
    lr: float = 1e-5  # the paper's Adam learning rate
    weight_decay: float = 1e-7
    max_skip: int = 5
    seed: int = 0
    loss: MobileVOSLossConfig = field(default_factory=MobileVOSLossConfig)
    distill: bool = True  # False: the supervised loss alone (the teacher, and the baseline)
    student_memory: int | None = 2  # None: unbounded (the teacher)
    calibrate_bn: bool = True  # set never-set encoder BN statistics from data first
    invert_probability: float = 0.0  # share of windows whose object is the complement


@dataclass
class TrainResult:
    losses: list[float]
    terms: list[dict[str, float]]


def train(model: MobileVOS, clips: Sequence[Clip], config: TrainConfig,
          teacher: MobileVOS | None = None, progress: bool = True) -> TrainResult:
    """Train `model` in place; with `distill`, against the (frozen) `teacher`."""
    if config.distill and teacher is None:
        raise ValueError("distillation needs a teacher (train one with distill=False first)")
    # windows and the loss's pixel sampling draw from separate streams, so runs of one seed see
    # the same windows whichever loss they train with (a paired comparison)
    window_generator = torch.Generator().manual_seed(config.seed)
    pixel_generator = torch.Generator().manual_seed(config.seed + 1)
    if config.calibrate_bn:
        calibrate_batchnorm(model, clips, torch.Generator().manual_seed(config.seed + 2))
    torch.manual_seed(config.seed)
    loss_fn = None
    if config.distill and teacher is not None:
        loss_fn = MobileVOSLoss(model.config.decoder_dims[2], teacher.config.decoder_dims[2],
                                config.loss)
        teacher.eval()
    parameters = list(model.parameters()) + (list(loss_fn.parameters()) if loss_fn else [])
    optimizer = torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)
    windows = sample_windows(clips, config.max_skip, window_generator, config.invert_probability)
    model.train()
    result = TrainResult([], [])
    for iteration in tqdm(range(config.iterations), desc="train mobilevos", disable=not progress):
        frames, masks = next(windows)
        student_out = _run_window(model, frames, masks, config.student_memory)
        teacher_out = None
        if loss_fn is not None and teacher is not None:
            with torch.no_grad():
                teacher_out = _run_window(teacher, frames, masks, None)
        total, terms = _window_loss(student_out, teacher_out, masks, loss_fn, iteration, config,
                                    pixel_generator)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        result.losses.append(float(total.detach()))
        result.terms.append(terms)
    model.eval()
    return result


def _window_loss(student_out: list[tuple[torch.Tensor, torch.Tensor]],
                 teacher_out: list[tuple[torch.Tensor, torch.Tensor]] | None,
                 masks: torch.Tensor, loss_fn: MobileVOSLoss | None, iteration: int,
                 config: TrainConfig, generator: torch.Generator,
                 ) -> tuple[torch.Tensor, dict[str, float]]:
    """The mean over the window's scored frames of the unified (or supervised) loss."""
    c = config.loss
    total = torch.zeros(())
    sums = {"cross_entropy": 0.0, "logit": 0.0, "representation": 0.0}
    for t, (logits, features) in enumerate(student_out, start=1):
        target = masks[t:t + 1]
        if loss_fn is not None and teacher_out is not None:
            teacher_logits, teacher_features = teacher_out[t - 1]
            terms = loss_fn(logits, features, teacher_logits, teacher_features, target,
                            iteration, generator)
            total = total + terms.total
            sums["cross_entropy"] += terms.cross_entropy
            sums["logit"] += terms.logit
            sums["representation"] += terms.representation
        else:
            fraction = bootstrap_fraction(iteration, c.bootstrap_start, c.bootstrap_end,
                                          c.bootstrap_top_p)
            ce = bootstrapped_poly_cross_entropy(logits, target, fraction=fraction,
                                                 epsilon=c.epsilon)
            total = total + ce
            sums["cross_entropy"] += float(ce.detach())
    n = len(student_out)
    return total / n, {k: v / n for k, v in sums.items()}


@torch.no_grad()
def predict_clip(model: MobileVOS, clip: Clip, memory: int) -> list[np.ndarray]:
    """Object-id masks of every frame in PyTorch (frame 0: the given mask) with the engine's
    protocol: `run_sequence`'s MemoryQueue of length `memory`, which repeats the first frame
    until the FIFO fills (the trainer's unpadded memory differs for memory > 2)."""
    model.eval()
    logits = run_sequence(model, list(clip.frames[:, None]), clip.masks[0:1, None].gt(0).float(),
                          memory)
    first = clip.masks[0].gt(0).numpy().astype(np.uint8)
    return [first] + [out.argmax(1)[0].numpy().astype(np.uint8) for out in logits]
