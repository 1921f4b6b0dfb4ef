"""Decode real video into the engine's frame file: raw uint8 RGB, H x W x 3 per frame.

Frames come from `mobdistill.video.iter_frames` (what export verification feeds too), streamed
to disk one at a time so long clips at full model resolution never sit in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mobdistill.errors import UsageError
from mobdistill.video import DEFAULT_CLIP, clip_path, iter_frames


@dataclass(frozen=True)
class FramesFile:
    path: Path
    count: int
    height: int
    width: int
    video: str

    @property
    def frame_bytes(self) -> int:
        return self.height * self.width * 3


def decode_to_raw(video: str | Path | None, out_path: Path, *, resolution: tuple[int, int],
                  max_frames: int | None = None) -> FramesFile:
    """Write up to `max_frames` frames of `video` (default bikes.mp4) resized to (H, W)."""
    path = clip_path(video or DEFAULT_CLIP)
    height, width = resolution
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(out_path.suffix + ".part")
    count = 0
    try:
        with open(tmp, "wb") as out:
            for frame in iter_frames(path, size=(height, width), count=max_frames):
                out.write(frame.tobytes())
                count += 1
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if count == 0:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"video {path} has no frames")
    tmp.replace(out_path)
    return FramesFile(out_path, count, height, width, str(path))
