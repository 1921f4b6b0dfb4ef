"""Video object segmentation data in the DAVIS-2017 layout, made from the project's real clips
with a teacher's masks as annotations (no DAVIS download exists here), and read back for training.
Users with DAVIS point the trainer at their own folder instead."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from mobdistill import davis
from mobdistill.server.teachers import Teacher
from mobdistill.training.mobilevos_trainer import Clip, load_clip
from mobdistill.video import read_frames


def write_teacher_sequences(root: Path, clip_names: Sequence[str], teacher: Teacher, *,
                            size: tuple[int, int], frames: int, split: str,
                            progress: bool = True) -> list[davis.DavisSequence]:
    """One DAVIS sequence per clip: its first `frames` frames at `size` (H, W), annotated with
    the teacher's foreground (object 1 = any non-background class)."""
    sequences = []
    for name in tqdm(clip_names, desc=f"teacher masks ({split})", disable=not progress):
        rgb = read_frames(name, frames, size=size)
        masks = [(teacher.labels(frame) > 0).astype(np.uint8) for frame in rgb]
        sequences.append(davis.write_davis(root, Path(name).stem, list(rgb), masks, split=split))
    return sequences


def load_clips(root: Path, split: str, size: tuple[int, int]) -> list[Clip]:
    """Every sequence of a DAVIS split as training clips at `size`."""
    return [load_clip(s.name, s.frames, s.annotations, size)
            for s in davis.read_davis(root, split)]
