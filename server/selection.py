"""Which coordinates a training phase may change: AMS gradient-guided coordinate descent.

Two variants (specs §3):

* ``"paper"`` (Alg. 2): at the start of phase n pick the γ fraction of coordinates with the largest
  |optimizer update| of the previous phase's last iteration (phase 1: uniformly random), keep the
  set fixed for the phase, and apply updates only there; the optimizer state (Adam's m, v and step
  count; SGD's momentum) is updated for **all** coordinates every iteration, so it stays consistent.
* ``"code"`` (public AMS code): take full Adam steps everywhere, then at the end of the phase keep
  the γ fraction of coordinates with the largest |Δθ| over the phase and revert the others.
* ``"random"`` (the paper's Table 3 baseline): a fresh uniformly random γ fraction every phase.

The Adam update is TensorFlow's form, as in Alg. 2 line 12 and the AMS code:
``u = lr · sqrt(1 − β2^i) / (1 − β1^i) · m / (sqrt(v) + ε)``. SGD with momentum (what the AMS
paper ran Just-In-Time with, "the gradient-guided strategy … to adapt 5% of the parameters"):
``b ← μ·b + g, u = lr · b`` (PyTorch's form).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from mobdistill.errors import UsageError

VARIANTS = ("paper", "code", "random")


@dataclass(frozen=True)
class AdamConfig:
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8


@dataclass(frozen=True)
class MomentumConfig:
    lr: float = 0.01
    momentum: float = 0.9


def top_fraction(scores: Sequence[torch.Tensor], gamma: float) -> list[torch.Tensor]:
    """Boolean masks (one per tensor) selecting the ceil(γ·N) largest scores over all tensors."""
    flat = torch.cat([s.reshape(-1) for s in scores])
    k = max(1, math.ceil(gamma * flat.numel()))
    chosen = torch.zeros(flat.numel(), dtype=torch.bool)
    chosen[torch.topk(flat, k, sorted=False).indices] = True
    parts = torch.split(chosen, [s.numel() for s in scores])
    return [part.view(s.shape) for part, s in zip(parts, scores)]


class CoordinateDescent:
    """Adam (or SGD with momentum) over ``params`` restricted, phase by phase, to a γ fraction of
    the coordinates.

    Usage per phase: ``begin_phase()``, then K × (``zero_grad``, backward, ``step()``), then
    ``masks = end_phase()`` — the coordinates this phase was allowed to change.
    """

    def __init__(self, params: Sequence[torch.nn.Parameter], *, gamma: float = 0.05,
                 variant: str = "paper", rule: AdamConfig | MomentumConfig = AdamConfig(),
                 generator: torch.Generator | None = None) -> None:
        if not 0 < gamma <= 1:
            raise UsageError(f"gamma={gamma} must be in (0, 1]: the fraction of coordinates sent")
        if variant not in VARIANTS:
            raise UsageError(f"variant {variant!r} must be one of {VARIANTS}")
        self.params = [p for p in params if p.requires_grad]
        self.gamma, self.variant, self.rule = gamma, variant, rule
        self.generator = generator
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.last_update: list[torch.Tensor] | None = None  # u_{n-1}: last Adam update, all coords
        self.step_count = 0
        self.masks: list[torch.Tensor] | None = None
        self._phase_start: list[torch.Tensor] = []

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def begin_phase(self) -> None:
        self._phase_start = [p.detach().clone() for p in self.params]
        if self.variant == "code":
            self.masks = [torch.ones_like(p, dtype=torch.bool) for p in self.params]
        elif self.variant == "random" or self.last_update is None:
            scores = [torch.rand(p.shape, generator=self.generator) for p in self.params]
            self.masks = top_fraction(scores, self.gamma)
        else:
            self.masks = top_fraction([u.abs() for u in self.last_update], self.gamma)

    @torch.no_grad()
    def step(self) -> None:
        if self.masks is None:
            raise UsageError("call begin_phase() before step()")
        self.step_count += 1
        updates = []
        for p, m, v, mask in zip(self.params, self.m, self.v, self.masks):
            g = p.grad if p.grad is not None else torch.zeros_like(p)
            u = self._update(g, m, v)
            p.sub_(u * mask)
            updates.append(u)
        self.last_update = updates

    def _update(self, g: torch.Tensor, m: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """This iteration's update u for every coordinate (state m, v updated in place)."""
        r = self.rule
        if isinstance(r, MomentumConfig):
            m.mul_(r.momentum).add_(g)
            return r.lr * m
        lr_t = r.lr * math.sqrt(1 - r.beta2 ** self.step_count) / (1 - r.beta1 ** self.step_count)
        m.mul_(r.beta1).add_(g, alpha=1 - r.beta1)
        v.mul_(r.beta2).addcmul_(g, g, value=1 - r.beta2)
        return lr_t * m / (v.sqrt() + r.eps)

    @torch.no_grad()
    def end_phase(self) -> list[torch.Tensor]:
        """The coordinates changed this phase (code variant: reverts all but the top γ |Δθ|)."""
        if self.masks is None:
            raise UsageError("call begin_phase() before end_phase()")
        if self.variant == "code":
            deltas = [(p - s).abs() for p, s in zip(self.params, self._phase_start)]
            self.masks = top_fraction(deltas, self.gamma)
            for p, start, mask in zip(self.params, self._phase_start, self.masks):
                p.copy_(torch.where(mask, p, start))
        masks, self.masks = self.masks, None
        return masks
