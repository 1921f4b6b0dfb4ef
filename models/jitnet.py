"""JITNet, the online-distillation student of Mullapudi et al. (specs.md §1.1).

Naming: a trailing number is the stride w.r.t. the input frame (f4 = 1/4 resolution).
Widths scale with the multiplier m (paper: m=0.5, units u=1). Encoder units are pre-activation
residual units with a factorised 1x3/3x1 tail; the decoder upsamples with bilinear resizes
(align_corners=True) to the encoder skip sizes, so any input size works (no stride constraint
beyond 32 for equal shapes). Input: NCHW float32 RGB in [0, 255]; output: logits NCHW at the
input resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .blocks import IMAGENET_MEAN, IMAGENET_STD, Normalize, conv_bn_relu, resize

ENCODER_DEPTHS = (128, 128, 256)
DECODER_DEPTHS = (256, 128, 64)


@dataclass(frozen=True)
class Config:
    """JITNet hyper-parameters.

    Attributes:
        width_multiplier: Channel multiplier m.
        units: Residual units per block u.
        num_classes: Output classes (23 in the paper's LVS setting).
        bn_eps: BatchNorm epsilon.
    """

    width_multiplier: float = 0.5
    units: int = 1
    num_classes: int = 23
    bn_eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.width_multiplier <= 0 or self.units < 1 or self.num_classes < 1:
            raise ValueError("JITNet needs width_multiplier > 0, units >= 1, num_classes >= 1")


def paper_config() -> Config:
    """m=0.5, u=1, 23 classes: the configuration of the paper's experiments."""
    return Config()


def tiny_config() -> Config:
    """Very narrow widths for fast tests."""
    return Config(width_multiplier=0.0625, units=1, num_classes=3)


class Unit(nn.Module):
    """Pre-activation unit: shortcut(x) + conv3x1(conv1x3(relu(bn(conv3x3(relu(bn(x))))))).

    The shortcut is a strided 1x1 max-pool of x when channels are unchanged, else a strided
    1x1 conv (with bias) of the activated input.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, eps: float) -> None:
        super().__init__()
        self.pre = nn.Sequential(nn.BatchNorm2d(in_channels, eps=eps), nn.ReLU())
        self.conv = conv_bn_relu(in_channels, out_channels, 3, stride=stride, eps=eps)
        self.conv1x3 = nn.Conv2d(out_channels, out_channels, (1, 3), padding=(0, 1))
        self.conv3x1 = nn.Conv2d(out_channels, out_channels, (3, 1), padding=(1, 0))
        self.project = (
            nn.Conv2d(in_channels, out_channels, 1, stride=stride)
            if in_channels != out_channels
            else None
        )
        self.pool = nn.MaxPool2d(1, stride) if stride > 1 and self.project is None else None

    def forward(self, x: Tensor) -> Tensor:
        p = self.pre(x)
        r = self.conv3x1(self.conv1x3(self.conv(p)))
        if self.project is not None:
            return self.project(p) + r
        return (self.pool(x) if self.pool is not None else x) + r


def _units(
    in_channels: int, out_channels: int, units: int, eps: float, stride: int
) -> nn.Sequential:
    """u units; the last one carries `stride` (encoder) or all run at stride 1 (decoder)."""
    layers, channels = [], in_channels
    for i in range(units):
        layers.append(Unit(channels, out_channels, stride if i == units - 1 else 1, eps))
        channels = out_channels
    return nn.Sequential(*layers)


def _min_width(num_classes: int) -> int:
    return 32 if num_classes > 16 else 16 if num_classes > 8 else 8


class JITNet(nn.Module):
    """JITNet segmentation student. `forward(frame) -> logits`."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        m, u, eps = config.width_multiplier, config.units, config.bn_eps
        low = _min_width(config.num_classes)
        enc = [max(int(d * m), 8) for d in ENCODER_DEPTHS]
        dec = [max(int(d * m), low) for d in DECODER_DEPTHS]
        self.normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD)
        stem1, stem2 = max(int(16 * m), 8), max(int(64 * m), 8)
        self.stem = nn.Sequential(
            conv_bn_relu(3, stem1, 3, stride=2, eps=eps),
            conv_bn_relu(stem1, stem2, 3, stride=2, eps=eps),
        )
        self.enc8 = _units(stem2, enc[0], u, eps, stride=2)
        self.enc16 = _units(enc[0], enc[1], u, eps, stride=2)
        self.enc32 = _units(enc[1], enc[2], u, eps, stride=2)
        self.dec32 = _units(enc[2], dec[0], u, eps, stride=1)
        self.dec16 = _units(enc[1] + dec[0], dec[1], u, eps, stride=1)
        self.dec8 = _units(enc[0] + dec[1], dec[2], u, eps, stride=1)
        head1, head2 = max(int(64 * m), low), max(int(16 * m), low)
        self.head = nn.Sequential(
            conv_bn_relu(dec[2], head1, 3, eps=eps), conv_bn_relu(head1, head2, 3, eps=eps)
        )
        self.classifier = nn.Conv2d(head2, config.num_classes, 1)

    def forward(self, frame: Tensor) -> Tensor:
        """Segments one frame.

        Args:
            frame: [B, 3, H, W] float32 RGB in [0, 255].

        Returns:
            Logits [B, num_classes, H, W].
        """
        size = frame.shape[-2:]
        f4 = self.stem(self.normalize(frame))  # 1/4, 64m
        f8 = self.enc8(f4)  # 1/8, 128m
        f16 = self.enc16(f8)  # 1/16, 128m
        f32 = self.enc32(f16)  # 1/32, 256m
        x = resize(self.dec32(f32), f16.shape[-2:], align_corners=True)  # 1/16, 256m
        x = resize(self.dec16(torch.cat([f16, x], 1)), f8.shape[-2:], align_corners=True)  # 1/8
        x = resize(self.dec8(torch.cat([f8, x], 1)), f4.shape[-2:], align_corners=True)  # 1/4, 64m
        half = ((size[0] + 1) // 2, (size[1] + 1) // 2)
        x = self.head(resize(x, half, align_corners=True))  # 1/2, 16m
        return self.classifier(resize(x, size, align_corners=True))  # 1/1, num_classes


def build(config: Config) -> JITNet:
    """Builds a randomly initialised JITNet in eval mode."""
    return JITNet(config).eval()
