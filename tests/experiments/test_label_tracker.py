"""Remote+Tracking's device side: labels follow real image content along Farneback flow."""

from __future__ import annotations

import numpy as np
import pytest

from mobdistill.runtime.label_tracker import FlowParams, LabelTracker
from mobdistill.video import read_frames

STEP_PX, STEPS = 3, 6


def _panning_view(frame: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k-th view of a camera panning left over a real picture (content moves right)."""
    start = STEP_PX * (STEPS - k)
    return frame[:, start:start + 128], labels[:, start:start + 128]


def test_tracked_labels_follow_moving_content():
    picture = read_frames("carphone_pristine.mp4", 1, size=(64, 128 + STEP_PX * STEPS))[0]
    # a label map with real edges: the picture's darker half (a person's suit, the window)
    labels = (picture.mean(axis=2) < np.median(picture.mean(axis=2))).astype(np.uint8)
    tracker = LabelTracker(128)
    first_frame, first_labels = _panning_view(picture, labels, 0)
    tracker.reset(first_frame, first_labels)
    for k in range(1, STEPS + 1):
        frame, truth = _panning_view(picture, labels, k)
        tracked = tracker.track(frame)
    stale = (first_labels == truth)[:, 20:-20].mean()
    followed = (tracked == truth)[:, 20:-20].mean()
    assert tracked.dtype == np.uint8 and set(np.unique(tracked)) <= {0, 1}
    assert stale < 0.85, stale  # the content really moved
    assert followed > stale + 0.08 and followed > 0.9, (followed, stale)


def test_flow_window_scales_with_width_and_labels_must_match_the_frame():
    assert FlowParams.scaled_to(1024).window == 64  # the paper's
    assert FlowParams.scaled_to(128).window == 8
    assert FlowParams.scaled_to(32).window == 5
    tracker = LabelTracker(8)
    with pytest.raises(ValueError, match="no labels yet"):
        tracker.track(np.zeros((4, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="do not match"):
        tracker.reset(np.zeros((4, 8, 3), np.uint8), np.zeros((4, 7), np.uint8))


@pytest.mark.parametrize("time_scale", [1.0, 0.2, 0.05])
def test_tracker_samples_one_frame_per_second_of_video_time_at_any_time_scale(time_scale):
    """Remote+Tracking's 1 fps is of the video's own time: the server clock's scale does not
    make it sample more often (flow must bridge a real second of motion, as in the paper)."""
    from mobdistill.experiments.clips import Stream
    from mobdistill.experiments.config import StreamConfig
    from mobdistill.experiments.tracking import sampled_frames

    # 25 fps for 2 s, then a 10 fps clip for 1.5 s (stream times as `load_stream` stamps them)
    times = np.concatenate([np.arange(50) / 25, 2 + np.arange(15) / 10])
    stream = Stream(np.zeros((65, 2, 2, 3), np.uint8), times, ["a"] * 50 + ["b"] * 15, 3.5)
    config = StreamConfig(scheme="remote-tracking", time_scale=time_scale)
    assert sampled_frames(stream, config.tracking_fps) == [0, 25, 50, 60]  # 0, 1, 2, 3 s
