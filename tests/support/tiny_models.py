"""Tiny exportable models + a manifest in the documented format (docs/manifest.md).

`build_stateless` / `build_stateful` export a few-kilobyte .tflite with litert-torch and write
`<name>.manifest.json` next to it, exactly as `mobdistill export` would (the fields the engine
reads). The stateful model weights each memory slot differently so the test can see whether the
engine carries the queue in the documented order (slot 0 = first frame, FIFO, pad repeat-oldest).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
# A recognisable bias so tests can find (and patch) its bytes in the flatbuffer.
MARKER_BIAS = (0.3125, -0.6875)


def _normalise(frame: torch.Tensor) -> torch.Tensor:  # [1,H,W,3] 0..255 -> NCHW normalised
    x = frame.permute(0, 3, 1, 2) / 255.0
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


class Stateless(nn.Module):
    def __init__(self, channels: int = 8) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(channels, 2, 1)
        with torch.no_grad():
            self.head.bias.copy_(torch.tensor(MARKER_BIAS))

    def forward(self, frame: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.head(self.body(_normalise(frame)))
        return {"logits": logits.permute(0, 2, 3, 1)}


class MemoryNet(nn.Module):
    """init(frame, mask) -> key, value; step(frame, keys, values) -> logits, key, value."""

    def __init__(self, queue_length: int, ck: int = 4, cv: int = 4) -> None:
        super().__init__()
        self.q = queue_length
        self.key = nn.Conv2d(3, ck, 3, padding=1)
        self.value = nn.Conv2d(3 + 1, cv, 3, padding=1)
        self.head = nn.Conv2d(ck + cv, 2, 1)
        with torch.no_grad():
            self.head.bias.copy_(torch.tensor(MARKER_BIAS))
        # distinct weight per slot: a wrong queue order changes the output
        self.register_buffer("slot_w", torch.arange(1, queue_length + 1, dtype=torch.float32))

    def _kv(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = self.key(x)
        value = self.value(torch.cat([x, mask], dim=1))
        return key.permute(0, 2, 3, 1), value.permute(0, 2, 3, 1).unsqueeze(1)

    def init(self, frame: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        key, value = self._kv(_normalise(frame), mask.permute(0, 3, 1, 2))
        return {"key": key, "value": value}

    def step(self, frame, memory_keys, memory_values) -> dict[str, torch.Tensor]:
        x = _normalise(frame)
        qk = self.key(x)                                             # [1,ck,H,W]
        w = self.slot_w.view(-1, 1, 1, 1)
        mk = (memory_keys * w).sum(0, keepdim=True).permute(0, 3, 1, 2)
        mv = (memory_values[:, 0] * w).sum(0, keepdim=True).permute(0, 3, 1, 2)
        logits = self.head(torch.cat([qk * 0.5 + 0.1 * mk, mv], dim=1))
        prob = torch.softmax(logits, dim=1)[:, 1:2]
        key, value = self._kv(x, prob)
        return {"logits": logits.permute(0, 2, 3, 1), "key": key, "value": value}


class _Init(nn.Module):
    def __init__(self, net: MemoryNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, frame, mask):
        return self.net.init(frame, mask)


class _Step(nn.Module):
    def __init__(self, net: MemoryNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, frame, memory_keys, memory_values):
        return self.net.step(frame, memory_keys, memory_values)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _io(name, shape, role, layout="NHWC"):
    return {"name": name, "shape": list(shape), "dtype": "float32", "layout": layout, "role": role}


def _manifest(name, tflite: Path, resolution, signatures, config, memory,
              model: torch.nn.Module) -> dict:
    return {
        "schema": "mobdistill.manifest", "schema_version": 1,
        "created_utc": "2026-01-01T00:00:00Z",
        "model": {"name": name, "config": config, "resolution": list(resolution),
                  "num_params": sum(p.numel() for p in model.parameters())},
        "artifacts": [{"format": "tflite", "file": tflite.name, "sha256": sha256(tflite),
                       "size_bytes": tflite.stat().st_size,
                       "signatures": [s["name"] for s in signatures]}],
        "signatures": signatures,
        "preprocessing": {"channel_order": "RGB", "input_range": [0, 255], "dtype": "float32",
                          "normalization": "in_graph", "mean": list(MEAN), "std": list(STD)},
        "output": {"name": "logits", "num_classes": 2,
                   "class_names": ["background", "object 1"], "layout": "NHWC",
                   "activation": "none"},
        "memory": memory,
        "verification": None,  # the tests compare against the interpreter themselves
        "tool_versions": {},
        "parameter_map": {"status": "not_exported", "entries": [], "unmapped": []},
    }


def build_stateless(out_dir: Path, resolution=(16, 24), name="tiny_stateless", seed=0,
                    channels: int = 8) -> Path:
    import litert_torch

    torch.manual_seed(seed)
    h, w = resolution
    model = Stateless(channels).eval()
    frame = torch.rand(1, h, w, 3) * 255
    out_dir.mkdir(parents=True, exist_ok=True)
    tflite = out_dir / f"{name}.tflite"
    litert_torch.signature("serving_default", model, sample_kwargs={"frame": frame}) \
        .convert().export(str(tflite))
    sigs = [{"name": "serving_default", "inputs": [_io("frame", (1, h, w, 3), "frame")],
             "outputs": [_io("logits", (1, h, w, 2), "logits")]}]
    manifest = _manifest(name, tflite, resolution, sigs, {"channels": channels}, None, model)
    path = out_dir / f"{name}.manifest.json"
    path.write_text(json.dumps(manifest, indent=2))
    return path


def build_stateful(out_dir: Path, queue_length: int = 3, resolution=(16, 24),
                   name="tiny_stateful", seed=0) -> Path:
    import litert_torch

    torch.manual_seed(seed)
    h, w = resolution
    q, ck, cv = queue_length, 4, 4
    net = MemoryNet(q, ck, cv).eval()
    frame = torch.rand(1, h, w, 3) * 255
    mask = (torch.rand(1, h, w, 1) > 0.5).float()
    mk, mv = torch.randn(q, h, w, ck), torch.randn(q, 1, h, w, cv)
    out_dir.mkdir(parents=True, exist_ok=True)
    tflite = out_dir / f"{name}.tflite"
    (litert_torch.signature("init", _Init(net),
                            sample_kwargs={"frame": frame, "mask": mask})
     .signature("step", _Step(net),
                sample_kwargs={"frame": frame, "memory_keys": mk, "memory_values": mv})
     .convert().export(str(tflite)))
    sigs = [
        {"name": "init", "inputs": [_io("frame", (1, h, w, 3), "frame"),
                                    _io("mask", (1, h, w, 1), "mask")],
         "outputs": [_io("key", (1, h, w, ck), "state", "raw"),
                     _io("value", (1, 1, h, w, cv), "state", "raw")]},
        {"name": "step", "inputs": [_io("frame", (1, h, w, 3), "frame"),
                                    _io("memory_keys", (q, h, w, ck), "memory", "raw"),
                                    _io("memory_values", (q, 1, h, w, cv), "memory", "raw")],
         "outputs": [_io("logits", (1, h, w, 2), "logits"),
                     _io("key", (1, h, w, ck), "state", "raw"),
                     _io("value", (1, 1, h, w, cv), "state", "raw")]},
    ]
    memory = {"kind": "memory_queue", "queue_length": q, "policy": "first_frame_plus_fifo",
              "pad": "repeat_oldest", "init_signature": "init", "step_signature": "step",
              "carry": [{"output": "key", "input": "memory_keys"},
                        {"output": "value", "input": "memory_values"}]}
    manifest = _manifest(name, tflite, resolution, sigs, {"queue_length": q}, memory, net)
    path = out_dir / f"{name}.manifest.json"
    path.write_text(json.dumps(manifest, indent=2))
    return path


def random_frames(path: Path, n: int, resolution, seed: int = 1) -> Path:
    h, w = resolution
    rng = np.random.default_rng(seed)
    rng.integers(0, 256, size=(n, h, w, 3), dtype=np.uint8).tofile(path)
    return path


if __name__ == "__main__":
    import sys

    out = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/md_tiny")
    print(build_stateless(out))
    print(build_stateful(out))
