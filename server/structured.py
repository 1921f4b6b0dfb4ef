"""Structured selection: whole rows (output channels) instead of single coordinates.

A phase may change only the rows (axis 0 of each trainable parameter: a convolution's output
channel, a matrix's row; each element of a vector is its own row) with the largest mean
|last optimizer update|, until γ of all coordinates are covered (phase 1: random rows). In
deployed space an output channel of a convolution is one contiguous run (TFLite's OHWI), so the
packet's index gaps are runs of zeros that deflate to almost nothing: at γ = 5 % the indices of
a DeepLab update cost ~3 KB instead of ~68 KB (benchmarks/update_coding.py).
"""

from __future__ import annotations

from typing import Sequence

import torch

from mobdistill.server.selection import AdamConfig, CoordinateDescent, MomentumConfig

SELECTIONS = ("paper", "code", "random", "rows")


class RowDescent(CoordinateDescent):
    """`CoordinateDescent` whose phase masks are whole rows (the optimizer state still moves for
    every coordinate every iteration, as in the paper variant)."""

    def begin_phase(self) -> None:
        super().begin_phase()
        rows = [p.reshape(p.shape[0], -1) if p.dim() > 1 else p.reshape(-1, 1)
                for p in self.params]
        if self.last_update is None:
            scores = [torch.rand(r.shape[0], generator=self.generator) for r in rows]
        else:
            scores = [u.abs().reshape(r.shape).mean(1) for u, r in zip(self.last_update, rows)]
        self.masks = _top_rows(scores, rows, self.params, self.gamma)


def _top_rows(scores: list[torch.Tensor], rows: list[torch.Tensor],
              params: Sequence[torch.Tensor], gamma: float) -> list[torch.Tensor]:
    """Masks of the highest-scoring rows whose sizes add up to at most γ of all coordinates
    (at least one row)."""
    flat = torch.cat(scores)
    sizes = torch.cat([torch.full((r.shape[0],), r.shape[1]) for r in rows])
    order = torch.argsort(flat, descending=True)
    budget = gamma * float(sizes.sum())
    keep = order[:max(1, int((torch.cumsum(sizes[order], 0) <= budget).sum()))]
    chosen = torch.zeros(flat.numel(), dtype=torch.bool)
    chosen[keep] = True
    return [c[:, None].expand(r.shape).reshape(p.shape)
            for c, r, p in zip(torch.split(chosen, [r.shape[0] for r in rows]), rows, params)]


def coordinate_descent(params: Sequence[torch.nn.Parameter], *, gamma: float, selection: str,
                       rule: AdamConfig | MomentumConfig,
                       generator: torch.Generator | None) -> CoordinateDescent:
    """The optimizer for ``selection``: one of `SELECTIONS` (``rows``: `RowDescent`)."""
    if selection == "rows":
        return RowDescent(params, gamma=gamma, rule=rule, generator=generator)
    return CoordinateDescent(params, gamma=gamma, variant=selection, rule=rule,
                             generator=generator)
