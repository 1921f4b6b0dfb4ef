"""Typed contract between models/, export/ and runtime/: what a student is and how it deploys.

Shapes in `TensorSpec` are deployment shapes: image-like tensors are NHWC (what a camera app
feeds), everything else is passed through unchanged ("raw"). PyTorch modules work in NCHW;
export/ inserts the permutes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from torch import nn

Layout = Literal["NHWC", "raw"]
Role = Literal["frame", "mask", "memory", "logits", "state"]


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    layout: Layout
    role: Role
    dtype: str = "float32"


@dataclass(frozen=True)
class SignatureSpec:
    """One deployment graph: `method` of the nn.Module, exported as signature `name`."""

    name: str
    method: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


@dataclass(frozen=True)
class Preprocessing:
    """What the exported graph expects; normalisation happens inside the graph."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_range: tuple[float, float] = (0.0, 255.0)
    channel_order: str = "RGB"


@dataclass(frozen=True)
class MemoryQueueSpec:
    """MobileVOS memory: slot 0 = first frame, then a FIFO of the last Q-1 frames.

    Each `carry` pair names a per-frame output (leading dim 1) of both signatures and the step
    input that holds Q of them stacked along axis 0. Until Q frames exist, the oldest frame's
    entry is repeated: a repeated memory frame leaves the softmax readout unchanged.
    """

    queue_length: int
    init_signature: str = "init"
    step_signature: str = "step"
    carry: tuple[tuple[str, str], ...] = (("key", "memory_keys"), ("value", "memory_values"))


@dataclass(frozen=True)
class KeyframeScheduleSpec:
    """Delta distillation's schedule (Algorithm 2): `keyframe` on every `period`-th frame
    (frame 0 first), `delta` on the others.

    Each `carry` pair names an output of both signatures and the `delta` input that takes its
    value from the previous frame, whichever signature ran on it. `period` is the one the model
    was trained for; a runtime may choose another (a keyframe is always exact).
    """

    period: int
    carry: tuple[tuple[str, str], ...]
    keyframe_signature: str = "keyframe"
    delta_signature: str = "delta"


@dataclass(frozen=True)
class Reference:
    """A figure from specs.md that `mobdistill info` must reproduce."""

    label: str
    config_overrides: dict[str, Any]
    resolution: tuple[int, int]
    params: int
    params_rel_tol: float
    flops: float | None = None  # FLOPs = 2 * MACs
    flops_rel_tol: float = 0.05
    macs: float | None = None
    macs_rel_tol: float = 0.06


@dataclass(frozen=True)
class ModelEntry:
    name: str
    summary: str
    config_type: type
    paper_config: Callable[[], Any]
    tiny_config: Callable[[], Any]
    build: Callable[[Any], nn.Module]
    signatures: Callable[[Any, int, int], tuple[SignatureSpec, ...]]
    default_resolution: tuple[int, int]
    tiny_resolution: tuple[int, int]
    stride: int
    preprocessing: Preprocessing
    memory: Callable[[Any], MemoryQueueSpec | None] = lambda config: None
    schedule: Callable[[Any], KeyframeScheduleSpec | None] = lambda config: None
    references: tuple[Reference, ...] = field(default_factory=tuple)
