"""Remote+Tracking (AMS §4.1) on a stream: the device sends a sampled frame every
1/``tracking_fps`` s at full quality (JPEG 95, one frame per message: buffering would make the
labels stale), the server labels it with the teacher and sends the label map down (zlib), and the
device carries the labels to every frame with `runtime.label_tracker`. As the paper assumes in
this scheme's favour, labels arrive in time for their own frame (no network or teacher delay).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from mobdistill.contract import uplink
from mobdistill.experiments.clips import Stream
from mobdistill.experiments.config import StreamConfig
from mobdistill.runtime.label_tracker import FlowParams, LabelTracker
from mobdistill.server.teachers import Teacher

FULL_QUALITY_JPEG = 95


@dataclass
class TrackingRun:
    masks: np.ndarray  # uint8 [N, H, W]: what the device showed
    sampled: list[int]  # frames whose labels came from the server
    uplink_bytes: int
    downlink_bytes: int
    flow: FlowParams


def sampled_frames(stream: Stream, fps: float) -> list[int]:
    """The first frame at or after each multiple of 1/fps s (each frame once)."""
    frames = {stream.frame_at(float(t)) for t in np.arange(0.0, stream.duration_s, 1.0 / fps)}
    return sorted(i for i in frames if i < len(stream.frames))


def run_remote_tracking(stream: Stream, teacher: Teacher, config: StreamConfig) -> TrackingRun:
    samples = sampled_frames(stream, config.tracking_fps)
    tracker = LabelTracker(stream.frames.shape[2])
    up = down = 0
    masks = np.empty(stream.frames.shape[:3], np.uint8)
    wanted = set(samples)
    for i, frame in enumerate(stream.frames):
        if i in wanted:
            chunk = uplink.send([frame], [float(stream.times_s[i])], codec="jpeg",
                                jpeg_quality=FULL_QUALITY_JPEG)
            labels = teacher.labels(chunk.decoded[0]).astype(np.uint8)
            up += chunk.num_bytes
            down += len(zlib.compress(labels.tobytes(), 9))
            masks[i] = tracker.reset(frame, labels)
        else:
            masks[i] = tracker.track(frame)
    return TrackingRun(masks, samples, up, down, tracker.params)
