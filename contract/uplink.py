"""The uplink: how sampled camera frames travel from the device to the server, bytes counted.

AMS (specs §3) buffers the sampled frames of one T_update interval on the device and sends them
H.264-encoded (the paper: two-pass, medium preset, 200 kbit/s). `encode_h264` encodes one such
chunk with libx264 (PyAV's bundled FFmpeg), *single-pass* ABR at ``bitrate_kbps`` over the
chunk's own timestamps, medium preset, a keyframe first so every chunk decodes on its own.
`encode_jpeg` is the simple alternative (one JPEG per frame). Both return the exact bytes that
would be sent and the frames the server decodes from them (it labels and trains on those).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Sequence

import numpy as np

from mobdistill.errors import UsageError

CODECS = ("h264", "jpeg")
DEFAULT_BITRATE_KBPS = 200
DEFAULT_JPEG_QUALITY = 75


@dataclass
class UplinkChunk:
    """One uplink transmission: ``num_bytes`` on the wire and what the server decodes."""

    codec: str
    num_bytes: int
    decoded: list[np.ndarray] = field(repr=False, default_factory=list)


def encode_h264(frames: Sequence[np.ndarray], times_s: Sequence[float], *,
                bitrate_kbps: float = DEFAULT_BITRATE_KBPS, preset: str = "medium") -> bytes:
    """Annex-B H.264 of RGB frames [H, W, 3] (H, W even) stamped with ``times_s`` (ms clock)."""
    import av

    if not frames:
        return b""
    height, width = frames[0].shape[:2]
    if height % 2 or width % 2:
        raise UsageError(f"H.264 needs even frame sizes, got {height}x{width}; use --uplink jpeg")
    span = max(float(times_s[-1]) - float(times_s[0]), 1e-3)
    rate = Fraction(max(1, round(1000 * len(frames) / span)), 1000) if len(frames) > 1 else 1
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="h264") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.bit_rate = int(bitrate_kbps * 1000)
        stream.options = {"preset": preset, "g": str(max(1, len(frames)))}
        stream.codec_context.time_base = Fraction(1, 1000)
        t0 = float(times_s[0])
        for frame, t in zip(frames, times_s):
            video = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            video.pts = int(round((float(t) - t0) * 1000))
            video.time_base = Fraction(1, 1000)
            for packet in stream.encode(video):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def decode_h264(data: bytes) -> list[np.ndarray]:
    import av

    if not data:
        return []
    with av.open(io.BytesIO(data), mode="r", format="h264") as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def encode_jpeg(frame: np.ndarray, *, quality: int = DEFAULT_JPEG_QUALITY) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(frame)).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def decode_jpeg(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.uint8)


def send(frames: Sequence[np.ndarray], times_s: Sequence[float], *, codec: str = "h264",
         bitrate_kbps: float = DEFAULT_BITRATE_KBPS,
         jpeg_quality: int = DEFAULT_JPEG_QUALITY) -> UplinkChunk:
    """Encodes one chunk of sampled frames and decodes it as the server would."""
    if codec not in CODECS:
        raise UsageError(f"uplink codec {codec!r} must be one of {CODECS}")
    if not frames:
        return UplinkChunk(codec, 0, [])
    if codec == "jpeg":
        blobs = [encode_jpeg(f, quality=jpeg_quality) for f in frames]
        return UplinkChunk(codec, sum(len(b) for b in blobs), [decode_jpeg(b) for b in blobs])
    data = encode_h264(frames, times_s, bitrate_kbps=bitrate_kbps)
    decoded = decode_h264(data)
    if len(decoded) != len(frames):
        raise UsageError(f"H.264 chunk decoded to {len(decoded)} of {len(frames)} frames")
    return UplinkChunk(codec, len(data), decoded)
