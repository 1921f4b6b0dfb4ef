"""Parameter and FLOP counts, and the `mobdistill info` report.

FLOPs come from `torch.utils.flop_counter.FlopCounterMode`, which counts convolutions and
matrix multiplies (mm/addmm/bmm) only; FLOPs = 2 * MACs. Models are built and run on the meta
device, so counting at 720x1280 takes milliseconds and allocates nothing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from . import registry
from .spec import ModelEntry, Reference

META = torch.device("meta")


@dataclass(frozen=True)
class ParamCount:
    total: int
    trainable: int


@dataclass(frozen=True)
class ReferenceCheck:
    """A reference figure from specs.md against the measured value."""

    label: str
    resolution: tuple[int, int]
    params: int
    params_target: int
    params_rel_tol: float
    flops: float | None = None
    flops_target: float | None = None
    flops_rel_tol: float | None = None
    macs_target: float | None = None
    macs_rel_tol: float | None = None
    passed: bool = True


@dataclass(frozen=True)
class ModelInfo:
    """What `mobdistill info` reports; `flops` maps signature name -> FLOPs (2 * MACs)."""

    model: str
    config: dict[str, Any]
    resolution: tuple[int, int]
    params_total: int
    params_trainable: int
    flops: dict[str, float]
    gmacs: dict[str, float]
    references: list[ReferenceCheck] = field(default_factory=list)
    schedule: dict[str, float] | None = None  # keyframe/delta models: see `schedule_flops`

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.references)


def count_params(model: nn.Module) -> ParamCount:
    """Total and trainable (requires_grad) parameter counts."""
    params = list(model.parameters())
    return ParamCount(
        sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)
    )


def count_flops(fn: Callable[..., Any], **inputs: Any) -> int:
    """FLOPs (convs and matmuls, 2 per MAC) of one call `fn(**inputs)`."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn(**inputs)
    return int(counter.get_total_flops())


def build_meta(entry: ModelEntry, config: Any) -> nn.Module:
    """Builds `entry` on the meta device (shapes only, no memory)."""
    with META:
        return entry.build(config)


def signature_flops(entry: ModelEntry, config: Any, height: int, width: int) -> dict[str, int]:
    """FLOPs of each deployment signature's method at (H, W)."""
    model = build_meta(entry, config)
    return {
        sig.name: count_flops(
            getattr(model, sig.method), **registry.sample_inputs(sig, device=META)
        )
        for sig in entry.signatures(config, height, width)
    }


def schedule_flops(keyframe: float, delta: float, period: int) -> dict[str, float]:
    """FLOPs of a keyframe schedule: a keyframe every `period` frames, delta frames between;
    the average per frame over a period and its reduction against running keyframes only."""
    average = (keyframe + (period - 1) * delta) / period
    return {"period": period, "keyframe_flops": keyframe, "delta_flops": delta,
            "average_flops": average, "reduction": keyframe / average}


def _within(measured: float, target: float, rel_tol: float) -> bool:
    return abs(measured - target) <= rel_tol * target


def check_reference(entry: ModelEntry, reference: Reference) -> ReferenceCheck:
    """Measures a reference's configuration and compares with its figures."""
    config = registry.reference_config(entry, reference)
    params = count_params(build_meta(entry, config)).total
    passed = _within(params, reference.params, reference.params_rel_tol)
    flops = None
    if reference.flops is not None or reference.macs is not None:
        flops = float(next(iter(signature_flops(entry, config, *reference.resolution).values())))
        if reference.flops is not None:
            passed &= _within(flops, reference.flops, reference.flops_rel_tol)
        if reference.macs is not None:
            passed &= _within(flops / 2, reference.macs, reference.macs_rel_tol)
    return ReferenceCheck(
        label=reference.label,
        resolution=reference.resolution,
        params=params,
        params_target=reference.params,
        params_rel_tol=reference.params_rel_tol,
        flops=flops,
        flops_target=reference.flops,
        flops_rel_tol=reference.flops_rel_tol if reference.flops is not None else None,
        macs_target=reference.macs,
        macs_rel_tol=reference.macs_rel_tol if reference.macs is not None else None,
        passed=passed,
    )


def describe(entry: ModelEntry, config: Any, resolution: tuple[int, int]) -> ModelInfo:
    """Parameters and per-signature FLOPs at `resolution`, plus the applicable references.

    A reference applies when `config` equals the configuration it was measured with (fields
    that do not change the network, such as the queue length, are ignored).
    """
    counts = count_params(build_meta(entry, config))
    flops = signature_flops(entry, config, *resolution)
    checks = [
        check_reference(entry, ref)
        for ref in entry.references
        if registry.reference_applies(entry, ref, config)
    ]
    schedule = entry.schedule(config)
    return ModelInfo(
        model=entry.name,
        config=dataclasses.asdict(config),
        resolution=resolution,
        params_total=counts.total,
        params_trainable=counts.trainable,
        flops={name: float(value) for name, value in flops.items()},
        gmacs={name: value / 2e9 for name, value in flops.items()},
        references=checks,
        schedule=None if schedule is None else schedule_flops(
            flops[schedule.keyframe_signature], flops[schedule.delta_signature],
            schedule.period),
    )
