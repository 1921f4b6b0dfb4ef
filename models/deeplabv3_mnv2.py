"""DeepLabV3-MobileNetV2, the AMS student (specs.md §1.3).

Naming: a trailing number is the stride w.r.t. the input frame (f16 = 1/16 resolution).
MobileNetV2 (depth 1.0) to `features[17]` (320 channels) at output stride 16; ASPP with two
branches only (1x1 and image pooling), a 1x1 projection and 1x1 logits, bilinearly resized to
the input size. Follows the tensorflow/models export: BatchNorm eps 1e-3 (TF's default, not
PyTorch's 1e-5) and input normalisation x*2/255 - 1, i.e. mean = std = 0.5 on the [0, 1] scale.
The TF graph pads 256x512 to 257x513 before the network; we feed the frame as is (the
reference GMACs are quoted at 257x513).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from .blocks import ASPP, Normalize, resize
from .mobilenetv2 import MobileNetV2, channels_at

TF_MEAN = (0.5, 0.5, 0.5)
TF_STD = (0.5, 0.5, 0.5)
LAST_INDEX = 17


@dataclass(frozen=True)
class Config:
    """DeepLabV3-MobileNetV2 hyper-parameters.

    Attributes:
        num_classes: Output classes (19 Cityscapes, 21 VOC).
        aspp_channels: Width of the ASPP branches and projection.
        bn_eps: BatchNorm epsilon (TF DeepLab uses 1e-3).
    """

    num_classes: int = 19
    aspp_channels: int = 256
    bn_eps: float = 1e-3

    def __post_init__(self) -> None:
        if self.num_classes < 1 or self.aspp_channels < 1:
            raise ValueError("DeepLab needs num_classes >= 1 and aspp_channels >= 1")


def paper_config() -> Config:
    """The AMS student: 19 Cityscapes classes, ASPP width 256."""
    return Config()


def tiny_config() -> Config:
    """A narrow head for fast tests (the backbone stays MobileNetV2 1.0)."""
    return Config(num_classes=3, aspp_channels=16)


class DeepLabV3MobileNetV2(nn.Module):
    """DeepLabV3 with a MobileNetV2 backbone at output stride 16. `forward(frame) -> logits`."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        eps = config.bn_eps
        self.normalize = Normalize(TF_MEAN, TF_STD)
        self.backbone = MobileNetV2(3, last_index=LAST_INDEX, output_stride=16, eps=eps)
        self.aspp = ASPP(channels_at(LAST_INDEX), config.aspp_channels, rates=(), eps=eps)
        self.classifier = nn.Conv2d(config.aspp_channels, config.num_classes, 1)

    def forward(self, frame: Tensor) -> Tensor:
        """Segments one frame.

        Args:
            frame: [B, 3, H, W] float32 RGB in [0, 255].

        Returns:
            Logits [B, num_classes, H, W].
        """
        (f16,) = self.backbone(self.normalize(frame))  # 1/16, 320
        logits16 = self.classifier(self.aspp(f16))  # 1/16, num_classes
        return resize(logits16, frame.shape[-2:], align_corners=True)  # 1/1, num_classes


def build(config: Config) -> DeepLabV3MobileNetV2:
    """Builds a randomly initialised DeepLabV3-MobileNetV2 in eval mode."""
    return DeepLabV3MobileNetV2(config).eval()
