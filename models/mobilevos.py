"""MobileVOS student: STCN with MobileNetV2 key and value encoders (specs.md §1.2).

Naming: a trailing number is the stride w.r.t. the input frame (f4, f8, f16); a q/m prefix
means query (current frame) / memory. Shapes in trailing comments are NCHW unless marked NHWC;
h, w = H/16, W/16; N = objects; Q = memory length; Ck/Cv = key/value channels.

Deployment graph: two methods, each exported as its own signature (no `forward`).
- `init(frame, mask) -> {key, value}` encodes the first frame with its given mask.
- `step(frame, memory_keys, memory_values) -> {logits, key, value}` segments a frame by reading
  the memory and encodes it, with its own soft-aggregated prediction, for the memory.
Memory tensors are channels-last ([.., h, w, C]) so the TFLite graph needs no TRANSPOSE.

Memory read: affinity = (2 mk.qk - |mk|^2) / sqrt(Ck) (negative squared L2 without the query
norm), softmax over all Q*h*w memory positions. No top-k (STCN uses k=20 at evaluation): top-k
is costly on mobile GPU delegates. BatchNorm is frozen: `train()` keeps every BN in eval mode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import (
    ASPP,
    IMAGENET_MEAN,
    IMAGENET_STD,
    FeatureFusionBlock,
    Normalize,
    ResBlock,
    resize,
)
from .memory_queue import MemoryQueue
from .mobilenetv2 import MobileNetV2, channels_at

F4, F8, F16 = 3, 6, 13  # MobileNetV2 feature indices at strides 4, 8, 16


@dataclass(frozen=True)
class Config:
    """MobileVOS hyper-parameters (see docs/models.md for how the widths were chosen).

    Attributes:
        num_objects: Objects N segmented jointly (soft aggregation over {background, objects}).
        queue_length: Memory length Q (first frame + Q-1 most recent); an export-time shape.
        aspp: Use ASPP before the decoder (paper default; 2.5M params with, 1.9M without).
        key_dim: Key channels Ck.
        value_dim: Value channels Cv.
        thin_dim: Channels of the query's own compressed feature (f16_thin).
        decoder_dims: Decoder widths at strides 16, 8, 4.
        aspp_rates: Atrous rates of the ASPP 3x3 branches.
    """

    num_objects: int = 1
    queue_length: int = 2
    aspp: bool = True
    key_dim: int = 64
    value_dim: int = 64
    thin_dim: int = 64
    decoder_dims: tuple[int, int, int] = (128, 64, 32)
    aspp_rates: tuple[int, ...] = (6, 12, 18)

    def __post_init__(self) -> None:
        if self.num_objects < 1 or self.queue_length < 1:
            raise ValueError("MobileVOS needs num_objects >= 1 and queue_length >= 1")


def paper_config() -> Config:
    """MobileNetV2 student with ASPP, one object, memory queue of 2."""
    return Config()


def tiny_config() -> Config:
    """Narrow head widths for fast tests (the backbones stay MobileNetV2 1.0 to stride 16)."""
    return Config(key_dim=16, value_dim=16, thin_dim=16, decoder_dims=(32, 16, 8))


class UpsampleBlock(nn.Module):
    """Decoder step: skip conv on the finer feature + bilinear-upsampled coarse one -> ResBlock."""

    def __init__(self, skip_channels: int, up_channels: int, out_channels: int) -> None:
        super().__init__()
        self.skip_conv = nn.Conv2d(skip_channels, up_channels, 3, padding=1)
        self.out_conv = ResBlock(up_channels, out_channels)

    def forward(self, skip: Tensor, up: Tensor) -> Tensor:
        return self.out_conv(self.skip_conv(skip) + resize(up, skip.shape[-2:]))


def _repeat(x: Tensor, n: int) -> Tensor:
    """Repeats a batch-1 tensor n times along the batch (no-op for n == 1)."""
    return x if n == 1 else x.repeat(n, 1, 1, 1)


def _channels_last(x: Tensor) -> Tensor:
    return x.permute(0, 2, 3, 1)


def read_memory(qk: Tensor, mk: Tensor, mv: Tensor, batched: bool = False) -> Tensor:
    """Softmax readout of the memory values for the query key.

    Args:
        qk: Query key [1, h, w, Ck] (NHWC).
        mk: Memory keys [Q, h, w, Ck].
        mv: Memory values [Q, N, h, w, Cv].
        batched: the query-key products as a batch of two (`_query_key_products`; the TFLite
            export's form) where h·w is even, else one matrix product.

    Returns:
        Readout [N, Cv, h, w].
    """
    _, h, w, ck = qk.shape
    n, cv = mv.shape[1], mv.shape[-1]
    q = qk.reshape(h * w, ck)  # hw, Ck
    m = mk.reshape(-1, ck)  # Qhw, Ck
    products = _query_key_products(q, m) if batched and h * w % 2 == 0 else F.linear(q, m)
    logits = (2 * products - (m * m).sum(1)) / math.sqrt(ck)
    affinity = torch.softmax(logits, dim=1)  # hw, Qhw
    outs = [affinity @ mv[:, i].reshape(-1, cv) for i in range(n)]  # N x (hw, Cv)
    return torch.stack(outs, 0).reshape(n, h, w, cv).permute(0, 3, 1, 2)  # N, Cv, h, w


def _query_key_products(q: Tensor, m: Tensor) -> Tensor:
    """q @ m.T [hw, Qhw], as a batched product over two halves of the queries.

    Why: both operands are computed in the graph, and the converter turns a 2-D product
    (`F.linear`, `q @ m.T`, a batch of one) into FULLY_CONNECTED, which XNNPACK does not take with
    computed weights, so TFLite's own kernel ran it (15 ms of a 480x864 step). A batch of two
    stays BATCH_MATMUL, which XNNPACK runs. Spelled as an einsum: the matmul forms with a
    transposed operand converted to a TRANSPOSE or, with repeated keys, to wrong products
    (litert-torch 0.10, checked on the read-out alone). The halves are contiguous rows, so the
    result reshapes back without a copy (hw must be even). Only the TFLite export
    uses it (`MobileVOS.batched_memory_read`): ONNX Runtime runs an Einsum far slower than the
    MatMul of the plain product (14.4 ms at 480x864)."""
    hw, ck = q.shape
    keys = m.unsqueeze(0).repeat(2, 1, 1)  # 2, Qhw, Ck: the same keys for both halves
    return torch.einsum("bqc,bmc->bqm", q.reshape(2, hw // 2, ck), keys).reshape(hw, -1)


def soft_aggregate(object_logits: Tensor) -> Tensor:
    """STCN soft aggregation of per-object logits [N, 1, H, W] into logits [1, N+1, H, W].

    p_bg = prod(1 - p_i); logit = log(p / (1 - p)); softmax over the N+1 gives the probabilities.
    """
    n, _, height, width = object_logits.shape
    prob = torch.sigmoid(object_logits)  # N, 1, H, W
    if n > 1:  # for N = 1 the reshape is a no-op that would cost a TRANSPOSE in TFLite
        prob = prob.reshape(1, n, height, width)  # 1, N, H, W
    background = 1 - prob[:, :1]
    for i in range(1, n):  # a product of static length: no REDUCE_PROD for delegates
        background = background * (1 - prob[:, i : i + 1])
    p = torch.cat([background, prob], 1).clamp(1e-7, 1 - 1e-7)  # 1, N+1, H, W
    return torch.log(p / (1 - p))


class MobileVOS(nn.Module):
    """The MobileVOS student. Deployment methods: `init` and `step`."""

    single_object_pair: Tensor  # buffer

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        f16_channels = channels_at(F16)
        d16, d8, d4 = config.decoder_dims
        self.normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD)
        self.key_encoder = MobileNetV2(3, last_index=F16, out_indices=(F4, F8, F16))
        self.value_encoder = MobileNetV2(2, last_index=F16)
        pair = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)  # (own mask, others) for N = 1
        self.register_buffer("single_object_pair", pair, persistent=False)
        self.key_proj = nn.Conv2d(f16_channels, config.key_dim, 3, padding=1)
        self.key_comp = nn.Conv2d(f16_channels, config.thin_dim, 3, padding=1)
        self.fuser = FeatureFusionBlock(2 * f16_channels, config.value_dim)
        self.compress = ResBlock(config.value_dim + config.thin_dim, d16)
        self.aspp = ASPP(d16, d16, config.aspp_rates) if config.aspp else None
        self.up_16_8 = UpsampleBlock(channels_at(F8), d16, d8)
        self.up_8_4 = UpsampleBlock(channels_at(F4), d8, d4)
        self.pred = nn.Conv2d(d4, 1, 3, padding=1)
        # The memory read's query-key products as a batch of two (read_memory): set by the TFLite
        # export while it converts, the form its runtime runs fastest.
        self.batched_memory_read = False

    def train(self, mode: bool = True) -> MobileVOS:
        """Sets training mode but keeps every BatchNorm frozen (eval), as MobileVOS does."""
        super().train(mode)
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()
        return self

    def _encode_key(self, frame: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        f4, f8, f16 = self.key_encoder(self.normalize(frame))  # 1/4 24, 1/8 32, 1/16 96
        key = _channels_last(self.key_proj(f16))  # 1, h, w, Ck (NHWC)
        return key, f16, f8, f4

    def _encode_value(self, f16: Tensor, masks: Tensor) -> Tensor:
        n = masks.shape[1]
        if n == 1:  # (mask, 0) as a broadcast MUL: keeps the NHWC mask input TRANSPOSE-free
            pair = masks * self.single_object_pair  # 1, 2, H, W
        else:
            own = masks.reshape(n, 1, *masks.shape[-2:])  # N, 1, H, W
            others = masks.sum(1, keepdim=True).reshape(1, 1, *masks.shape[-2:]) - own
            pair = torch.cat([own, others], 1)  # N, 2, H, W
        (v16,) = self.value_encoder(pair)  # N, 96, h, w
        value = self.fuser(v16, _repeat(f16, n))  # N, Cv, h, w
        return _channels_last(value).unsqueeze(0)  # 1, N, h, w, Cv

    def _decode(self, readout: Tensor, f16: Tensor, f8: Tensor, f4: Tensor,
                ) -> tuple[Tensor, Tensor]:
        """(object logits N, 1, 1/4; the pixel representation before the last conv, N, d4, 1/4)."""
        n = readout.shape[0]
        thin = _repeat(self.key_comp(f16), n)  # N, thin, h, w
        x = self.compress(torch.cat([readout, thin], 1))  # N, d16, h, w
        if self.aspp is not None:
            x = self.aspp(x)
        x = self.up_16_8(_repeat(f8, n), x)  # N, d8, 1/8
        x = self.up_8_4(_repeat(f4, n), x)  # N, d4, 1/4
        features = F.relu(x)
        return self.pred(features), features

    def init(self, frame: Tensor, mask: Tensor) -> dict[str, Tensor]:
        """Encodes the first frame and its given object masks for the memory.

        Args:
            frame: [1, 3, H, W] float32 RGB in [0, 255].
            mask: [1, N, H, W] object masks (or probabilities) in [0, 1].

        Returns:
            {"key": [1, h, w, Ck], "value": [1, N, h, w, Cv]}.
        """
        key, f16, _, _ = self._encode_key(frame)
        return {"key": key, "value": self._encode_value(f16, mask)}

    def step(self, frame: Tensor, memory_keys: Tensor, memory_values: Tensor) -> dict[str, Tensor]:
        """Segments a frame from the memory and encodes it for the memory.

        Args:
            frame: [1, 3, H, W] float32 RGB in [0, 255].
            memory_keys: [Q, h, w, Ck].
            memory_values: [Q, N, h, w, Cv].

        Returns:
            {"logits": [1, N+1, H, W] soft-aggregated over {background, objects},
             "key": [1, h, w, Ck], "value": [1, N, h, w, Cv] (from the predicted probabilities)}.
        """
        return self.step_with_features(frame, memory_keys, memory_values)[0]

    def step_with_features(self, frame: Tensor, memory_keys: Tensor, memory_values: Tensor,
                           ) -> tuple[dict[str, Tensor], Tensor]:
        """`step`, and the decoder's pixel representation before its last conv [N, d4, H/4, W/4]
        (what MobileVOS's representation loss distils; training only)."""
        key, f16, f8, f4 = self._encode_key(frame)
        readout = read_memory(key, memory_keys, memory_values,
                              batched=self.batched_memory_read)  # N, Cv, h, w
        object_logits, features = self._decode(readout, f16, f8, f4)
        logits = soft_aggregate(resize(object_logits, frame.shape[-2:]))  # 1, N+1, H, W
        probs = torch.softmax(logits, dim=1)[:, 1:]  # 1, N, H, W
        out = {"logits": logits, "key": key, "value": self._encode_value(f16, probs)}
        return out, features


def build(config: Config) -> MobileVOS:
    """Builds a randomly initialised MobileVOS in eval mode."""
    return MobileVOS(config).eval()


@torch.no_grad()
def run_sequence(
    model: MobileVOS, frames: list[Tensor], first_mask: Tensor, queue_length: int
) -> list[Tensor]:
    """Python reference runner: `init` on frame 0, then `step` on each later frame.

    Args:
        model: A MobileVOS in eval mode.
        frames: [1, 3, H, W] float32 RGB frames in [0, 255].
        first_mask: [1, N, H, W] object masks of frames[0].
        queue_length: Memory length Q (slot 0 = first frame, FIFO of the last Q-1).

    Returns:
        The step logits [1, N+1, H, W] of frames[1:] (len(frames) - 1 tensors).
    """
    queue = MemoryQueue(queue_length)
    queue.reset(model.init(frames[0], first_mask))
    outputs = []
    for frame in frames[1:]:
        memory = queue.stacked()
        out = model.step(frame, memory["key"], memory["value"])
        queue.push({"key": out["key"], "value": out["value"]})
        outputs.append(out["logits"])
    return outputs
