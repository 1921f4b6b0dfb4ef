"""Deployment wrappers: one nn.Module per signature, with NHWC image I/O.

PyTorch students work in NCHW; apps feed NHWC camera frames. Each `SignatureModule` permutes
its NHWC inputs to NCHW, calls the student's method, and permutes NHWC outputs back. The
converter cancels these permutes against its own NCHW->NHWC rewrite, so the TFLite graph keeps
no TRANSPOSE at its edges.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from mobdistill.models import registry
from mobdistill.models.spec import SignatureSpec, TensorSpec

_TO_NCHW = (0, 3, 1, 2)
_TO_NHWC = (0, 2, 3, 1)


class SignatureModule(nn.Module):
    """Exposes `spec.method` of `model` as a graph with named NHWC inputs and dict outputs."""

    def __init__(self, model: nn.Module, spec: SignatureSpec) -> None:
        super().__init__()
        self.model = model
        self.spec = spec

    def forward(self, **inputs: Tensor) -> dict[str, Tensor]:
        args = {t.name: _from_deployed(inputs[t.name], t) for t in self.spec.inputs}
        result = getattr(self.model, self.spec.method)(**args)
        if isinstance(result, Tensor):
            result = {self.spec.outputs[0].name: result}
        return {t.name: _to_deployed(result[t.name], t) for t in self.spec.outputs}


def _from_deployed(value: Tensor, spec: TensorSpec) -> Tensor:
    return value.permute(*_TO_NCHW) if spec.layout == "NHWC" else value


def _to_deployed(value: Tensor, spec: TensorSpec) -> Tensor:
    return value.permute(*_TO_NHWC) if spec.layout == "NHWC" else value


def signature_modules(
    model: nn.Module, specs: tuple[SignatureSpec, ...]
) -> dict[str, SignatureModule]:
    """One eval-mode wrapper per signature, sharing the model's parameters."""
    model.eval()
    return {spec.name: SignatureModule(model, spec).eval() for spec in specs}


def sample_inputs(spec: SignatureSpec, *, seed: int = 0) -> dict[str, Tensor]:
    """The registry's tracing inputs in deployment layout (NHWC images)."""
    inputs = registry.sample_inputs(spec, seed=seed)
    return {t.name: _to_deployed(inputs[t.name], t).contiguous() for t in spec.inputs}


@torch.no_grad()
def run_torch(module: SignatureModule, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run a signature wrapper on numpy inputs (the PyTorch reference for verification)."""
    tensors = {name: torch.from_numpy(np.ascontiguousarray(v)) for name, v in inputs.items()}
    result = module(**tensors)
    return {name: value.numpy() for name, value in result.items()}
