"""The Kotlin library's keyframe schedule on the JVM: DeltaScheduleCheck.kt
(android/library/src/main/cpp/hostcheck) drives MobdistillEngine.keyframeInterval and
lastFrameWasKeyframe through the JNI bridge on the real engine core with a real `deeplab-delta`
export and real clip frames; its masks must match Python's reference schedule (ai_edge_litert)
for the same run: the manifest's period, then reset() and keyframeInterval = 2."""

from __future__ import annotations

import numpy as np

from mobdistill.export.manifest import Manifest
from mobdistill.export.verify import TfliteRunner, run_schedule
from mobdistill.runtime.frames import decode_to_raw

BEFORE_RESET, AFTER_RESET = 5, 4


def _reference_masks(manifest: Manifest, frames: np.ndarray) -> np.ndarray:
    runner = TfliteRunner(manifest.tflite_path, num_threads=1)
    runs = (run_schedule(runner, manifest.schedule, frames[:BEFORE_RESET])
            + run_schedule(runner, manifest.schedule, frames[BEFORE_RESET:], period=2))
    logits = [out[manifest["output"]["name"]][0] for _, out in runs]
    return np.stack([x.argmax(-1) for x in logits]).astype(np.uint8)


def test_kotlin_engine_exposes_the_schedule(android_host, tiny_export, stateless_manifest,
                                            tmp_path):
    manifest = Manifest.load(tiny_export("deeplab-delta", formats=("tflite",)).manifest_path)
    frames = decode_to_raw(None, tmp_path / "frames.rgb", resolution=manifest.resolution,
                           max_frames=BEFORE_RESET + AFTER_RESET)
    raw = np.fromfile(frames.path, np.uint8).reshape(-1, *manifest.resolution, 3)
    _reference_masks(manifest, raw).tofile(tmp_path / "reference.u8")
    done = android_host.run_check("DeltaScheduleCheckKt", str(tmp_path), str(manifest.path),
                                  str(stateless_manifest), str(android_host.runtime_lib),
                                  str(BEFORE_RESET))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "keyframes follow the schedule" in done.stdout
    assert "masks agree with the Python reference schedule" in done.stdout
    assert "a model without a schedule: interval 0" in done.stdout
