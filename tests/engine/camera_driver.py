"""Segments real camera-like frames through the engine's C facade, in a process of its own.

Like facade_driver.py: the facade brings its own TFLite runtime, so no second one (pytest's
ai_edge_litert) shares the process. Usage: python camera_driver.py FACADE_LIB MANIFEST ->
a JSON reply on stdout: per layout and rotation, the mask of the camera frame against the mask
of Pillow's reference frame through the same engine, with the frame's timed stages.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from camera_frames import LAYOUTS, ROTATIONS, camera_frame, decode_yuv, reference, sensor_rgb  # noqa: E402, I001

from mobdistill.errors import EngineError  # noqa: E402
from mobdistill.runtime.facade import FacadeEngine, mask_to_preview  # noqa: E402


def centre_index(size: int, source: int) -> np.ndarray:
    """The source pixel whose area holds each output pixel's centre (exact integers: Pillow's
    NEAREST rounds the same centres in floating point and drifts at exact ties)."""
    return (2 * np.arange(size) + 1) * source // (2 * size)


def main(library: Path, manifest: Path) -> dict:
    planes = decode_yuv("bikes.mp4", 5)
    rgb = sensor_rgb(planes)
    reply: dict = {"cases": []}
    with FacadeEngine(manifest, update_key=None, device_id=bytes(16), library=library) as engine:
        size = (engine.info.height, engine.info.width)
        for layout in LAYOUTS:
            for rotation in ROTATIONS:
                frame = camera_frame(planes, layout, rotation)
                mask, timing = engine.segment_image(frame)
                want, _ = engine.segment(reference(rgb, rotation, size))
                preview_size = frame.upright_size()
                preview = mask_to_preview(mask, *preview_size, library=library)
                nearest = mask[np.ix_(centre_index(preview_size[0], mask.shape[0]),
                                      centre_index(preview_size[1], mask.shape[1]))]
                reply["cases"].append({
                    "layout": layout, "rotation": rotation,
                    "agreement": float((mask == want).mean()),
                    "classes": int(len(np.unique(want))),
                    "timing": [timing.preprocess_us, timing.invoke_us, timing.postprocess_us],
                    "preview_shape": list(preview.shape),
                    "preview_matches_nearest": bool((preview == nearest).all())})
        short = camera_frame(planes, "nv21", 90)
        broken = type(short)(short.format, short.width, short.height, 90,
                             (short.planes[0], short.planes[1],
                              type(short.planes[2])(short.planes[2].data[:-40],
                                                    short.planes[2].row_stride, 2)))
        try:
            engine.segment_image(broken)
            reply["short_plane_error"] = None
        except EngineError as err:
            reply["short_plane_error"] = str(err)
        again, _ = engine.segment_image(camera_frame(planes, "i420", 0))
        first, _ = engine.segment_image(camera_frame(planes, "i420", 0))
        reply["unchanged_after_refusal"] = bool((again == first).all())
        reply["stats"] = engine.stats()
    return reply


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), Path(sys.argv[2]))))
