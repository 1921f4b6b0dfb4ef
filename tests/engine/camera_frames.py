"""Real camera-like frames and their Pillow references, shared by the facade and JVM tests.

A clip from mobdistill.video is decoded to its YUV 4:2:0 planes (what a phone camera hands an
app) and to RGB (an RGBA_8888 frame). The reference for each rotation is made with Pillow
alone: YCbCr -> RGB (full-range BT.601, as Android cameras deliver), transpose to upright,
resize with BILINEAR (the resampling mobdistill.video uses for the frames models see).
"""

from __future__ import annotations

from dataclasses import dataclass

import av
import numpy as np
from PIL import Image

from mobdistill.runtime.facade import CameraFrame
from mobdistill.video import clip_path

ROTATIONS = (0, 90, 180, 270)
# Clockwise rotation to upright -> Pillow's transpose (its ROTATE_n turn counter-clockwise).
_TRANSPOSE = {0: None, 90: Image.Transpose.ROTATE_270, 180: Image.Transpose.ROTATE_180,
              270: Image.Transpose.ROTATE_90}
LAYOUTS = ("rgba", "i420", "nv21")


@dataclass(frozen=True)
class YuvPlanes:
    y: np.ndarray  # [H, W]
    u: np.ndarray  # [ceil(H/2), ceil(W/2)]
    v: np.ndarray


def decode_yuv(clip: str, index: int, crop: tuple[int, int] | None = None) -> YuvPlanes:
    """Frame `index` of `clip` as its decoded 4:2:0 planes; `crop` (H, W) keeps the top-left
    corner (odd sizes exercise the rounded-up chroma planes)."""
    with av.open(str(clip_path(clip))) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i == index:
                planes = frame.reformat(format="yuv420p").to_ndarray()
                break
    h, w = frame.height, frame.width
    y = planes[:h]
    u = planes[h:h + h // 4].reshape(h // 2, w // 2)
    v = planes[h + h // 4:].reshape(h // 2, w // 2)
    if crop:
        ch, cw = (crop[0] + 1) // 2, (crop[1] + 1) // 2
        y, u, v = y[:crop[0], :crop[1]], u[:ch, :cw], v[:ch, :cw]
    return YuvPlanes(np.ascontiguousarray(y), np.ascontiguousarray(u), np.ascontiguousarray(v))


def sensor_rgb(planes: YuvPlanes) -> np.ndarray:
    """The frame as Pillow converts it: chroma repeated 2x2, YCbCr (JFIF) -> RGB."""
    h, w = planes.y.shape
    chroma = [np.repeat(np.repeat(c, 2, 0), 2, 1)[:h, :w] for c in (planes.u, planes.v)]
    ycbcr = Image.merge("YCbCr", [Image.fromarray(p) for p in (planes.y, *chroma)])
    return np.asarray(ycbcr.convert("RGB"))


def reference(rgb: np.ndarray, rotation: int, size: tuple[int, int]) -> np.ndarray:
    """Pillow: rotate `rgb` upright, resize to (H, W) with BILINEAR."""
    image = Image.fromarray(rgb)
    if _TRANSPOSE[rotation] is not None:
        image = image.transpose(_TRANSPOSE[rotation])
    return np.asarray(image.resize((size[1], size[0]), Image.Resampling.BILINEAR))


def camera_frame(planes: YuvPlanes, layout: str, rotation: int, row_padding: int = 24
                 ) -> CameraFrame:
    """The frame as a camera would deliver it in `layout` (rgba, i420, nv21), rows padded."""
    if layout == "rgba":
        rgb = sensor_rgb(planes)
        rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
        return CameraFrame.from_rgba(rgba, rotation, row_padding=row_padding)
    return CameraFrame.from_yuv420(planes.y, planes.u, planes.v, rotation,
                                   interleaved=layout == "nv21", row_padding=row_padding)
