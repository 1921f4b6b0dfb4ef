"""Camera frames on the JVM: CameraFrameCheck.kt (android/library/src/main/cpp/hostcheck) drives
MobdistillEngine.segment / convert / maskToPreview through the JNI bridge on the real engine
core, with real clip frames in RGBA_8888 and YUV_420_888 (planar and NV21, U and V two views of
one buffer as on a phone) in all four rotations, against Pillow's references."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from camera_frames import LAYOUTS, ROTATIONS, camera_frame, decode_yuv, reference, sensor_rgb  # noqa: E402, I001
from custom_model import custom_export  # noqa: E402, F401 (fixture)


def write_cases(folder: Path, size: tuple[int, int]) -> int:
    """Frames, plane files and cases.txt for CameraFrameCheck; returns the number of cases."""
    planes = decode_yuv("bikes.mp4", 5, crop=(271, 639))
    rgb = sensor_rgb(planes)
    lines = []
    for layout in LAYOUTS:
        for rotation in ROTATIONS:
            frame = camera_frame(planes, layout, rotation)
            stem = f"{layout}-{rotation}"
            reference(rgb, rotation, size).tofile(folder / f"{stem}.rgb")
            fields = [layout, str(rotation), str(frame.format), str(frame.width),
                      str(frame.height), f"{stem}.rgb"]
            for index, plane in enumerate(frame.planes):
                base = plane.data.base if plane.data.base is not None else plane.data
                name = f"{stem}-{index}.bin"
                np.asarray(base).tofile(folder / name)  # the whole buffer the view lies in
                offset = plane.data.ctypes.data - np.asarray(base).ctypes.data
                fields += [name, str(offset), str(plane.data.nbytes), str(plane.row_stride),
                           str(plane.pixel_stride)]
            lines.append(" ".join(fields))
    (folder / "cases.txt").write_text("\n".join(lines) + "\n")
    return len(lines)


def test_camera_frames_through_jni(android_host, custom_export, tmp_path):  # noqa: F811
    count = write_cases(tmp_path, (64, 128))
    done = android_host.run_check("CameraFrameCheckKt", str(tmp_path), str(custom_export),
                                  str(android_host.runtime_lib))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("model input within") == count == len(LAYOUTS) * len(ROTATIONS)
    assert done.stdout.count("mask agrees") == count
    assert "a short plane is refused" in done.stdout and "heap buffer is refused" in done.stdout
