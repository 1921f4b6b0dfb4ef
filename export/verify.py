"""Numerical verification: each exported artifact, run in its real runtime on real video
frames, against the PyTorch model. Stateful models run a whole sequence, each runtime carrying
its own memory, so errors that accumulate through the memory queue are caught too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from mobdistill.export.deploy import SignatureModule, run_torch
from mobdistill.models.memory_queue import MemoryQueue
from mobdistill.models.spec import KeyframeScheduleSpec, MemoryQueueSpec, SignatureSpec

STATELESS_SIGNATURE = "serving_default"


@dataclass(frozen=True)
class Tolerance:
    """max_abs_err must stay below rel_max_abs * max(1, max|reference|)."""

    rel_max_abs: float = 1e-3
    min_argmax_agreement: float = 0.99


@dataclass(frozen=True)
class OutputCheck:
    format: str
    signature: str
    output: str
    max_abs_err: float
    mean_abs_err: float
    reference_max_abs: float
    argmax_agreement: float | None
    passed: bool


@dataclass(frozen=True)
class VerifyReport:
    video: str
    frames: int
    tolerance: Tolerance
    results: list[OutputCheck] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.results)

    def failures(self) -> list[OutputCheck]:
        return [check for check in self.results if not check.passed]

    def to_json(self) -> dict:
        return asdict(self)


class Runner(Protocol):
    def run(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class TorchRunner:
    def __init__(self, modules: dict[str, SignatureModule]) -> None:
        self._modules = modules

    def run(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return run_torch(self._modules[signature], inputs)


class TfliteRunner:
    """ai_edge_litert's Interpreter through its signature runners (XNNPACK on CPU)."""

    def __init__(self, path: Path, *, num_threads: int = 2) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_path=str(path), num_threads=num_threads)

    def run(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        runner = self._interpreter.get_signature_runner(signature)
        return {k: np.array(v) for k, v in runner(**_contiguous(inputs)).items()}


class OnnxRunner:
    """onnxruntime's CPU provider, one session per signature file."""

    def __init__(self, paths: dict[str, Path], *, num_threads: int = 2) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads
        self._sessions = {
            name: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            for name, path in paths.items()
        }

    def run(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        session = self._sessions[signature]
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, _contiguous(inputs))))


def _contiguous(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in inputs.items()}


def object_masks(height: int, width: int, num_objects: int) -> np.ndarray:
    """First-frame masks [1, H, W, N]: one ellipse per object, side by side."""
    masks = np.zeros((1, height, width, num_objects), np.float32)
    yy, xx = np.mgrid[0:height, 0:width]
    for k in range(num_objects):
        cx = width * (k + 1) / (num_objects + 1)
        rx, ry = width / (2.5 * (num_objects + 1)), height / 4
        masks[0, :, :, k] = (((xx - cx) / rx) ** 2 + ((yy - height / 2) / ry) ** 2 <= 1)
    return masks


def run_frames(
    runner: Runner,
    signatures: tuple[SignatureSpec, ...],
    memory: MemoryQueueSpec | None,
    frames: np.ndarray,
    *,
    schedule: KeyframeScheduleSpec | None = None,
) -> list[tuple[str, dict[str, np.ndarray]]]:
    """Run a frame sequence; returns (signature, outputs) per frame.

    Stateless: `serving_default` on every frame. Stateful: `init` on frame 0 with object masks,
    then `step` on each later frame with the memory queue carried as the manifest specifies.
    Keyframe schedule: `keyframe` on every period-th frame, `delta` with the carried state between.
    """
    frames = frames.astype(np.float32)
    if schedule is not None:
        return run_schedule(runner, schedule, frames)
    by_name = {s.name: s for s in signatures}
    if memory is None:
        return [(STATELESS_SIGNATURE, runner.run(STATELESS_SIGNATURE, {"frame": f[None]}))
                for f in frames]
    init = by_name[memory.init_signature]
    mask_spec = next(t for t in init.inputs if t.role == "mask")
    _, height, width, objects = mask_spec.shape
    first = runner.run(init.name, {"frame": frames[0][None],
                                   mask_spec.name: object_masks(height, width, objects)})
    queue = MemoryQueue(memory.queue_length)
    queue.reset({out: first[out] for out, _ in memory.carry})
    results = [(init.name, first)]
    for frame in frames[1:]:
        stacked = queue.stacked()
        inputs = {"frame": frame[None], **{inp: stacked[out] for out, inp in memory.carry}}
        outputs = runner.run(memory.step_signature, inputs)
        queue.push({out: outputs[out] for out, _ in memory.carry})
        results.append((memory.step_signature, outputs))
    return results


def run_schedule(runner: Runner, schedule: KeyframeScheduleSpec, frames: np.ndarray,
                 period: int | None = None) -> list[tuple[str, dict[str, np.ndarray]]]:
    """Algorithm 2 of Delta Distillation: frame i runs `keyframe` when i % period == 0, else
    `delta` fed with the previous frame's carried outputs (period: the schedule's own unless
    given)."""
    period = period or schedule.period
    results: list[tuple[str, dict[str, np.ndarray]]] = []
    for index, frame in enumerate(frames.astype(np.float32)):
        if index % period == 0:
            name, inputs = schedule.keyframe_signature, {"frame": frame[None]}
        else:
            carried = results[-1][1]
            name = schedule.delta_signature
            inputs = {"frame": frame[None], **{inp: carried[out] for out, inp in schedule.carry}}
        results.append((name, runner.run(name, inputs)))
    return results


def compare(
    fmt: str,
    reference: list[tuple[str, dict[str, np.ndarray]]],
    candidate: list[tuple[str, dict[str, np.ndarray]]],
    signatures: tuple[SignatureSpec, ...],
    tolerance: Tolerance,
) -> list[OutputCheck]:
    """One OutputCheck per (signature, output), aggregated over the frames it ran on."""
    roles = {(s.name, t.name): t.role for s in signatures for t in s.outputs}
    errors: dict[tuple[str, str], list[tuple[float, float, float, float | None]]] = {}
    for (signature, ref), (_, got) in zip(reference, candidate):
        for name, ref_value in ref.items():
            diff = np.abs(got[name].astype(np.float64) - ref_value)
            agreement = None
            if roles[(signature, name)] == "logits":
                agreement = float(np.mean(got[name].argmax(-1) == ref_value.argmax(-1)))
            errors.setdefault((signature, name), []).append(
                (float(diff.max()), float(diff.mean()), float(np.abs(ref_value).max()), agreement))
    checks = []
    for (signature, name), rows in errors.items():
        max_err = max(r[0] for r in rows)
        ref_max = max(r[2] for r in rows)
        agreements = [r[3] for r in rows if r[3] is not None]
        agreement = float(np.mean(agreements)) if agreements else None
        passed = max_err <= tolerance.rel_max_abs * max(1.0, ref_max) and (
            agreement is None or agreement >= tolerance.min_argmax_agreement)
        checks.append(OutputCheck(fmt, signature, name, max_err,
                                  float(np.mean([r[1] for r in rows])), ref_max, agreement, passed))
    return checks
