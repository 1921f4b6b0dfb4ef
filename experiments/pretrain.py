"""The "No Customization" student: the teacher distilled into it on the pretraining clips.

There are no ImageNet MobileNetV2 weights here (specs §6), so the starting point is made: Adam
(lr 1e-3, batch ``batch_size``, BatchNorm in train mode, random horizontal flips) on every
``frame_step``-th frame of the `Role.PRETRAINING` clips at the streaming resolution, labelled by
the teacher, from a seeded random init. Its accuracy against the teacher is then measured on
held-out `Role.EVALUATION` frames (both mIoU definitions). The checkpoint and a ``pretrain.json``
(format version, settings, clip digests, losses, held-out accuracy) are cached under
``$MOBDISTILL_CACHE/pretrained/<key>``; the key holds the format version, so a changed recipe
never reuses an old checkpoint, and files appear only complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from mobdistill import clips
from mobdistill.errors import UsageError
from mobdistill.files import atomic_write_text, sha256_file
from mobdistill.server.rates import foreground_miou, miou
from mobdistill.server.teachers import Teacher

FORMAT_VERSION = 1  # bump whenever the recipe below changes what a checkpoint holds
# bigbuckbunny first: its first frames hold both classes (export checks use them)
PRETRAIN_CLIPS = ("bigbuckbunny.mp4", "box.mp4", "Megamind.avi", "Megamind_bugy.avi")
HELDOUT_CLIPS = tuple(c.name for c in clips.clips_with_role(clips.Role.EVALUATION))

Progress = Callable[[int, int, float], None]  # (step done, steps, loss)


@dataclass(frozen=True)
class PretrainConfig:
    model: str = "deeplab"
    resolution: tuple[int, int] = (64, 128)
    aspp_channels: int = 256  # DeepLab's ASPP width
    width_multiplier: float = 0.5  # JITNet's m (the paper's 0.5)
    teacher: str = "selfie"  # its tag (see `student.teacher_tag`) goes into the cache key
    clips: tuple[str, ...] = PRETRAIN_CLIPS
    frame_step: int = 2  # every n-th frame of each clip is labelled and trained on
    iterations: int = 1500
    batch_size: int = 8
    lr: float = 1e-3
    heldout_clips: tuple[str, ...] = HELDOUT_CLIPS
    heldout_step: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        wrong = [c for c in self.clips if clips.role_of(c) not in (clips.Role.PRETRAINING, None)]
        leaked = [c for c in self.heldout_clips if clips.role_of(c) is clips.Role.PRETRAINING]
        if wrong or leaked:
            raise UsageError(f"pretraining clips {wrong} are not pretraining clips, or held-out "
                             f"clips {leaked} are (docs/clips.md): a student must not be scored "
                             "on what it was trained on")
        if self.iterations < 1 or self.batch_size < 1 or self.frame_step < 1:
            raise UsageError("--iterations, --batch-size and --frame-step must be positive")

    def key(self, teacher_tag: str) -> str:
        """The cache folder's name: readable settings and a digest of all that shapes the
        weights. The held-out clips only score them, so they stay out: a server that does not
        know a device's clips must find the same starting student as the device."""
        h, w = self.resolution
        unused = set(MODEL_FIELDS) - set(model_fields(self))  # another model's width knobs
        shaping = {k: v for k, v in asdict(self).items()
                   if not k.startswith("heldout") and k not in unused}
        digest = hashlib.sha256(json.dumps([FORMAT_VERSION, shaping, teacher_tag],
                                           sort_keys=True).encode()).hexdigest()[:10]
        width = (f"a{self.aspp_channels}" if "aspp_channels" in model_fields(self)
                 else f"m{self.width_multiplier:g}")
        return (f"v{FORMAT_VERSION}-{self.model}-{h}x{w}-{width}-"
                f"i{self.iterations}-s{self.seed}-{digest}")


@dataclass
class Pretrained:
    folder: Path
    checkpoint: Path
    record: dict[str, Any] = field(repr=False)

    @property
    def heldout(self) -> dict[str, Any]:
        return self.record["heldout"]


def cache_root() -> Path:
    root = os.environ.get("MOBDISTILL_CACHE") or Path.home() / ".cache" / "mobdistill"
    return Path(root) / "pretrained"


MODEL_FIELDS = ("aspp_channels", "width_multiplier")  # each model takes the ones it has


def model_fields(config: PretrainConfig) -> dict[str, Any]:
    """The width knobs of `config` that its model's config type has."""
    from mobdistill.models import registry

    known = {f.name for f in fields(registry.get(config.model).config_type)}
    return {k: getattr(config, k) for k in MODEL_FIELDS if k in known}


def build_model(config: PretrainConfig, num_classes: int) -> tuple[torch.nn.Module, Any]:
    """(the seeded, untrained student, its model config)."""
    from mobdistill.models import registry

    entry = registry.get(config.model)
    model_config = entry.config_type(num_classes=num_classes, **model_fields(config))
    torch.manual_seed(config.seed)
    return entry.build(model_config), model_config


def pretrain_student(config: PretrainConfig, teacher: Teacher, teacher_tag: str, *,
                     cache: Path | None = None, progress: Progress | None = None) -> Pretrained:
    """The cached pretrained student for `config`, trained (and recorded) the first time."""
    folder = (cache or cache_root()) / config.key(teacher_tag)
    checkpoint, record_path = folder / "student.pt", folder / "pretrain.json"
    if checkpoint.is_file() and record_path.is_file():
        return Pretrained(folder, checkpoint, json.loads(record_path.read_text()))
    model, _ = build_model(config, teacher.num_classes)
    started = time.perf_counter()
    frames, labels = labelled_frames(config.clips, config.frame_step, config.resolution, teacher)
    losses = train(model, frames, labels, config, progress)
    heldout = evaluate_heldout(model, config, teacher)
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / "student.pt.part"
    torch.save(model.state_dict(), partial)
    partial.replace(checkpoint)
    record = {"format_version": FORMAT_VERSION, "settings": asdict(config),
              "teacher": teacher_tag, "torch": torch.__version__,
              "clips": {c: sha256_file(clips.clip_path(c)) if c in clips.names() else None
                        for c in config.clips},
              "training_frames": int(len(frames)),
              "loss_first_last": [losses[0], losses[-1]],
              "loss_every_100": losses[::100], "heldout": heldout,
              "seconds": round(time.perf_counter() - started, 1)}
    atomic_write_text(record_path, json.dumps(record, indent=1) + "\n")
    return Pretrained(folder, checkpoint, record)


def labelled_frames(names: tuple[str, ...], step: int, size: tuple[int, int],
                    teacher: Teacher) -> tuple[torch.Tensor, torch.Tensor]:
    """(frames float [N, 3, H, W] in 0..255, teacher labels int64 [N, H, W])."""
    from mobdistill.video import iter_frames

    picked = [f for name in names for f in iter_frames(name, size=size, step=step)]
    if not picked:
        raise UsageError(f"no frames in {', '.join(names)}")
    x = torch.from_numpy(np.stack(picked)).permute(0, 3, 1, 2).float()
    y = torch.from_numpy(np.stack([teacher.labels(f) for f in picked])).long()
    return x, y


def train(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, config: PretrainConfig,
          progress: Progress | None = None) -> list[float]:
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    losses: list[float] = []
    model.train()
    for step in range(config.iterations):
        pick = torch.randint(len(x), (config.batch_size,), generator=generator)
        frames, labels = x[pick], y[pick]
        if torch.rand((), generator=generator) < 0.5:  # flips: people face both ways
            frames, labels = frames.flip(-1), labels.flip(-1)
        loss = F.cross_entropy(logits_at(model, frames), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(round(loss.item(), 5))
        if progress:
            progress(step + 1, config.iterations, losses[-1])
    model.eval()
    return losses


@torch.no_grad()
def evaluate_heldout(model: torch.nn.Module, config: PretrainConfig,
                     teacher: Teacher) -> dict[str, Any]:
    """Mean per-frame mIoU against the teacher on every ``heldout_step``-th held-out frame."""
    out: dict[str, Any] = {"clips": list(config.heldout_clips), "frame_step": config.heldout_step}
    all_bg: list[float] = []
    all_fg: list[float] = []
    for name in config.heldout_clips:
        x, y = labelled_frames((name,), config.heldout_step, config.resolution, teacher)
        predicted = logits_at(model.eval(), x).argmax(1).numpy()
        bg = [miou(p, t, teacher.num_classes) for p, t in zip(predicted, y.numpy())]
        fg = [s for s in (foreground_miou(p, t, teacher.num_classes)
                          for p, t in zip(predicted, y.numpy())) if s is not None]
        all_bg += bg
        all_fg += fg
        out[name] = {"frames": len(bg), "miou_with_background": _mean(bg),
                     "miou_foreground": _mean(fg), "frames_foreground_scored": len(fg)}
    out["miou_with_background"], out["miou_foreground"] = _mean(all_bg), _mean(all_fg)
    return out


def logits_at(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's logits at its input's size."""
    logits = model(x)
    if logits.shape[-2:] != x.shape[-2:]:
        logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return logits


def _mean(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 4) if values else None
