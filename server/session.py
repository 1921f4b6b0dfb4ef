"""The AMS server: label sampled frames with a teacher, train the student on a time horizon, send a
sparse update in deployed tensor space (specs §3, paper Alg. 1).

One `Session` per device. Each phase: K Adam iterations on mini-batches drawn uniformly from the
frames of the last ``horizon_s`` seconds, BatchNorm frozen (eval mode, affine parameters fixed),
only parameters the manifest's parameter map can address are trained. ``Mode.BASE_RELATIVE``
(the public code) restores the pristine weights before every phase; ``Mode.CUMULATIVE`` (the
paper) continues from the last update. `AmsServer` serves several sessions round-robin.
"""

from __future__ import annotations

import copy
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from mobdistill.errors import UpdateError, UsageError
from mobdistill.contract import wire
from mobdistill.server.rates import AdaptiveRates
from mobdistill.server.selection import AdamConfig, CoordinateDescentAdam
from mobdistill.contract.wire import Mode, TensorLocation, TensorPatch, ValueCoding
from mobdistill.server.teachers import Teacher

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerConfig:
    """Defaults are the paper's (§4.1); the public code uses horizon 250 s, K=200, batch 10."""

    horizon_s: float = 240.0
    update_interval_s: float = 10.0
    iterations: int = 20
    batch_size: int = 8
    lr: float = 1e-3
    gamma: float = 0.05
    selection: str = "paper"
    mode: Mode = Mode.BASE_RELATIVE
    value_coding: ValueCoding = ValueCoding.F16
    seed: int = 0


# ----------------------------------------------------------------------------- buffer
@dataclass
class LabelledFrame:
    time_s: float
    frame: torch.Tensor  # float32 [3, H, W], RGB in [0, 255]
    label: torch.Tensor  # int64 [H, W], the teacher's argmax


class FrameBuffer:
    """Time-stamped labelled frames; keeps only the last ``horizon_s`` seconds."""

    def __init__(self, horizon_s: float) -> None:
        self.horizon_s = horizon_s
        self.items: deque[LabelledFrame] = deque()

    def add(self, item: LabelledFrame) -> None:
        self.items.append(item)
        self.prune(item.time_s)

    def prune(self, now_s: float) -> None:
        while self.items and self.items[0].time_s < now_s - self.horizon_s:
            self.items.popleft()

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """n items drawn uniformly with replacement: (frames [n,3,H,W], labels [n,H,W])."""
        if not self.items:
            raise UsageError("no labelled frames in the buffer yet; add frames before training")
        picks = torch.randint(len(self.items), (n,), generator=generator).tolist()
        return (torch.stack([self.items[i].frame for i in picks]),
                torch.stack([self.items[i].label for i in picks]))


# ----------------------------------------------------------------------------- deployed space
@dataclass
class _Mapping:
    parameter: str
    tensor_index: int
    numel: int
    to_deployed: torch.Tensor  # int64 [numel]: deployed flat position of each torch flat index
    scale: torch.Tensor  # float64 [numel]: BatchNorm fold factor per torch flat element


SparseDelta = dict[str, tuple[torch.Tensor, torch.Tensor]]  # name -> (flat indices, new values)


class DeployedSpace:
    """Maps PyTorch parameter coordinates to deployed ``.tflite`` tensor coordinates and back,
    using the manifest's ``parameter_map`` (permutation + BatchNorm fold)."""

    def __init__(self, manifest: dict, model: torch.nn.Module) -> None:
        pmap = manifest.get("parameter_map") or {}
        params, modules = dict(model.named_parameters()), dict(model.named_modules())
        self.base_sha256 = bytes.fromhex(_tflite_sha256(manifest))
        self.mappings: dict[str, _Mapping] = {}
        self.table: dict[int, TensorLocation] = {}
        for entry in pmap.get("entries", []):
            if entry["dtype"] != "float32":
                raise UpdateError(f"{entry['parameter']} is {entry['dtype']} in the artifact: "
                                  "only float32 tensors can take sparse updates")
            self.mappings[entry["parameter"]] = _build_mapping(entry, params, modules)
            self.table[entry["tensor_index"]] = TensorLocation(
                entry["buffer_offset"], entry["buffer_size"], entry["dtype"])
        if not self.mappings:
            raise UpdateError("the manifest has no parameter_map entries: re-export the model "
                              "with a mobdistill that writes the parameter map")

    def to_patches(self, delta: SparseDelta) -> list[TensorPatch]:
        patches = []
        for name, (torch_idx, values) in delta.items():
            m = self.mappings[name]
            deployed = m.to_deployed[torch_idx]
            folded = (values.double() * m.scale[torch_idx]).float()
            order = torch.argsort(deployed)
            patches.append(TensorPatch(m.tensor_index, m.numel, deployed[order].numpy(),
                                       folded[order].numpy()))
        return patches

    def to_torch(self, patches: list[TensorPatch]) -> SparseDelta:
        """The inverse: what the device's values mean in PyTorch space (for cumulative mirroring)."""
        by_tensor = {m.tensor_index: m for m in self.mappings.values()}
        delta = {}
        for patch in patches:
            m = by_tensor[patch.tensor_index]
            inverse = torch.empty_like(m.to_deployed)
            inverse[m.to_deployed] = torch.arange(m.numel)
            torch_idx = inverse[torch.from_numpy(np.asarray(patch.indices, np.int64))]
            values = torch.from_numpy(np.asarray(patch.values, np.float64)) / m.scale[torch_idx]
            delta[m.parameter] = (torch_idx, values.float())
        return delta


def _tflite_sha256(manifest: dict) -> str:
    for artifact in manifest.get("artifacts", []):
        if artifact["format"] == "tflite":
            return artifact["sha256"]
    raise UpdateError("the manifest lists no tflite artifact: updates address a .tflite")


def _build_mapping(entry: dict, params: dict, modules: dict) -> _Mapping:
    name = entry["parameter"]
    if name not in params:
        raise UpdateError(f"manifest parameter {name} is not in the model: wrong checkpoint?")
    shape = tuple(params[name].shape)
    numel = params[name].numel()
    if numel * 4 != entry["buffer_size"]:
        raise UpdateError(f"{name}: {numel} elements but a {entry['buffer_size']}-byte buffer")
    position = torch.arange(numel).reshape(shape).permute(*entry["permutation"]).reshape(-1)
    to_deployed = torch.empty(numel, dtype=torch.int64)
    to_deployed[position] = torch.arange(numel)
    scale = torch.ones(numel, dtype=torch.float64)
    if entry.get("fold"):
        bn = modules[entry["fold"]["module"]]
        per_channel = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
        view = [1] * len(shape)
        view[entry["fold"].get("axis", 0)] = -1
        scale = (per_channel.reshape(view) * torch.ones(shape, dtype=torch.float64)).reshape(-1)
    return _Mapping(name, entry["tensor_index"], numel, to_deployed, scale)


# ----------------------------------------------------------------------------- session
@dataclass
class UpdateResult:
    session_id: str
    sequence: int
    packet: bytes
    num_changed: int
    num_trainable: int
    loss_before: float
    loss_after: float
    delta: SparseDelta = field(repr=False, default_factory=dict)


class Session:
    """One device: its student copy, buffer, optimizer state, sequence counter and rates."""

    def __init__(self, session_id: str, student: torch.nn.Module, manifest: dict,
                 teacher: Teacher, config: ServerConfig = ServerConfig(), *,
                 hmac_key: bytes | None = None) -> None:
        self.id, self.config, self.teacher, self.hmac_key = session_id, config, teacher, hmac_key
        self.student = copy.deepcopy(student).eval()  # eval: BatchNorm statistics frozen
        self.space = DeployedSpace(manifest, self.student)
        self.params = dict(self.student.named_parameters())
        for name, p in self.params.items():
            p.requires_grad_(name in self.space.mappings)
        self.trainable = [self.params[n] for n in self.space.mappings]
        self.pristine = {n: p.detach().clone() for n, p in self.params.items()}
        self.generator = torch.Generator().manual_seed(config.seed)
        self.optimizer = CoordinateDescentAdam(
            self.trainable, gamma=config.gamma, variant=config.selection,
            adam=AdamConfig(lr=config.lr), generator=self.generator)
        self.buffer = FrameBuffer(config.horizon_s)
        self.rates = AdaptiveRates(update_interval_s=config.update_interval_s)
        self.sequence = 0
        self.next_update_s = 0.0
        self._last_label: torch.Tensor | None = None

    def add_frame(self, time_s: float, frame: np.ndarray) -> None:
        """Labels one uplinked RGB frame [H, W, 3] and feeds the label-change signal to ASR."""
        label = torch.from_numpy(self.teacher.labels(frame))
        if self._last_label is not None:
            self.rates.observe_labels(self._last_label.numpy(), label.numpy(),
                                      self.teacher.num_classes)
        self._last_label = label
        chw = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1).float()
        self.buffer.add(LabelledFrame(time_s, chw, label))

    def due(self, now_s: float) -> bool:
        return bool(self.buffer.items) and now_s >= self.next_update_s

    def _loss(self, frames: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = self.student(frames)
        if logits.shape[-2:] != labels.shape[-2:]:
            logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear",
                                   align_corners=False)
        return F.cross_entropy(logits, labels)

    def train_phase(self, now_s: float) -> UpdateResult:
        cfg = self.config
        self.buffer.prune(now_s)
        if cfg.mode == Mode.BASE_RELATIVE:
            self._restore_pristine()
        before = {n: self.params[n].detach().clone() for n in self.space.mappings}
        self.optimizer.begin_phase()
        losses = []
        for _ in range(cfg.iterations):
            frames, labels = self.buffer.sample(cfg.batch_size, self.generator)
            self.optimizer.zero_grad()
            loss = self._loss(frames, labels)
            loss.backward()
            self.optimizer.step()
            losses.append(loss.item())
        masks = self.optimizer.end_phase()
        delta = self._delta(masks, before)
        return self._emit(now_s, delta, losses)

    def _restore_pristine(self) -> None:
        with torch.no_grad():
            for name, p in self.params.items():
                p.copy_(self.pristine[name])

    def _delta(self, masks: list[torch.Tensor], before: dict) -> SparseDelta:
        """Selected coordinates vs the device's model (pristine base or last update)."""
        reference = self.pristine if self.config.mode == Mode.BASE_RELATIVE else before
        delta = {}
        for name, mask in zip(self.space.mappings, masks):
            p = self.params[name].detach().reshape(-1)
            changed = mask.reshape(-1) & (p != reference[name].reshape(-1))
            idx = torch.nonzero(changed).reshape(-1)
            if idx.numel():
                delta[name] = (idx, p[idx].clone())
        return delta

    def _emit(self, now_s: float, delta: SparseDelta, losses: list[float]) -> UpdateResult:
        cfg = self.config
        self.sequence += 1
        patches = self.space.to_patches(delta)
        packet = wire.encode_update(patches, base_sha256=self.space.base_sha256,
                                    sequence=self.sequence, mode=cfg.mode,
                                    value_coding=cfg.value_coding, hmac_key=self.hmac_key)
        if cfg.mode == Mode.CUMULATIVE:
            self._mirror_device(patches)
        self.rates.end_interval()
        self.next_update_s = now_s + self.rates.update_interval_s
        return UpdateResult(self.id, self.sequence, packet, sum(len(i) for i, _ in delta.values()),
                            sum(p.numel() for p in self.trainable), losses[0], losses[-1], delta)

    @torch.no_grad()
    def _mirror_device(self, patches: list[TensorPatch]) -> None:
        """Cumulative mode: continue from what the device holds (values after wire rounding)."""
        quantized = [TensorPatch(p.tensor_index, p.numel, p.indices,
                                 wire.quantize_values(p.values, self.config.value_coding))
                     for p in patches]
        for name, (idx, values) in self.space.to_torch(quantized).items():
            self.params[name].view(-1)[idx] = values


class AmsServer:
    """Round-robin over sessions on one trainer (specs §3: one GPU serves several devices)."""

    def __init__(self) -> None:
        self.sessions: dict[str, Session] = {}
        self._turn = 0

    def add(self, session: Session) -> None:
        if session.id in self.sessions:
            raise UsageError(f"session {session.id!r} exists; pick another id")
        self.sessions[session.id] = session

    def run_due(self, now_s: float) -> Iterator[UpdateResult]:
        """One training phase for each due session, starting after the last one served."""
        ids = list(self.sessions)
        start = self._turn
        for k in range(len(ids)):
            position = (start + k) % len(ids)
            session = self.sessions[ids[position]]
            if session.due(now_s):
                if position == start:
                    self._turn = (start + 1) % len(ids)  # next round starts one further on
                yield session.train_phase(now_s)
