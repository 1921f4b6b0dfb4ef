"""The evaluation stream: real clips back to back at the student's resolution."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Stream:
    frames: np.ndarray  # uint8 [N, H, W, 3]
    times_s: np.ndarray  # float64 [N], video time of each frame
    clips: list[str]  # clip name of each frame
    duration_s: float

    def frame_at(self, time_s: float) -> int:
        """The first frame whose timestamp is ≥ ``time_s`` (len(frames) after the end)."""
        return int(np.searchsorted(self.times_s, time_s - 1e-9))


def resolve_clip(name: str) -> str:
    """A path, or a `mobdistill.clips` registry name (fetched into the cache if need be)."""
    from mobdistill.video import clip_path

    return str(clip_path(name))


def load_stream(videos: tuple[str, ...], size: tuple[int, int],
                max_frames: int | None = None) -> Stream:
    """Real clips back to back, each frame stamped with its own clip's frame rate."""
    from mobdistill.video import read_frames, video_fps

    frames, times, clips, t0 = [], [], [], 0.0
    for name in videos:
        clip = resolve_clip(name)
        f = read_frames(clip, max_frames, size=size) if max_frames else read_frames(clip, size=size)
        period = 1.0 / video_fps(clip)
        frames.append(f)
        times += [t0 + k * period for k in range(len(f))]
        clips += [Path(name).name] * len(f)
        t0 += len(f) * period
    return Stream(np.concatenate(frames), np.asarray(times), clips, t0)
