"""Structured selection: whole rows (output channels) instead of single coordinates.

A phase may change only whole rows (axis 0 of each trainable parameter: a convolution's output
channel, a matrix's row; each element of a vector is its own row), highest score first until γ
of all coordinates are covered (phase 1: random rows). Two scores: ``rows``, the row's mean
|last optimizer update|; ``ams-rows``, the fraction of the row that AMS's own top-γ coordinate
selection would train (greedy coverage of AMS's choice per coordinate spent; ties by mean
|update|), so training stays close to AMS's while the indices stay whole rows. In
deployed space an output channel of a convolution is one contiguous run (TFLite's OHWI), so the
packet's index gaps are runs of zeros that deflate to almost nothing: at γ = 5 % the indices of
a DeepLab update cost ~3 KB instead of ~68 KB (benchmarks/update_coding.py).
"""

from __future__ import annotations

from typing import Sequence

import torch

from mobdistill.errors import UsageError
from mobdistill.server.selection import AdamConfig, CoordinateDescent, MomentumConfig, top_fraction

SELECTIONS = ("paper", "code", "random", "rows", "ams-rows")
ROW_SCORES = {"rows": "mean", "ams-rows": "ams"}


class RowDescent(CoordinateDescent):
    """`CoordinateDescent` whose phase masks are whole rows (the optimizer state still moves for
    every coordinate every iteration, as in the paper variant). ``score``: ``"mean"`` or
    ``"ams"`` (module docstring)."""

    def __init__(self, params: Sequence[torch.nn.Parameter], *, gamma: float,
                 rule: AdamConfig | MomentumConfig, generator: torch.Generator | None,
                 score: str = "mean") -> None:
        super().__init__(params, gamma=gamma, rule=rule, generator=generator)
        if score not in ROW_SCORES.values():
            raise UsageError(f"row score {score!r} must be one of {sorted(ROW_SCORES.values())}")
        self.score = score

    def begin_phase(self) -> None:
        super().begin_phase()
        rows = [p.reshape(p.shape[0], -1) if p.dim() > 1 else p.reshape(-1, 1)
                for p in self.params]
        if self.last_update is None:
            scores = [torch.rand(r.shape[0], generator=self.generator) for r in rows]
        else:
            scores = [u.abs().reshape(r.shape).mean(1) for u, r in zip(self.last_update, rows)]
            if self.score == "ams":
                scores = _ams_coverage(self.last_update, rows, scores, self.gamma)
        self.masks = _top_rows(scores, rows, self.params, self.gamma)


def _ams_coverage(last_update: list[torch.Tensor], rows: list[torch.Tensor],
                  mean_update: list[torch.Tensor], gamma: float) -> list[torch.Tensor]:
    """Per row, the fraction of its coordinates in AMS's top-γ |update| set, plus a tie-break
    by mean |update| smaller than any two different fractions can differ (1 / longest row²)."""
    picked = top_fraction([u.abs() for u in last_update], gamma)
    longest = max(r.shape[1] for r in rows)
    scale = float(torch.cat(mean_update).max()) * (longest * longest + 1) or 1.0
    return [m.reshape(r.shape).double().mean(1) + mu.double() / scale
            for m, r, mu in zip(picked, rows, mean_update)]


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
    """The optimizer for ``selection``: one of `SELECTIONS` (``rows``, ``ams-rows``:
    `RowDescent`)."""
    if selection in ROW_SCORES:
        return RowDescent(params, gamma=gamma, rule=rule, generator=generator,
                          score=ROW_SCORES[selection])
    return CoordinateDescent(params, gamma=gamma, variant=selection, rule=rule,
                             generator=generator)
