"""The stream's starting point ("No Customization"): `pretrain.pretrain_student` on the
pretraining clips at the stream's resolution, then exported (verified) next to its checkpoint,
both cached under ``$MOBDISTILL_CACHE/pretrained/<key>``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from mobdistill.experiments.config import StreamConfig
from mobdistill.experiments.pretrain import (
    PretrainConfig,
    build_model,
    labelled_frames,
    pretrain_student,
    train,
)
from mobdistill.server.teachers import BUILTIN_TEACHERS, Teacher


def teacher_tag(spec: str) -> str:
    """A built-in teacher's name, or a file teacher's stem and content hash (a changed file makes
    a new starting point)."""
    if spec in BUILTIN_TEACHERS:
        return spec
    path = Path(spec.rsplit(":", 1)[0] if ".py:" in spec else spec).expanduser()
    digest = hashlib.sha256(path.read_bytes() + spec.encode()).hexdigest()[:12]
    return f"{path.stem}.{digest}"


def pretrain_config(config: StreamConfig) -> PretrainConfig:
    """What `mobdistill pretrain` runs for this stream's student, held out on the stream's own
    clips."""
    return PretrainConfig(model=config.model, resolution=config.resolution,
                          aspp_channels=config.aspp_channels,
                          width_multiplier=config.width_multiplier, teacher=config.teacher,
                          clips=config.pretrain_clips, iterations=config.pretrain_iterations,
                          frame_step=config.pretrain_frame_step, heldout_clips=config.videos,
                          heldout_step=config.pretrain_heldout_step,
                          seed=config.seed if config.pretrain_seed is None
                          else config.pretrain_seed)


def prepare_student(config: StreamConfig, teacher: Teacher, *, cache: Path | None = None,
                    ) -> tuple[torch.nn.Module, Path]:
    """(the pretrained student in eval mode, its export's manifest path), built once."""
    from mobdistill.export.api import export_model

    settings = pretrain_config(config)
    pretrained = pretrain_student(settings, teacher, teacher_tag(config.teacher),
                                  cache=cache)
    model, model_config = build_model(settings, teacher.num_classes)
    model.load_state_dict(torch.load(pretrained.checkpoint, weights_only=True))
    export_dir = pretrained.folder / "export"
    manifests = sorted(export_dir.glob("*.manifest.json"))
    if not manifests:
        result = export_model(config.model, out_dir=export_dir, formats=("tflite",),
                              config=model_config, checkpoint=pretrained.checkpoint,
                              resolution=config.resolution, verify=True)
        manifests = [result.manifest_path]
    return model.eval(), manifests[0]


def pretrain(model: torch.nn.Module, teacher: Teacher, config: StreamConfig) -> None:
    """Train `model` in place as `prepare_student` does, without the cache."""
    settings = pretrain_config(config)
    frames, labels = labelled_frames(settings.clips, settings.frame_step, settings.resolution,
                                     teacher)
    train(model, frames, labels, settings)
