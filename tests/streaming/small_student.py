"""A small conv student with a hand-made parameter map (a permutation and a BatchNorm fold), its
"deployed" bytes, and a teacher it can learn: server tests need no export."""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from mobdistill.server.teachers import CallableTeacher


class Student(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn = torch.nn.BatchNorm2d(4)
        self.head = torch.nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.bn(self.conv(x / 255.0))))


def student() -> Student:
    torch.manual_seed(0)
    model = Student()
    with torch.no_grad():
        model.bn.running_var.uniform_(0.5, 2.0)
        model.bn.weight.uniform_(0.5, 1.5)
    return model.eval()


ENTRIES = [("conv.weight", [0, 2, 3, 1], "bn"), ("head.weight", [0, 2, 3, 1], None),
           ("head.bias", [0], None)]


def deploy(model: Student) -> bytes:
    """What the exporter would write: a header, then each folded, permuted tensor."""
    params, modules = dict(model.named_parameters()), dict(model.named_modules())
    out = bytearray(b"TFL3" + bytes(12))
    for name, perm, fold in ENTRIES:
        value = params[name].detach().double()
        if fold:
            bn = modules[fold]
            scale = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
            value = value * scale.reshape(-1, 1, 1, 1)
        out += value.permute(*perm).float().numpy().astype("<f4").tobytes()
    return bytes(out)


def manifest(model: Student) -> dict:
    data, entries, offset = deploy(model), [], 16
    params = dict(model.named_parameters())
    for i, (name, perm, fold) in enumerate(ENTRIES):
        size = params[name].numel() * 4
        entries.append({"parameter": name, "shape": list(params[name].shape),
                        "tensor_index": 10 + i,
                        "buffer_offset": offset, "buffer_size": size, "dtype": "float32",
                        "permutation": perm,
                        "fold": {"kind": "batchnorm", "module": fold, "axis": 0} if fold else None})
        offset += size
    return {"artifacts": [{"format": "tflite", "sha256": hashlib.sha256(data).hexdigest()}],
            "parameter_map": {"status": "complete", "entries": entries,
                              "unmapped": [{"parameter": "bn.weight", "reason": "folded"}]}}


def teacher() -> CallableTeacher:
    return CallableTeacher(lambda f: (f[..., 0] > f[..., 2]).astype(np.int64),
                           class_names=("blue", "red"))
