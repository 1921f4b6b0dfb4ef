"""Gradient-guided coordinate descent: which coordinates move, and Adam's state."""

from __future__ import annotations

import math

import pytest
import torch

from mobdistill.server.selection import AdamConfig, CoordinateDescent, MomentumConfig


def _problem(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    return model, lambda: torch.nn.functional.cross_entropy(model(x), y)


def _phase(opt: CoordinateDescent, loss_fn, k: int = 5) -> list[torch.Tensor]:
    opt.begin_phase()
    for _ in range(k):
        opt.zero_grad()
        loss_fn().backward()
        opt.step()
    return opt.end_phase()


@pytest.mark.parametrize("variant", ["paper", "code", "random"])
def test_only_selected_coordinates_change(variant: str) -> None:
    model, loss_fn = _problem()
    opt = CoordinateDescent(list(model.parameters()), gamma=0.1, variant=variant,
                                generator=torch.Generator().manual_seed(0))
    total = sum(p.numel() for p in model.parameters())
    for _ in range(3):
        before = [p.detach().clone() for p in model.parameters()]
        masks = _phase(opt, loss_fn)
        assert sum(int(m.sum()) for m in masks) == math.ceil(0.1 * total)
        after = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        was = torch.cat([b.reshape(-1) for b in before])
        chosen = torch.cat([m.reshape(-1) for m in masks])
        assert torch.equal(after[~chosen], was[~chosen])
        assert (after[chosen] != was[chosen]).float().mean() > 0.9


def test_paper_variant_selects_largest_previous_update_and_keeps_moments_consistent() -> None:
    model, loss_fn = _problem(1)
    params = list(model.parameters())
    opt = CoordinateDescent(params, gamma=0.2, variant="paper")
    _phase(opt, loss_fn)
    last = torch.cat([u.reshape(-1).abs() for u in opt.last_update])
    opt.begin_phase()
    chosen = torch.cat([m.reshape(-1) for m in opt.masks])
    assert last[chosen].min() >= last[~chosen].max()  # the top-γ |u_{n-1}|, fixed for the phase
    phase_masks = [m.clone() for m in opt.masks]

    # Reference Adam on all coordinates from the same state: m and v must match everywhere.
    m_ref = [m.clone() for m in opt.m]
    v_ref = [v.clone() for v in opt.v]
    a = AdamConfig()
    for _ in range(4):
        opt.zero_grad()
        loss_fn().backward()
        grads = [p.grad.clone() for p in params]
        opt.step()
        for i, g in enumerate(grads):
            m_ref[i] = a.beta1 * m_ref[i] + (1 - a.beta1) * g
            v_ref[i] = a.beta2 * v_ref[i] + (1 - a.beta2) * g * g
            torch.testing.assert_close(opt.m[i], m_ref[i])
            torch.testing.assert_close(opt.v[i], v_ref[i])
        assert all(torch.equal(a_, b_) for a_, b_ in zip(opt.masks, phase_masks))
    assert opt.step_count == 9


def test_first_phase_is_random_and_seeded() -> None:
    masks = []
    for _ in range(2):
        model, _ = _problem()
        opt = CoordinateDescent(list(model.parameters()), gamma=0.05,
                                    generator=torch.Generator().manual_seed(3))
        opt.begin_phase()
        masks.append(torch.cat([m.reshape(-1) for m in opt.masks]))
    assert torch.equal(masks[0], masks[1])


def _final_loss(variant: str, seed: int, rule=AdamConfig(lr=1e-2)) -> float:
    model, loss_fn = _problem(seed)
    opt = CoordinateDescent(list(model.parameters()), gamma=0.05, variant=variant, rule=rule,
                            generator=torch.Generator().manual_seed(seed))
    for _ in range(8):
        _phase(opt, loss_fn, k=10)
    return loss_fn().item()


@pytest.mark.parametrize("rule", [AdamConfig(lr=1e-2), MomentumConfig(lr=0.05)],
                         ids=["adam", "momentum"])
def test_gradient_guided_beats_random_selection(rule) -> None:
    """The paper's Table 3 comparison in miniature: at γ = 5 %, the same Adam (or momentum SGD)
    steps on the coordinates with the largest previous update fit better than on a fresh random
    set each phase — on every one of 5 seeds (smallest margin measured: 0.007, Adam seed 2;
    runs are deterministic on CPU)."""
    for seed in range(5):
        start = _problem(seed)[1]().item()
        guided, random = _final_loss("paper", seed, rule), _final_loss("random", seed, rule)
        assert guided < random < start, (seed, start, guided, random)
