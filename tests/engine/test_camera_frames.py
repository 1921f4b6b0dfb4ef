"""Camera frames in, masks out: RGBA_8888 and YUV_420_888 (planar and NV21) frames of a real
clip, rows padded, in all four rotations, through the engine's one-pass conversion, against
references made with Pillow (camera_frames.py). The JVM side (Kotlin -> JNI) is
tests/adb/test_camera_jvm.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from camera_frames import LAYOUTS, ROTATIONS, camera_frame, decode_yuv, reference, sensor_rgb  # noqa: E402, I001

from custom_model import custom_export  # noqa: E402, F401 (fixture)

from mobdistill.errors import EngineError  # noqa: E402
from mobdistill.runtime.facade import FACADE_NAME, CameraFrame, ImagePlane, convert_image  # noqa: E402

DRIVER = Path(__file__).parent / "camera_driver.py"


@pytest.fixture(scope="module")
def facade(engine_binary) -> Path:
    return engine_binary.parent / FACADE_NAME


# Odd sizes too: the chroma planes round up and the last row stops short of a full stride.
@pytest.mark.parametrize("crop", [None, (271, 639)])
def test_conversion_matches_pillow(facade, crop):
    planes = decode_yuv("bikes.mp4", 5, crop)
    rgb = sensor_rgb(planes)
    for layout in LAYOUTS:
        for rotation in ROTATIONS:
            want = reference(rgb, rotation, (64, 128)).astype(int)
            got = convert_image(camera_frame(planes, layout, rotation), 64, 128, library=facade)
            error = np.abs(got - want)
            # Pillow rounds between its passes and in its YCbCr tables: a level or two
            assert error.max() <= 2 and error.mean() < 0.6, (layout, rotation, error.max())


def test_bad_frames_are_refused(facade):
    planes = decode_yuv("carphone_pristine.mp4", 0)
    frame = camera_frame(planes, "i420", 0, row_padding=0)  # the V plane ends at its last byte
    short_v = ImagePlane(frame.planes[2].data[:-1], frame.planes[2].row_stride, 1)
    cases = {
        "need": CameraFrame(frame.format, frame.width, frame.height, 0,
                            (*frame.planes[:2], short_v)),
        "rotation": CameraFrame(frame.format, frame.width, frame.height, 45, frame.planes),
        "row stride": CameraFrame(frame.format, frame.width, frame.height, 0,
                                  (ImagePlane(frame.planes[0].data, 100, 1), *frame.planes[1:])),
        "neither": CameraFrame(17, frame.width, frame.height, 0, frame.planes),
        "size": CameraFrame(frame.format, 0, frame.height, 0, frame.planes),
    }
    for text, bad in cases.items():
        with pytest.raises(EngineError, match=text):
            convert_image(bad, 64, 128, library=facade)


def test_segment_image_through_the_facade(facade, custom_export):  # noqa: F811
    """Each camera frame's mask equals the mask of Pillow's reference frame (same engine)."""
    done = subprocess.run([sys.executable, str(DRIVER), str(facade), str(custom_export)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    reply = json.loads(done.stdout)
    assert len(reply["cases"]) == len(LAYOUTS) * len(ROTATIONS)
    for case in reply["cases"]:
        label = f"{case['layout']} {case['rotation']}"
        assert case["classes"] >= 3, label  # a mask of one class would agree by construction
        # a level or two of difference moves pixels on a band's edge only (0.994 measured)
        assert case["agreement"] >= 0.98, (label, case["agreement"])
        preprocess_us, invoke_us, _ = case["timing"]
        assert preprocess_us > 0 and invoke_us > 0, label
        turned = case["rotation"] in (90, 270)
        assert case["preview_shape"] == ([640, 272] if turned else [272, 640]), label
        assert case["preview_matches_nearest"], label
    assert "need" in reply["short_plane_error"]
    assert reply["unchanged_after_refusal"]
    stats = reply["stats"]
    assert stats["frames"] == 2 * len(reply["cases"]) + 2
    assert stats["preprocess"]["count"] == stats["frames"] and stats["preprocess"]["p50_us"] > 0
