"""J&F through the real engine: a tiny exported MobileVOS scored on a DAVIS folder whose
annotations are its own PyTorch predictions (init on frame 0 with its mask, then one step per
frame) scores near 1, and against their inverse near 0. The seeded tiny model's masks barely
change from frame to frame, so this pins the engine's masks, not their order in time."""

from __future__ import annotations

import numpy as np
import torch

from mobdistill import davis
from mobdistill.experiments.vos_eval import evaluate
from mobdistill.models import mobilevos
from mobdistill.runtime.device import LocalDevice
from mobdistill.video import read_frames


def test_engine_j_and_f_of_pytorch_own_masks(tiny_export, tmp_path) -> None:
    export = tiny_export("mobilevos", formats=("tflite",))
    model = export.model()
    h, w = export.resolution
    rgb = read_frames("carphone_pristine.mp4", 6, size=(h, w))
    first = np.zeros((h, w), np.uint8)
    first[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 1
    frames = [torch.from_numpy(f).permute(2, 0, 1)[None].float() for f in rgb]
    logits = mobilevos.run_sequence(model, frames, torch.from_numpy(first)[None, None].float(),
                                    export.config.queue_length)
    masks = [first] + [lg.argmax(1)[0].numpy().astype(np.uint8) for lg in logits]
    davis.write_davis(tmp_path / "davis", "carphone", list(rgb), masks)
    # PNG frames would be lossless; DAVIS ships JPEG, so the engine sees slightly other pixels
    with LocalDevice(tmp_path / "device") as device:
        report = evaluate(device, export.manifest_path, tmp_path / "davis")
    (sequence,) = report["sequences"]
    assert sequence["frames"] == 6 and len(sequence["objects"]) == 1
    assert report["overall"]["J&F"] > 0.9, report
    inverted = masks[:1] + [1 - m for m in masks[1:]]  # the engine's masks must be these
    davis.write_davis(tmp_path / "inverted", "carphone", list(rgb), inverted)
    with LocalDevice(tmp_path / "device") as device:
        wrong = evaluate(device, export.manifest_path, tmp_path / "inverted")
    assert wrong["overall"]["J"] < 0.5, wrong
