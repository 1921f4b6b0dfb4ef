"""The AMS server: label sampled frames with a teacher, train the student on a time horizon, send a
sparse update in deployed tensor space (specs §3, paper Alg. 1).

One `Session` per device. Each phase: K Adam iterations on mini-batches drawn uniformly from the
frames of the last ``horizon_s`` seconds, BatchNorm frozen (eval mode, affine parameters fixed),
only parameters the manifest's parameter map can address are trained. Updates are cumulative, as
in the paper: training continues from what the device holds (the server mirrors the wire's
rounding) and each packet applies to the device's current model. (The public AMS code instead
restores the pretrained weights before every phase; docs/streaming.md compares the two sources.)
Every packet names the session's device id and carries an HMAC under its per-device key.
`AmsServer` serves several sessions round-robin.
"""

from __future__ import annotations

import copy
import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from mobdistill.contract import wire
from mobdistill.contract.wire import Mode, TensorLocation, TensorPatch, ValueCoding
from mobdistill.errors import UpdateError, UsageError
from mobdistill.server.error_feedback import DeltaQuantizer, ErrorFeedbackEncoder
from mobdistill.server.rates import AdaptiveRates
from mobdistill.server.selection import AdamConfig
from mobdistill.server.structured import coordinate_descent
from mobdistill.server.teachers import Teacher

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerConfig:
    """Defaults are the paper's (§4.1): T_horizon 240 s, T_update = δt = 10 s, K = 20, Adam
    lr 1e-3, γ = 5 %. (The public code: horizon 250 s, K = 200, batch 10.)"""

    horizon_s: float = 240.0
    update_interval_s: float = 10.0
    asr_interval_s: float = 10.0
    iterations: int = 20
    batch_size: int = 8
    lr: float = 1e-3
    gamma: float = 0.05
    selection: str = "paper"  # `structured.SELECTIONS`: AMS's coordinates, or whole rows
    value_coding: ValueCoding = ValueCoding.F16
    delta_scope: str = "all"  # QDELTA: `DeltaQuantizer.scope` ("phase": the phase's rows only)
    seed: int = 0


@dataclass(frozen=True)
class UpdateCredentials:
    """What binds packets to one device: its 16-byte id and its HMAC key (``None`` only when the
    caller opted out of authentication with `insecure`)."""

    device_id: bytes
    hmac_key: bytes | None

    @classmethod
    def new(cls, *, insecure: bool = False) -> "UpdateCredentials":
        return cls(wire.new_device_id(), None if insecure else wire.new_key())

    @property
    def insecure(self) -> bool:
        return self.hmac_key is None


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

    def __init__(self, manifest: Mapping[str, Any], model: torch.nn.Module) -> None:
        pmap = manifest.get("parameter_map") or {}
        params, modules = dict(model.named_parameters()), dict(model.named_modules())
        self.base_sha256 = bytes.fromhex(_tflite_sha256(manifest))
        self.mappings: dict[str, _Mapping] = {}
        self.table: dict[int, TensorLocation] = {}
        for entry in pmap.get("entries", []):
            if entry["dtype"] not in wire.ELEMENT_BYTES:
                raise UpdateError(f"{entry['parameter']} is {entry['dtype']} in the artifact: "
                                  "only float32 and float16 tensors can take sparse updates")
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
        """The inverse: what the device's values mean in PyTorch space (cumulative mirroring)."""
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


def _tflite_sha256(manifest: Mapping[str, Any]) -> str:
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
    if numel * wire.ELEMENT_BYTES[entry["dtype"]] != entry["buffer_size"]:
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


# ----------------------------------------------------------------------------- packets
class PacketEncoder:
    """Cumulative sparse packets for one device: numbered from 1, bound to its id and key."""

    def __init__(self, space: DeployedSpace, credentials: UpdateCredentials,
                 value_coding: ValueCoding = ValueCoding.F16) -> None:
        self.space, self.credentials, self.value_coding = space, credentials, value_coding
        self.sequence = 0

    def encode(self, delta: SparseDelta) -> tuple[bytes, list[TensorPatch]]:
        self.sequence += 1
        patches = self.space.to_patches(delta)
        packet = wire.encode_update(patches, base_sha256=self.space.base_sha256,
                                    sequence=self.sequence,
                                    device_id=self.credentials.device_id,
                                    hmac_key=self.credentials.hmac_key, mode=Mode.CUMULATIVE,
                                    value_coding=self.value_coding)
        return packet, patches

    @torch.no_grad()
    def mirror(self, params: dict[str, torch.nn.Parameter], patches: list[TensorPatch]) -> None:
        """Sets the sent coordinates to what the device holds after the wire's rounding, so that
        training continues from exactly the device's model."""
        quantized = [TensorPatch(p.tensor_index, p.numel, p.indices,
                                 self._held_values(p.tensor_index, p.values))
                     for p in patches]
        for name, (idx, values) in self.space.to_torch(quantized).items():
            params[name].view(-1)[idx] = values

    def _held_values(self, tensor_index: int, values: np.ndarray) -> np.ndarray:
        """What the device stores: the wire's rounding, then a float16 tensor's own."""
        sent = wire.quantize_values(values, self.value_coding)
        if self.space.table[tensor_index].dtype == "float16":
            return sent.astype(np.float16).astype(np.float32)
        return sent


def changed_coordinates(params: dict[str, torch.nn.Parameter], masks: list[torch.Tensor],
                        names: list[str], before: dict[str, torch.Tensor]) -> SparseDelta:
    """The selected coordinates whose value moved during the phase, with their new values."""
    delta = {}
    for name, mask in zip(names, masks):
        p = params[name].detach().reshape(-1)
        idx = torch.nonzero(mask.reshape(-1) & (p != before[name].reshape(-1))).reshape(-1)
        if idx.numel():
            delta[name] = (idx, p[idx].clone())
    return delta


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
    """One device: its student copy, buffer, optimizer state, credentials, packets and rates.

    The credentials default to a fresh per-device key and id (`UpdateCredentials.new`); pass
    ``UpdateCredentials.new(insecure=True)`` to send unauthenticated packets on purpose."""

    def __init__(self, session_id: str, student: torch.nn.Module, manifest: Mapping[str, Any],
                 teacher: Teacher, config: ServerConfig = ServerConfig(), *,
                 credentials: UpdateCredentials | None = None,
                 rates: AdaptiveRates | None = None) -> None:
        self.id, self.config, self.teacher = session_id, config, teacher
        self.credentials = credentials or UpdateCredentials.new()
        self.student = copy.deepcopy(student).eval()  # eval: BatchNorm statistics frozen
        self.space = DeployedSpace(manifest, self.student)
        self.params = dict(self.student.named_parameters())
        for name, p in self.params.items():
            p.requires_grad_(name in self.space.mappings)
        self.trainable = [self.params[n] for n in self.space.mappings]
        self.generator = torch.Generator().manual_seed(config.seed)
        self.optimizer = coordinate_descent(  # selection "rows": whole output channels
            self.trainable, gamma=config.gamma, selection=config.selection,
            rule=AdamConfig(lr=config.lr), generator=self.generator)
        self.encoder: PacketEncoder | ErrorFeedbackEncoder = (  # QDELTA: quantized deltas
            ErrorFeedbackEncoder.for_session(self.space, self.credentials, manifest, self.params,
                                             DeltaQuantizer(scope=config.delta_scope))
            if config.value_coding == ValueCoding.QDELTA
            else PacketEncoder(self.space, self.credentials, config.value_coding))
        self.buffer = FrameBuffer(config.horizon_s)
        self.rates = rates or AdaptiveRates(update_interval_s=config.update_interval_s,
                                            asr_interval_s=config.asr_interval_s)
        self.next_update_s = self.rates.update_interval_s
        self._last_label: torch.Tensor | None = None

    @property
    def sequence(self) -> int:
        return self.encoder.sequence

    def add_frame(self, time_s: float, frame: np.ndarray) -> None:
        """Labels one uplinked RGB frame [H, W, 3] and feeds the label-change signal to ASR."""
        self.add_labelled(time_s, frame, self.teacher.labels(frame))

    def add_labelled(self, time_s: float, frame: np.ndarray, labels: np.ndarray) -> None:
        """`add_frame` with the teacher's labels already made (the live server labels outside
        the session lock, so uplink never waits for a training phase)."""
        label = torch.from_numpy(labels)
        if self._last_label is not None:
            self.rates.observe_labels(self._last_label.numpy(), label.numpy(),
                                      self.teacher.num_classes)
        self._last_label = label
        chw = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1).float()
        self.buffer.add(LabelledFrame(time_s, chw, label))

    def tick(self, now_s: float) -> None:
        """Moves the server clock: ASR and ATR are evaluated at every δt boundary passed, training
        or not (a hibernating session keeps adapting its rates)."""
        self.rates.advance(now_s)

    def due(self, now_s: float) -> bool:
        self.tick(now_s)
        return bool(self.buffer.items) and now_s >= self.next_update_s - 1e-9

    def _loss(self, frames: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = self.student(frames)
        if logits.shape[-2:] != labels.shape[-2:]:
            logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear",
                                   align_corners=False)
        return F.cross_entropy(logits, labels)

    def train_phase(self, now_s: float) -> UpdateResult:
        cfg = self.config
        self.buffer.prune(now_s)
        names = list(self.space.mappings)
        before = {n: self.params[n].detach().clone() for n in names}
        self.optimizer.begin_phase()
        losses = []
        for _ in range(cfg.iterations):
            frames, labels = self.buffer.sample(cfg.batch_size, self.generator)
            self.optimizer.zero_grad()
            loss = self._loss(frames, labels)
            loss.backward()
            self.optimizer.step()
            losses.append(loss.item())
        delta = changed_coordinates(self.params, self.optimizer.end_phase(), names, before)
        packet, patches = self.encoder.encode(delta)
        self.encoder.mirror(self.params, patches)
        self.next_update_s = now_s + self.rates.update_interval_s
        return UpdateResult(self.id, self.sequence, packet,
                            sum(len(i) for i, _ in delta.values()),
                            sum(p.numel() for p in self.trainable), losses[0], losses[-1], delta)


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
