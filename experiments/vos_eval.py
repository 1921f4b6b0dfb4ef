"""J&F of an exported MobileVOS on a DAVIS-layout folder, through the real engine: the accuracy
of the artifact a phone runs, not of the PyTorch model.

Per sequence the engine runs `init` on frame 0 with its annotation (`--init_mask`), then `step`
on frames 1..n-1 with no warm-up (a warm-up run would advance the memory), writing argmax masks.
Frames are resized to the model's input; masks are mapped back to the annotation's size by
nearest neighbour and scored there with the DAVIS definitions (`mobdistill.davis`).
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from mobdistill import davis
from mobdistill.export.manifest import Manifest
from mobdistill.runtime.device import Device
from mobdistill.runtime.engine import EngineOptions, run_engine


@dataclass(frozen=True)
class SequenceResult:
    sequence: str
    frames: int
    objects: list[dict]
    invoke_ms_median: float


def _model_inputs(sequence: davis.DavisSequence, size: tuple[int, int],
                  work: Path) -> tuple[Path, Path]:
    """(raw RGB frames at the model's size, raw uint8 first-frame label map) for the engine."""
    h, w = size
    bilinear = Image.Resampling.BILINEAR
    frames = np.stack([np.asarray(Image.open(p).convert("RGB").resize((w, h), bilinear))
                       for p in sequence.frames])
    first = Image.fromarray(sequence.mask(0)).resize((w, h), Image.Resampling.NEAREST)
    (work / "frames.rgb").write_bytes(frames.tobytes())
    (work / "init.mask").write_bytes(np.asarray(first, np.uint8).tobytes())
    return work / "frames.rgb", work / "init.mask"


def evaluate_sequence(device: Device, manifest_path: Path, sequence: davis.DavisSequence,
                      options: EngineOptions | None = None) -> SequenceResult:
    manifest = Manifest.load(manifest_path)
    if manifest.memory is None:
        raise ValueError(f"{manifest.model_name} has no memory: J&F evaluation takes MobileVOS")
    size = manifest.resolution
    truths = [sequence.mask(i) for i in range(len(sequence.frames))]
    with tempfile.TemporaryDirectory(prefix="mobdistill-vos-") as tmp:
        frames_path, mask_path = _model_inputs(sequence, size, Path(tmp))
        n = len(sequence.frames)
        result = run_engine(device, manifest_path, options, frames_path=frames_path,
                            init_mask=mask_path, output_masks=True, num_runs=n - 1,
                            warmup_runs=0, out_dir=Path(tmp) / "run")
        assert result.output_masks_path is not None
        raw = np.fromfile(result.output_masks_path, np.uint8).reshape(n - 1, *size)
    height, width = truths[0].shape
    predicted = [truths[0]] + [np.asarray(Image.fromarray(m).resize((width, height),
                                                                    Image.Resampling.NEAREST))
                               for m in raw]
    scores = davis.score_sequence(sequence.name, predicted, truths)
    invoke = [f.invoke_us / 1000 for f in result.frames]
    return SequenceResult(sequence.name, n, [asdict(s) for s in scores],
                          float(np.median(invoke)) if invoke else float("nan"))


def evaluate(device: Device, manifest_path: Path, root: Path, split: str = "val",
             options: EngineOptions | None = None) -> dict:
    """Per-sequence and overall J, F and J&F mean of the exported model on a DAVIS split."""
    sequences = [evaluate_sequence(device, manifest_path, s, options)
                 for s in davis.read_davis(root, split)]
    scores = [davis.ObjectScore(**o) for s in sequences for o in s.objects]
    return {"model": str(manifest_path), "davis": str(root), "split": split,
            "overall": davis.summarise(scores), "sequences": [asdict(s) for s in sequences]}
