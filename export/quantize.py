"""Quantized TFLite variants of a verified float32 export, checked on segmentation.

Why ai-edge-quantizer (not litert-torch's PT2E `quant_config`): it rewrites the float32
.tflite the export has already converted and verified, so one slow conversion serves every
variant, calibration runs the real TFLite runtime on the very graph being quantized, and all
three modes (float16 weights, dynamic-range int8, static int8) come from one tool
(docs/manifest.md "Quantized exports").

Every variant keeps float32 inputs and outputs (the engine and apps feed float32 frames):
static int8 gets a QUANTIZE op after each input and a DEQUANTIZE op before each output.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mobdistill import clips
from mobdistill.errors import ExportError, UsageError
from mobdistill.export.verify import Runner, run_frames
from mobdistill.models.spec import MemoryQueueSpec, SignatureSpec

QUANTIZE_MODES = ("fp16", "dynamic-int8", "int8")
# Defaults of the argmax agreement a variant must reach against the float32 export.
DEFAULT_MIN_AGREEMENT = {"fp16": 0.99, "dynamic-int8": 0.95, "int8": 0.95}
CALIBRATION_FRAMES = 16
VERIFICATION_FRAMES = 8

_DESCRIPTIONS = {
    "fp16": {"weights": "float16 (dequantized to float32 at load)", "activations": "float32"},
    "dynamic-int8": {"weights": "int8 per-channel, symmetric",
                     "activations": "float32, quantized to int8 at run time per op"},
    "int8": {"weights": "int8 per-channel, symmetric",
             "activations": "int8 per-tensor, asymmetric, ranges calibrated on real frames"},
}
# Which variants a sparse update can patch (docs/manifest.md "Quantized exports").
UPDATE_RULES = {
    "fp16": "float16 weight buffers take float16 values (wire coding f16)",
    "dynamic-int8": "not supported: an int8 weight needs its per-channel scale recomputed",
    "int8": "not supported: int8 weights and calibrated activation ranges need a scale rule",
}


def check_mode(mode: str) -> str:
    if mode not in QUANTIZE_MODES:
        raise UsageError(f"--quantize {mode!r}: choose from {', '.join(QUANTIZE_MODES)}")
    return mode


@dataclass(frozen=True)
class TeacherReference:
    """Labels a teacher gives a uint8 RGB frame [H, W, 3] -> int [H, W] (same classes)."""

    name: str
    labels: Callable[[np.ndarray], np.ndarray]


def default_clip(role: clips.Role) -> str:
    """The registry's clip for `role` (mobdistill/clips.py): calibration and verification frames
    come from different scenes."""
    return clips.clips_with_role(role)[0].name


@dataclass(frozen=True)
class QuantizeOptions:
    mode: str
    calibration_video: str | Path | None = None  # static int8 only; None: the calibration clip
    verification_video: str | Path | None = None  # None: the verification clip
    calibration_frames: int = CALIBRATION_FRAMES
    verification_frames: int = VERIFICATION_FRAMES
    min_argmax_agreement: float | None = None  # None: DEFAULT_MIN_AGREEMENT[mode]
    teacher: TeacherReference | None = None

    def __post_init__(self) -> None:
        check_mode(self.mode)
        if self.min_argmax_agreement is not None and not 0 <= self.min_argmax_agreement <= 1:
            raise UsageError(f"--min-agreement {self.min_argmax_agreement}: must be in [0, 1]")
        if self.calibration_frames < 1 or self.verification_frames < 1:
            raise UsageError("calibration and verification need at least one frame")

    @property
    def calibration(self) -> str | Path:
        return self.calibration_video or default_clip(clips.Role.CALIBRATION)

    @property
    def verification(self) -> str | Path:
        return self.verification_video or default_clip(clips.Role.VERIFICATION)

    @property
    def threshold(self) -> float:
        if self.min_argmax_agreement is not None:
            return self.min_argmax_agreement
        return DEFAULT_MIN_AGREEMENT[self.mode]


def recipe(mode: str) -> list[dict[str, Any]]:
    """The ai-edge-quantizer recipe of `mode` (recorded in the manifest as applied)."""
    from ai_edge_quantizer import recipe_manager
    from ai_edge_quantizer.qtyping import OpQuantizationConfig, TensorQuantizationConfig
    from ai_edge_quantizer.qtyping import TFLOperationName as Op

    check_mode(mode)
    manager = recipe_manager.RecipeManager()
    if mode == "fp16":
        manager.add_quantization_config(
            ".*", Op.ALL_SUPPORTED,
            OpQuantizationConfig(weight_tensor_config=TensorQuantizationConfig(
                num_bits=16, dtype="FLOAT"), compute_precision="FLOAT", explicit_dequantize=True),
            algorithm_key="float_casting")
    elif mode == "dynamic-int8":
        manager.add_dynamic_config(".*", Op.ALL_SUPPORTED, num_bits=8)
    else:
        manager.add_static_config(".*", Op.ALL_SUPPORTED, activation_num_bits=8,
                                  weight_num_bits=8)
        for edge in (Op.INPUT, Op.OUTPUT):  # keep float32 I/O for the engine and apps
            manager.add_quantization_config(".*", edge, OpQuantizationConfig(),
                                            algorithm_key="no_quantize")
    return manager.get_quantization_recipe()


class _RecordingRunner:
    """Runs a runner and keeps every signature's inputs (the calibration set)."""

    def __init__(self, inner: Runner) -> None:
        self.inner = inner
        self.inputs: dict[str, list[dict[str, np.ndarray]]] = {}

    def run(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.inputs.setdefault(signature, []).append(
            {k: np.ascontiguousarray(v, np.float32) for k, v in inputs.items()})
        return self.inner.run(signature, inputs)


def calibration_inputs(float_runner: Runner, specs: tuple[SignatureSpec, ...],
                       memory: MemoryQueueSpec | None, frames: np.ndarray,
                       ) -> dict[str, list[dict[str, np.ndarray]]]:
    """Each signature's inputs as the float32 model sees them on `frames` (memory included)."""
    recorder = _RecordingRunner(float_runner)
    run_frames(recorder, specs, memory, frames)
    return recorder.inputs


def quantize_tflite(float_path: Path, out_path: Path, mode: str,
                    calibration: dict[str, list[dict[str, np.ndarray]]] | None = None) -> None:
    """Write the `mode` variant of `float_path` to `out_path`."""
    from ai_edge_quantizer import quantizer

    engine = quantizer.Quantizer(str(float_path))
    engine.load_quantization_recipe(recipe(mode))
    result = None
    try:
        if engine.need_calibration:
            if not calibration:
                raise ExportError(f"{mode} quantization needs calibration frames")
            result = engine.calibrate(calibration, num_threads=2)
        quantized = engine.quantize(result, enable_progress_report=False).quantized_model
    except (ValueError, RuntimeError, KeyError) as err:
        raise ExportError(f"ai-edge-quantizer could not make the {mode} variant: {err}") from err
    if quantized is None:
        raise ExportError(f"ai-edge-quantizer returned no {mode} model")
    out_path.write_bytes(bytes(quantized))


def _logits(outputs: list[tuple[str, dict[str, np.ndarray]]],
            specs: tuple[SignatureSpec, ...]) -> list[np.ndarray]:
    """The logits [H, W, C] of every frame whose signature has them (not a VOS `init`)."""
    names = {s.name: next(t.name for t in s.outputs if t.role == "logits") for s in specs
             if any(t.role == "logits" for t in s.outputs)}
    return [result[names[signature]][0] for signature, result in outputs if signature in names]


def mean_iou(predicted: np.ndarray, reference: np.ndarray, num_classes: int) -> float:
    """Intersection over union per class, pooled over all frames, averaged over the classes
    present in either mask set."""
    ious = []
    for c in range(num_classes):
        a, b = predicted == c, reference == c
        union = np.count_nonzero(a | b)
        if union:
            ious.append(np.count_nonzero(a & b) / union)
    return float(np.mean(ious)) if ious else 1.0


@dataclass(frozen=True)
class SegmentationCheck:
    """The quantized variant against the float32 export (and a teacher) on real frames."""

    video: str
    frames: int
    argmax_agreement: float
    miou_vs_float32: float
    min_argmax_agreement: float
    teacher: str | None
    miou_vs_teacher: dict[str, float] | None  # {"float32": x, mode: y}
    float32_class_share: list[float]  # how much of the float32 masks each class covers
    per_frame_agreement: list[float]  # for confidence intervals over frames

    @property
    def passed(self) -> bool:
        return self.argmax_agreement >= self.min_argmax_agreement

    def to_json(self) -> dict[str, Any]:
        return {"video": self.video, "frames": self.frames,
                "argmax_agreement": round(self.argmax_agreement, 6),
                "miou_vs_float32": round(self.miou_vs_float32, 6),
                "min_argmax_agreement": self.min_argmax_agreement,
                "teacher": self.teacher,
                "miou_vs_teacher": ({k: round(v, 6) for k, v in self.miou_vs_teacher.items()}
                                    if self.miou_vs_teacher is not None else None),
                "float32_class_share": [round(s, 6) for s in self.float32_class_share],
                "per_frame_agreement": [round(a, 6) for a in self.per_frame_agreement],
                "passed": self.passed}


def segmentation_check(float_runner: Runner, quant_runner: Runner, mode: str,
                       specs: tuple[SignatureSpec, ...], memory: MemoryQueueSpec | None,
                       frames: np.ndarray, video: str, options: QuantizeOptions,
                       ) -> SegmentationCheck:
    """Argmax agreement and mIoU of the `mode` variant against float32, both run by the real
    runtime on the same frames; mIoU of each against the teacher's labels when one is given."""
    reference = np.stack([x.argmax(-1) for x in _logits(
        run_frames(float_runner, specs, memory, frames), specs)])
    logits = _logits(run_frames(quant_runner, specs, memory, frames), specs)
    quantized = np.stack([x.argmax(-1) for x in logits])
    classes = int(logits[0].shape[-1])
    against_teacher = None
    if options.teacher is not None:
        labels = np.stack([options.teacher.labels(f) for f in frames[-len(quantized):]])
        if labels.shape != reference.shape:
            raise UsageError(f"teacher {options.teacher.name} labels {labels.shape[1:]} frames, "
                             f"the student predicts {reference.shape[1:]}")
        against_teacher = {"float32": mean_iou(reference, labels, classes),
                           mode: mean_iou(quantized, labels, classes)}
    share = [float(np.mean(reference == c)) for c in range(classes)]
    per_frame = [float(np.mean(q == r)) for q, r in zip(quantized, reference)]
    return SegmentationCheck(video, len(frames), float(np.mean(quantized == reference)),
                             mean_iou(quantized, reference, classes), options.threshold,
                             options.teacher.name if options.teacher else None,
                             against_teacher, share, per_frame)


def quantization_json(options: QuantizeOptions, float_artifact: dict[str, Any],
                      calibration: dict[str, Any] | None, check: SegmentationCheck,
                      ) -> dict[str, Any]:
    """The manifest's `quantization` section."""
    try:
        version = metadata.version("ai-edge-quantizer")
    except metadata.PackageNotFoundError:
        version = "not installed"
    return {"mode": options.mode, "tool": f"ai-edge-quantizer {version}",
            "recipe": recipe(options.mode), **_DESCRIPTIONS[options.mode],
            "io_dtype": "float32", "calibration": calibration,
            "float32_reference": {k: float_artifact[k] for k in ("sha256", "size_bytes")},
            "sparse_updates": UPDATE_RULES[options.mode],
            "verification": check.to_json()}


def spread_indices(total: int, count: int) -> list[int]:
    """`count` frame indices spread evenly over `total` frames (all when fewer)."""
    if total <= count:
        return list(range(total))
    return [int(i) for i in np.linspace(0, total - 1, count).round()]
