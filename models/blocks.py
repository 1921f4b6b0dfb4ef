"""Building blocks shared by the students.

Naming: a trailing number is the stride w.r.t. the input frame (f4, f8, f16); shapes in trailing
comments are NCHW. Every block here converts with litert-torch: broadcasts are done by
elementwise ops or bilinear resizes, never by `expand` (it lowers to a BROADCAST_TO that fails in
the TFLite runtime).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Normalize(nn.Module):
    """Maps raw camera RGB in [0, 255] to `(x / 255 - mean) / std` inside the graph.

    Args:
        mean: Per-channel mean on the [0, 1] scale.
        std: Per-channel standard deviation on the [0, 1] scale.
    """

    scale: Tensor  # buffers
    shift: Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.register_buffer("scale", 1.0 / (255.0 * std_t), persistent=False)
        self.register_buffer("shift", mean_t / std_t, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale - self.shift


def conv_bn_relu(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    *,
    stride: int = 1,
    dilation: int = 1,
    groups: int = 1,
    eps: float = 1e-5,
    activation: type[nn.Module] | None = nn.ReLU,
) -> nn.Sequential:
    """Conv (no bias, 'same'-style padding) -> BatchNorm -> activation (None: linear)."""
    padding = dilation * (kernel_size // 2)
    layers: list[nn.Module] = [
        nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias=False
        ),
        nn.BatchNorm2d(out_channels, eps=eps),
    ]
    if activation is not None:
        layers.append(activation())
    return nn.Sequential(*layers)


def resize(x: Tensor, size: Sequence[int], *, align_corners: bool = False) -> Tensor:
    """Bilinear resize of an NCHW tensor to `size` (H, W)."""
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=align_corners)


class ResBlock(nn.Module):
    """Pre-activation residual block: x' + conv3x3(relu(conv3x3(relu(x)))).

    Args:
        in_channels: Input channels.
        out_channels: Output channels; when different, x' is a 1x1 conv of x, else x.
    """

    def __init__(self, in_channels: int, out_channels: int | None = None) -> None:
        super().__init__()
        out_channels = out_channels or in_channels
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.downsample = (
            nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None
        )

    def forward(self, x: Tensor) -> Tensor:
        r = self.conv2(F.relu(self.conv1(F.relu(x))))
        if self.downsample is not None:
            x = self.downsample(x)
        return x + r


class CBAM(nn.Module):
    """Convolutional block attention: a channel gate then a spatial gate (7x7 conv).

    Args:
        channels: Channels of the input.
        reduction: Bottleneck ratio of the channel gate's MLP (done as 1x1 convs).
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, channels, 1)
        )
        self.spatial = nn.Conv2d(2, 1, 7, padding=3)

    def forward(self, x: Tensor) -> Tensor:
        avg = x.mean(dim=(2, 3), keepdim=True)  # B, C, 1, 1
        peak = x.amax(dim=(2, 3), keepdim=True)  # B, C, 1, 1
        x = x * torch.sigmoid(self.mlp(avg) + self.mlp(peak))
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], 1)  # B,2,H,W
        return x * torch.sigmoid(self.spatial(pooled))


class FeatureFusionBlock(nn.Module):
    """STCN value fusion: concat -> ResBlock -> CBAM (residual) -> ResBlock.

    Args:
        in_channels: Channels of the concatenated input.
        out_channels: Output channels (the value dimension).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.block1 = ResBlock(in_channels, out_channels)
        self.attention = CBAM(out_channels)
        self.block2 = ResBlock(out_channels, out_channels)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        x = self.block1(torch.cat([x, y], 1))
        return self.block2(x + self.attention(x))


class ImagePooling(nn.Module):
    """ASPP image-pooling branch: global mean -> 1x1 conv-bn-relu -> bilinear resize back.

    The 1x1 map is broadcast with a bilinear resize, not `expand` (TFLite-safe).
    """

    def __init__(self, in_channels: int, out_channels: int, *, eps: float = 1e-5) -> None:
        super().__init__()
        self.conv = conv_bn_relu(in_channels, out_channels, 1, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        pooled = self.conv(x.mean(dim=(2, 3), keepdim=True))  # B, C, 1, 1
        return resize(pooled, x.shape[-2:])


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling.

    Branches: 1x1, one 3x3 per atrous rate, image pooling; concat -> 1x1 projection.
    `rates=()` gives DeepLab's mobile variant (1x1 + image pooling only).

    Args:
        in_channels: Input channels.
        out_channels: Channels of each branch and of the projection.
        rates: Atrous rates of the 3x3 branches.
        eps: BatchNorm epsilon.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        rates: Sequence[int] = (6, 12, 18),
        *,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        branches = [conv_bn_relu(in_channels, out_channels, 1, eps=eps)]
        branches += [
            conv_bn_relu(in_channels, out_channels, 3, dilation=r, eps=eps) for r in rates
        ]
        self.branches = nn.ModuleList(branches)
        self.pooling = ImagePooling(in_channels, out_channels, eps=eps)
        total = out_channels * (len(branches) + 1)
        self.project = conv_bn_relu(total, out_channels, 1, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        outs = [branch(x) for branch in self.branches] + [self.pooling(x)]
        return self.project(torch.cat(outs, 1))
