"""Delta-distilled DeepLabV3-MobileNetV2 (Delta Distillation, seed 003, Algorithms 1-2).

The original network (`base`, exactly `deeplabv3_mnv2.DeepLabV3MobileNetV2`) is cut into
contiguous *units* of MobileNetV2 blocks, `features[a..b]`. For each unit a cheap student
g_phi(x_t, x_{t-1}) estimates the change of the unit's output between consecutive frames:

    keyframe (every T-th frame):  z_t = f(x_t)                 (the original unit)
    delta frame:                  z_t = z_{t-1} + g(x_t, x_{t-1})

and the next unit's input is this unit's z_t, so on a delta frame the units after the first run
on estimated features (Algorithm 2). Layers before the first unit (stem) and after the last
(ASPP head, classifier) run on every frame. The seed's g takes both inputs; here it sees their
difference, g(x_t, x_{t-1}) = s(x_t - x_{t-1}), so a static scene changes nothing (g(x, x) = 0:
no biases). specs.md §4 describes deltas against the keyframe (x_t - x_0, z_0 + dz); the seed's
Algorithms 1-2 use consecutive frames, which is what is built here.

The student s mirrors the unit's spatial footprint with a non-linear channel reduction (the
supplement's §B.1 student, compression gamma = `reduction`): conv kx1 (stride, dilation) to
out/gamma channels, conv 1xk, ReLU, 1x1 back to the unit's output channels.

Deployment: two methods, exported as signatures of one model (no `forward`).
- `keyframe(frame) -> {logits, <state>...}` runs the original network and returns the state.
- `delta(frame, <state>_prev...) -> {logits, <state>...}` runs the students on the carried state.
State tensors are named after the feature map they hold: `features{a-1}` (the first unit's
input) and `features{b}` (each unit's output); the delta input of `featuresN` is
`featuresN_prev`. Their carry is declared in the manifest (`schedule`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import deeplabv3_mnv2
from .blocks import resize
from .mobilenetv2 import channels_at

LAST_BLOCK = deeplabv3_mnv2.LAST_INDEX
PREVIOUS = "_prev"  # suffix of a carried state's delta input


@dataclass(frozen=True)
class Config:
    """Delta-distilled DeepLabV3-MobileNetV2 hyper-parameters.

    Attributes:
        num_classes: Output classes (as DeepLab).
        aspp_channels: Width of the ASPP branches and projection (as DeepLab).
        bn_eps: BatchNorm epsilon (as DeepLab).
        units: Distilled units as (first, last) MobileNetV2 block indices, contiguous.
        reduction: Student channel compression gamma (out_channels / gamma inside).
        kernel_size: Student spatial kernel k (a kx1 then a 1xk conv).
        keyframe_period: T, the original network runs on every T-th frame.
    """

    num_classes: int = 19
    aspp_channels: int = 256
    bn_eps: float = 1e-3
    units: tuple[tuple[int, int], ...] = ((4, 6), (7, 10), (11, 13), (14, 15), (16, 17))
    reduction: int = 4
    kernel_size: int = 3
    keyframe_period: int = 3

    def __post_init__(self) -> None:
        object.__setattr__(self, "units", tuple(tuple(u) for u in self.units))
        if self.num_classes < 1 or self.aspp_channels < 1:
            raise ValueError("needs num_classes >= 1 and aspp_channels >= 1")
        if self.reduction < 1 or self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError("needs reduction >= 1 and an odd kernel_size >= 1")
        if self.keyframe_period < 1:
            raise ValueError("needs keyframe_period >= 1")
        _check_units(self.units)

    def deeplab(self) -> deeplabv3_mnv2.Config:
        """The configuration of the original network."""
        return deeplabv3_mnv2.Config(self.num_classes, self.aspp_channels, self.bn_eps)


def _check_units(units: tuple[tuple[int, ...], ...]) -> None:
    if not units:
        raise ValueError("needs at least one distilled unit")
    for (first, last) in units:
        if not 1 <= first <= last <= LAST_BLOCK:
            raise ValueError(f"unit ({first}, {last}) must lie in blocks 1..{LAST_BLOCK}")
    for (_, last), (first, _) in zip(units, units[1:]):
        if first != last + 1:
            raise ValueError(f"units must be contiguous: one ends at block {last}, the next "
                             f"starts at {first}")


def paper_config() -> Config:
    """The AMS student with five distilled units from block 4 on (19 classes), T = 3."""
    return Config()


def tiny_config() -> Config:
    """DeepLab's tiny head (3 classes, ASPP 16) with two units, for fast tests."""
    return Config(num_classes=3, aspp_channels=16, units=((7, 13), (14, 17)))


def state_names(config: Config) -> tuple[str, ...]:
    """The carried feature maps: the first unit's input, then every unit's output."""
    first = config.units[0][0]
    return (f"features{first - 1}", *(f"features{last}" for _, last in config.units))


def state_shapes(config: Config, height: int, width: int) -> dict[str, tuple[int, int, int]]:
    """(h, w, channels) of each carried feature map at a (height, width) frame, by name."""
    with torch.device("meta"):
        maps = DeltaDeepLab(config).features(torch.empty(1, 3, height, width))
    return {name: (m.shape[2], m.shape[3], m.shape[1])
            for name, m in zip(state_names(config), maps)}


class DeltaStudent(nn.Module):
    """g_phi(x_t, x_{t-1}): the estimated change of a unit's output, from the input change."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int, dilation: int,
                 reduction: int, kernel_size: int) -> None:
        super().__init__()
        hidden = max(1, out_channels // reduction)
        pad = dilation * (kernel_size // 2)
        self.vertical = nn.Conv2d(in_channels, hidden, (kernel_size, 1), (stride, 1), (pad, 0),
                                  (dilation, 1), bias=False)
        self.horizontal = nn.Conv2d(hidden, hidden, (1, kernel_size), (1, stride), (0, pad),
                                    (1, dilation), bias=False)
        self.expand = nn.Conv2d(hidden, out_channels, 1, bias=False)

    def forward(self, current: Tensor, previous: Tensor) -> Tensor:
        return self.expand(F.relu(self.horizontal(self.vertical(current - previous))))


def _unit_geometry(blocks: nn.Sequential, first: int, last: int) -> tuple[int, int]:
    """(total stride, largest dilation) of blocks first..last, read off their depthwise convs."""
    stride, dilation = 1, 1
    for index in range(first, last + 1):
        depthwise = next(m for m in blocks[index].modules()
                         if isinstance(m, nn.Conv2d) and m.groups > 1)
        stride *= depthwise.stride[0]
        dilation = max(dilation, depthwise.dilation[0])
    return stride, dilation


class DeltaDeepLab(nn.Module):
    """DeepLabV3-MobileNetV2 with delta-distilled units. Deployment: `keyframe` and `delta`."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        self.base = deeplabv3_mnv2.DeepLabV3MobileNetV2(config.deeplab())
        blocks = self.base.backbone.features
        students = []
        for first, last in config.units:
            stride, dilation = _unit_geometry(blocks, first, last)
            students.append(DeltaStudent(channels_at(first - 1), channels_at(last),
                                         stride=stride, dilation=dilation,
                                         reduction=config.reduction,
                                         kernel_size=config.kernel_size))
        self.students = nn.ModuleList(students)
        self.state = state_names(config)

    def stem(self, frame: Tensor) -> Tensor:
        """The layers before the first unit (run on every frame): the first unit's input."""
        x = self.base.normalize(frame)
        for block in list(self.base.backbone.features)[: self.config.units[0][0]]:
            x = block(x)
        return x

    def unit(self, index: int, x: Tensor) -> Tensor:
        """The original blocks of unit `index` (f_theta of Algorithm 1)."""
        first, last = self.config.units[index]
        for block in list(self.base.backbone.features)[first : last + 1]:
            x = block(x)
        return x

    def head(self, features: Tensor, size: Sequence[int]) -> Tensor:
        """ASPP, classifier and the bilinear resize to the frame (run on every frame)."""
        logits16 = self.base.classifier(self.base.aspp(features))
        return resize(logits16, size, align_corners=True)

    def features(self, frame: Tensor) -> list[Tensor]:
        """The exact state of `frame`: [first unit's input, each unit's output] (NCHW)."""
        maps = [self.stem(frame)]
        for index in range(len(self.students)):
            maps.append(self.unit(index, maps[-1]))
        return maps

    def keyframe(self, frame: Tensor) -> dict[str, Tensor]:
        """Runs the original network on a keyframe.

        Args:
            frame: [1, 3, H, W] float32 RGB in [0, 255].

        Returns:
            {"logits": [1, K, H, W], and each state tensor (NCHW) by name}.
        """
        maps = self.features(frame)
        return {"logits": self.head(maps[-1], frame.shape[-2:]), **dict(zip(self.state, maps))}

    def delta(self, frame: Tensor, **previous: Tensor) -> dict[str, Tensor]:
        """Updates the carried state with the students (a frame between keyframes).

        Args:
            frame: [1, 3, H, W] float32 RGB in [0, 255].
            previous: The state of the previous frame, `<name>_prev` for each state name.

        Returns:
            {"logits": [1, K, H, W], and the new state (NCHW) by name}.
        """
        x = self.stem(frame)
        maps = [x]
        for index, student in enumerate(self.students):
            x_prev = previous[self.state[index] + PREVIOUS]
            z_prev = previous[self.state[index + 1] + PREVIOUS]
            maps.append(z_prev + student(maps[-1], x_prev))
        return {"logits": self.head(maps[-1], frame.shape[-2:]), **dict(zip(self.state, maps))}

    def forward(self, frame: Tensor) -> Tensor:
        """The original network's logits (every frame a keyframe)."""
        return self.base(frame)


def run_schedule(model: DeltaDeepLab, frames: list[Tensor], period: int,
                 ) -> list[dict[str, Tensor]]:
    """Python reference runner of Algorithm 2: `keyframe` on frames 0, T, 2T, ..., `delta` with
    the previous frame's state on the others. Differentiable (training runs it under grad).

    Args:
        model: The delta-distilled model.
        frames: [1, 3, H, W] float32 RGB frames in [0, 255].
        period: T.

    Returns:
        Each frame's outputs: {"logits": [1, K, H, W], and the state by name}.
    """
    if period < 1:
        raise ValueError("the keyframe period must be >= 1")
    outputs: list[dict[str, Tensor]] = []
    for index, frame in enumerate(frames):
        if index % period == 0:
            outputs.append(model.keyframe(frame))
        else:
            previous = {name + PREVIOUS: outputs[-1][name] for name in model.state}
            outputs.append(model.delta(frame, **previous))
    return outputs


def build(config: Config) -> DeltaDeepLab:
    """Builds a randomly initialised delta-distilled DeepLab in eval mode.

    Convolutions get He (fan-in) initialisation: PyTorch's default shrinks activations layer by
    layer when BatchNorm holds its initial statistics, leaving a random network's features near
    1e-8, which would make checks of the state carried between frames vacuous.
    """
    model = DeltaDeepLab(config)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model.eval()
