"""MobileNetV2 feature extractor (Sandler et al. 2018), written here (no torchvision).

`features[i]` follows the usual indexing: 0 = stem conv (stride 2), 1..17 = inverted residual
blocks, 18 = the 1x1 conv to 1280 channels. Outputs by index (stride, channels):
1 (2, 16), 3 (4, 24), 6 (8, 32), 13 (16, 96), 16 (32, 160), 17 (32, 320), 18 (32, 1280).
`output_stride=16` keeps blocks 14.. at stride 16: block 14 runs at stride 1 and the depthwise
convs after it are dilated by 2 (the tensorflow/models DeepLab convention).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .blocks import conv_bn_relu

# (expansion t, output channels c, repeats n, first stride s), from the paper's Table 2.
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
LAST_CHANNELS = 1280


class InvertedResidual(nn.Module):
    """Expand 1x1 -> depthwise 3x3 -> linear 1x1, with a skip when shapes allow."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        stride: int,
        expansion: int,
        dilation: int = 1,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        hidden = in_channels * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(conv_bn_relu(in_channels, hidden, 1, eps=eps, activation=nn.ReLU6))
        layers.append(
            conv_bn_relu(
                hidden, hidden, 3, stride=stride, dilation=dilation, groups=hidden, eps=eps,
                activation=nn.ReLU6,
            )
        )
        layers.append(conv_bn_relu(hidden, out_channels, 1, eps=eps, activation=None))
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


def _block_plan(output_stride: int) -> list[tuple[int, int, int, int]]:
    """(expansion, out_channels, stride, dilation) for features[1..17]."""
    plan, current, rate = [], 2, 1
    for t, c, n, s in INVERTED_RESIDUAL_SETTING:
        for i in range(n):
            stride = s if i == 0 else 1
            dilation = rate
            if stride > 1 and current >= output_stride:
                stride, rate = 1, rate * stride
            else:
                current *= stride
            plan.append((t, c, stride, dilation))
    return plan


class MobileNetV2(nn.Module):
    """MobileNetV2 features truncated at `last_index`; returns the outputs at `out_indices`.

    Args:
        in_channels: Input channels (3 for RGB, 2 for MobileVOS mask inputs).
        last_index: Last `features` index built (13: stride 16, 17: 320 ch, 18: full).
        out_indices: Indices whose outputs `forward` returns, in that order.
        output_stride: 32 (ImageNet) or 16 (dilated, for dense prediction).
        eps: BatchNorm epsilon (1e-5 PyTorch, 1e-3 TensorFlow).
    """

    def __init__(
        self,
        in_channels: int = 3,
        *,
        last_index: int = 18,
        out_indices: Sequence[int] | None = None,
        output_stride: int = 32,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if not 0 <= last_index <= 18 or output_stride not in (16, 32):
            raise ValueError("MobileNetV2 needs 0 <= last_index <= 18 and output_stride 16 or 32")
        self.out_indices = tuple(out_indices) if out_indices is not None else (last_index,)
        if any(not 0 <= i <= last_index for i in self.out_indices):
            raise ValueError(f"out_indices {self.out_indices} must lie in 0..{last_index}")
        layers: list[nn.Module] = [
            conv_bn_relu(in_channels, 32, 3, stride=2, eps=eps, activation=nn.ReLU6)
        ]
        channels = 32
        for t, c, s, d in _block_plan(output_stride):
            layers.append(
                InvertedResidual(channels, c, stride=s, expansion=t, dilation=d, eps=eps)
            )
            channels = c
        layers.append(conv_bn_relu(channels, LAST_CHANNELS, 1, eps=eps, activation=nn.ReLU6))
        self.features = nn.Sequential(*layers[: last_index + 1])

    def forward(self, x: Tensor) -> list[Tensor]:
        outs = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.out_indices:
                outs.append(x)
        return [outs[sorted(self.out_indices).index(i)] for i in self.out_indices]


def channels_at(index: int) -> int:
    """Output channels of `features[index]`."""
    if index == 0:
        return 32
    if index == 18:
        return LAST_CHANNELS
    plan = _block_plan(32)
    return plan[index - 1][1]
