"""Delta Distillation's training objective (seed 003, Algorithm 1, with the task loss of §3.3).

Per distilled unit k, over consecutive frame pairs (x_cur = frames[1:], x_past = frames[:-1]):

    dz_k      = f_k(x_cur) - f_k(x_past)          the original unit's change (no gradient)
    dz~_k     = g_k(x_cur, x_past)                 the student's estimate
    L_dd,k    = ||dz_k - dz~_k||_2 / sqrt(n_k)     per pair, averaged over the pairs

n_k is the element count of one pair's unit output: dividing the L2 norm by sqrt(n_k) makes it a
root-mean-square error, so units of different sizes weigh alike (a constant factor per unit; the
seed's plain norm gives the same gradient direction per unit). The total adds the task loss,
cross-entropy of the scheduled model's delta-frame logits against the teacher's labels:

    L = L_task + alpha * sum_k L_dd,k

The paper's sparsity objective L_s (its §3.3) is left out: the supplement omits it and the main
paper is not among the seeds, so its form is not known here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def delta_distillation_loss(true_delta: Tensor, estimated_delta: Tensor) -> Tensor:
    """L_dd of one unit: the L2 norm of (dz - dz~) per pair / sqrt(elements), mean over pairs.

    Args:
        true_delta: dz [P, C, h, w] (P frame pairs).
        estimated_delta: dz~, same shape.
    """
    if true_delta.shape != estimated_delta.shape:
        raise ValueError(f"delta shapes differ: {tuple(true_delta.shape)} vs "
                         f"{tuple(estimated_delta.shape)}")
    per_pair = (true_delta - estimated_delta).flatten(1)
    return (per_pair.norm(dim=1) / math.sqrt(per_pair.shape[1])).mean()


def task_loss(delta_logits: Sequence[Tensor], labels: Sequence[Tensor]) -> Tensor:
    """Mean cross-entropy of the delta frames' logits [B, K, H, W] against labels [B, H, W]."""
    if not delta_logits or len(delta_logits) != len(labels):
        raise ValueError("task loss needs one label map per delta frame (at least one)")
    return torch.stack([F.cross_entropy(logits, target)
                        for logits, target in zip(delta_logits, labels)]).mean()
