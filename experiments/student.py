"""The stream's starting point: a student pretrained on a clip outside the stream, exported, cached.

There are no ImageNet MobileNetV2 weights on this machine (specs §6), so the starting point is
made: ``pretrain_iterations`` Adam steps (batch 4, BatchNorm in train mode) on ``pretrain_clip``
labelled by the teacher, from a seeded random init; then exported (verified). Both are cached
under ``$MOBDISTILL_CACHE/students/<key>`` keyed by everything that shapes them.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import torch

from mobdistill.experiments.clips import resolve_clip
from mobdistill.experiments.config import StreamConfig
from mobdistill.server.teachers import BUILTIN_TEACHERS, Teacher

log = logging.getLogger(__name__)


def cache_root() -> Path:
    root = os.environ.get("MOBDISTILL_CACHE") or Path.home() / ".cache" / "mobdistill"
    return Path(root) / "students"


def teacher_tag(spec: str) -> str:
    """A built-in teacher's name, or a file teacher's stem and content hash (a changed file makes
    a new starting point)."""
    if spec in BUILTIN_TEACHERS:
        return spec
    path = Path(spec.rsplit(":", 1)[0] if ".py:" in spec else spec).expanduser()
    digest = hashlib.sha256(path.read_bytes() + spec.encode()).hexdigest()[:12]
    return f"{path.stem}.{digest}"


def prepare_student(config: StreamConfig, teacher: Teacher, *, cache: Path | None = None,
                    ) -> tuple[torch.nn.Module, Path]:
    """(the pretrained student in eval mode, its export's manifest path), built once."""
    from mobdistill.export.api import export_model
    from mobdistill.models import registry

    entry = registry.get(config.model)
    model_config = entry.config_type(num_classes=teacher.num_classes,
                                     aspp_channels=config.aspp_channels)
    h, w = config.resolution
    key = (f"{config.model}-{h}x{w}-a{config.aspp_channels}-c{teacher.num_classes}-"
           f"{Path(config.pretrain_clip).stem}-{teacher_tag(config.teacher)}-"
           f"i{config.pretrain_iterations}-s{config.seed}")
    folder = (cache or cache_root()) / key
    checkpoint = folder / "student.pt"
    torch.manual_seed(config.seed)
    model = entry.build(model_config)
    if not checkpoint.exists():
        pretrain(model, teacher, config)
        folder.mkdir(parents=True, exist_ok=True)
        partial = checkpoint.with_suffix(".tmp")
        torch.save(model.state_dict(), partial)
        partial.replace(checkpoint)
    model.load_state_dict(torch.load(checkpoint, weights_only=True))
    manifests = sorted(folder.glob("*.manifest.json"))
    if not manifests:
        result = export_model(config.model, out_dir=folder, formats=("tflite",),
                              config=model_config, checkpoint=checkpoint, resolution=(h, w),
                              verify=True)
        manifests = [result.manifest_path]
    return model.eval(), manifests[0]


def pretrain(model: torch.nn.Module, teacher: Teacher, config: StreamConfig) -> None:
    from mobdistill.video import read_frames

    frames = read_frames(resolve_clip(config.pretrain_clip), size=config.resolution)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    y = torch.from_numpy(np.stack([teacher.labels(f) for f in frames]))
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for step in range(config.pretrain_iterations):
        pick = torch.randint(len(x), (4,), generator=generator)
        loss = torch.nn.functional.cross_entropy(model(x[pick]), y[pick])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 25 == 0:
            log.info("pretrain %d/%d loss %.3f", step, config.pretrain_iterations, loss.item())
    model.eval()
