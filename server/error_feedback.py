"""Quantized cumulative deltas with server-side error feedback (wire value coding QDELTA).

The server keeps two copies of every addressable tensor in deployed space: ``target``, what its
training wants the device to hold, and ``held``, exactly what the device holds (it applies each
packet with the applier's own arithmetic, `wire.patched_elements`). A packet carries
``target - held`` quantized per tensor to a few signed levels of one step; levels that round to
zero are not sent, so their residual (and every rounding error) stays in ``target - held`` and
goes out with a later packet instead of being lost. Training continues from the server's own
full-precision weights: nothing is mirrored back into them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mobdistill.contract import wire
from mobdistill.contract.wire import Mode, TensorPatch, ValueCoding
from mobdistill.errors import UpdateError


@dataclass(frozen=True)
class DeltaQuantizer:
    """Per tensor, ``step`` from the residuals r = target − held, then residuals of at least
    ``send_at`` steps are sent as ``q = clip(round(r / step), ±levels)``; smaller ones wait.

    ``rule="max"`` (default): ``step = step_scale · max|r| / levels``, so with step_scale 1
    nothing is clipped and, with ``send_at = 0.5``, every residual left is under half a step.
    ``rule="mean"`` (the first version): ``step = step_scale · mean|r|`` over the non-zero
    residuals; the sub-step leftovers of earlier packets pull the mean (and the step) down
    until large residuals are clipped. Defaults were chosen on the bytes/mIoU frontier
    (benchmarks/update_coding.py, benchmarks/README.md).

    ``scope="all"`` (default): every residual of the tensor may go out. ``scope="phase"``: a
    cumulative packet carries residuals only at the coordinates this phase trained (with row
    selection: whole rows, so the indices are runs that cost almost nothing); residuals
    elsewhere wait in ``target − held`` until their coordinate is trained again. A base-relative
    resync sends every residual either way."""

    levels: int = 3
    step_scale: float = 1.0
    rule: str = "max"
    send_at: float = 0.5
    scope: str = "all"

    def __post_init__(self) -> None:
        if not 1 <= self.levels <= 127 or not self.step_scale > 0 or not self.send_at > 0:
            raise UpdateError(f"delta quantizer needs 1 ≤ levels ≤ 127, a positive step scale "
                              f"and threshold, got {self.levels}, {self.step_scale}, "
                              f"{self.send_at}")
        if self.rule not in ("mean", "max"):
            raise UpdateError(f"delta quantizer rule {self.rule!r} must be 'mean' or 'max'")
        if self.scope not in ("all", "phase"):
            raise UpdateError(f"delta quantizer scope {self.scope!r} must be 'all' or 'phase'")

    def patch(self, tensor_index: int, target: np.ndarray, held: np.ndarray,
              within: np.ndarray | None = None) -> TensorPatch | None:
        """The patch that moves ``held`` towards ``target`` (None when nothing is sent); with
        ``within`` (sorted element indices) only those elements' residuals are considered."""
        residual = target.astype(np.float64) - held.astype(np.float64)
        candidates = (np.flatnonzero(residual) if within is None
                      else within[residual[within] != 0])
        if not candidates.size:
            return None
        magnitude = np.abs(residual[candidates])
        step = np.float32(self.step_scale * (magnitude.mean() if self.rule == "mean"
                                             else magnitude.max() / self.levels))
        if not np.isfinite(step) or step <= 0:
            return None
        ratio = residual[candidates] / np.float64(step)
        sent = np.abs(ratio) >= self.send_at
        q = np.clip(np.rint(ratio), -self.levels, self.levels)
        sent &= q != 0
        if not sent.any():
            return None
        levels = q[sent].astype(np.int8)
        return TensorPatch(tensor_index, held.size, candidates[sent],
                           wire.dequantize_delta(levels, float(step)), additive=True,
                           step=float(step))


class ErrorFeedbackEncoder:
    """Cumulative QDELTA packets for one device, numbered from 1, bound to its id and key; the
    same interface as `session.PacketEncoder` (``encode`` / ``mirror``)."""

    def __init__(self, space: Any, credentials: Any, held: Mapping[int, np.ndarray],
                 quantizer: DeltaQuantizer = DeltaQuantizer()) -> None:
        self.space, self.credentials, self.quantizer = space, credentials, quantizer
        self.base = {index: np.array(values) for index, values in held.items()}
        self.held = {index: values.copy() for index, values in self.base.items()}
        self.target = {index: values.astype(np.float32) for index, values in self.base.items()}
        self.sequence = 0

    @classmethod
    def for_model(cls, space: Any, credentials: Any, base_model: bytes,
                  quantizer: DeltaQuantizer = DeltaQuantizer()) -> "ErrorFeedbackEncoder":
        """Starting from the deployed ``.tflite`` bytes: exactly what a fresh device holds."""
        held = {}
        for index, loc in space.table.items():
            dtype = "<f4" if loc.dtype == "float32" else "<f2"
            held[index] = np.frombuffer(base_model, dtype, loc.buffer_size
                                        // wire.ELEMENT_BYTES[loc.dtype], loc.buffer_offset)
        return cls(space, credentials, held, quantizer)

    @classmethod
    def for_session(cls, space: Any, credentials: Any, manifest: Mapping[str, Any],
                    params: Mapping[str, torch.Tensor],
                    quantizer: DeltaQuantizer = DeltaQuantizer()) -> "ErrorFeedbackEncoder":
        """From the manifest's ``.tflite`` when it names one on disk (an exported manifest),
        else from the student's own weights folded into deployed space (in each tensor's
        type)."""
        path = getattr(manifest, "tflite_path", None)
        if path is not None and path.is_file():
            return cls.for_model(space, credentials, path.read_bytes(), quantizer)
        whole = {name: (torch.arange(p.numel()), p.detach().reshape(-1))
                 for name, p in params.items() if name in space.mappings}
        held = {patch.tensor_index: _scatter(patch, space.table[patch.tensor_index].dtype)
                for patch in space.to_patches(whole)}
        return cls(space, credentials, held, quantizer)

    def encode(self, delta: dict[str, tuple[torch.Tensor, torch.Tensor]]
               ) -> tuple[bytes, list[TensorPatch]]:
        """Folds this phase's new values into the target, sends the quantized residual and
        applies it to ``held`` as the device will."""
        self.sequence += 1
        trained: dict[int, list[np.ndarray]] = {}
        for patch in self.space.to_patches(delta):
            self.target[patch.tensor_index][patch.indices] = patch.values
            trained.setdefault(patch.tensor_index, []).append(np.asarray(patch.indices))
        if self.quantizer.scope == "phase":
            return self._send(Mode.CUMULATIVE, {index: np.unique(np.concatenate(parts))
                                                for index, parts in trained.items()})
        return self._send(Mode.CUMULATIVE)

    def resync(self, sequence: int) -> tuple[bytes, list[TensorPatch]]:
        """A base-relative packet numbered ``sequence``: the device starts again from the pristine
        base (it lost its model, or missed packets the mirror counted as applied), so the mirror
        does too; what this packet rounds away follows in later ones."""
        self.sequence = sequence
        self.held = {index: values.copy() for index, values in self.base.items()}
        return self._send(Mode.BASE_RELATIVE)

    def state(self) -> dict[str, dict[int, torch.Tensor]]:
        """The mirror and target (a restarted server continues the device's error feedback)."""
        return {"held": {i: torch.from_numpy(v.copy()) for i, v in self.held.items()},
                "target": {i: torch.from_numpy(v.copy()) for i, v in self.target.items()}}

    def restore(self, state: Mapping[str, Mapping[int, torch.Tensor]]) -> None:
        for part, tensors in (("held", self.held), ("target", self.target)):
            for index, value in state[part].items():
                if index not in tensors or value.numel() != tensors[index].size:
                    raise UpdateError(f"saved {part} tensor {index} does not fit this model")
                tensors[index] = value.numpy().astype(tensors[index].dtype)

    def _send(self, mode: Mode, within: Mapping[int, np.ndarray] | None = None
              ) -> tuple[bytes, list[TensorPatch]]:
        """``within``: per tensor, the only elements whose residuals may go out (None: all)."""
        patches = []
        for index in sorted(self.target):
            if within is not None and index not in within:
                continue
            patch = self.quantizer.patch(index, self.target[index], self.held[index],
                                         None if within is None else within[index])
            if patch is not None:
                patches.append(patch)
        packet = wire.encode_update(patches, base_sha256=self.space.base_sha256,
                                    sequence=self.sequence, device_id=self.credentials.device_id,
                                    hmac_key=self.credentials.hmac_key, mode=mode,
                                    value_coding=ValueCoding.QDELTA)
        for patch in patches:
            held = self.held[patch.tensor_index]
            held[patch.indices] = wire.patched_elements(held, patch)
        return packet, patches

    def mirror(self, params: Mapping[str, torch.nn.Parameter], patches: list[TensorPatch]) -> None:
        """Nothing to do: the server trains on from its own weights; what the device lacks stays
        in ``target - held`` and is sent later (error feedback)."""

    def residual_norm(self) -> float:
        """‖target − held‖₂ over every tensor: how far the device lags the server."""
        return float(np.sqrt(sum(np.sum((self.target[i].astype(np.float64)
                                         - self.held[i].astype(np.float64)) ** 2)
                                 for i in self.target)))


def _scatter(patch: TensorPatch, dtype: str) -> np.ndarray:
    out = np.zeros(patch.numel, np.float32)
    out[patch.indices] = patch.values
    if dtype == "float16":
        return out.astype(np.float16)
    return out
