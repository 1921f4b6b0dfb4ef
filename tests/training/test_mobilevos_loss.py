"""MobileVOS's loss terms on small tensors against values computed by hand (seed 002, §3)."""

from __future__ import annotations

import math

import pytest
import torch

from mobdistill.training.mobilevos_loss import (
    MobileVOSLoss,
    MobileVOSLossConfig,
    bootstrap_fraction,
    bootstrapped_poly_cross_entropy,
    boundary_band,
    logit_distillation,
    poly1_cross_entropy,
    representation_loss,
)

LN3 = math.log(3.0)


def _pixels(*logit_pairs: tuple[float, float]) -> torch.Tensor:
    """(1, 2, 1, P) logits, one pixel per pair."""
    return torch.tensor(logit_pairs).t()[None, :, None, :]


def test_poly1_is_cross_entropy_plus_one_minus_p() -> None:
    loss = poly1_cross_entropy(_pixels((0.0, 0.0), (LN3, 0.0)), torch.zeros(1, 1, 2).long())
    # [0, 0]: CE = ln 2, p = 1/2.  [ln 3, 0]: p = 3/4, CE = ln(4/3).
    assert loss.flatten().tolist() == pytest.approx([math.log(2) + 0.5, math.log(4 / 3) + 0.25])
    ce_only = poly1_cross_entropy(_pixels((0.0, 0.0)), torch.zeros(1, 1, 1).long(), epsilon=0.0)
    assert float(ce_only) == pytest.approx(math.log(2))


def test_bootstrapping_keeps_the_hardest_pixels_on_stcn_schedule() -> None:
    logits, target = _pixels((0.0, 0.0), (LN3, 0.0)), torch.zeros(1, 1, 2).long()
    hard, easy = math.log(2) + 0.5, math.log(4 / 3) + 0.25
    mean = bootstrapped_poly_cross_entropy(logits, target)
    hardest = bootstrapped_poly_cross_entropy(logits, target, fraction=0.5)
    assert float(mean) == pytest.approx((hard + easy) / 2)
    assert float(hardest) == pytest.approx(hard)
    assert bootstrap_fraction(0) == 1.0
    assert bootstrap_fraction(45_000) == pytest.approx(0.15 + 0.85 * 0.5)
    assert bootstrap_fraction(70_000) == bootstrap_fraction(10**6) == 0.15
    with pytest.raises(ValueError):
        bootstrapped_poly_cross_entropy(logits, target, fraction=0.0)


def test_boundary_band_follows_the_sobel_edge() -> None:
    target = torch.zeros(1, 6, 6, dtype=torch.long)
    target[:, :, 3:] = 1
    columns = lambda band: sorted(set(band[0].nonzero()[:, 1].tolist()))  # noqa: E731
    assert columns(boundary_band(target, 2, width=0)) == [2, 3]
    assert columns(boundary_band(target, 2, width=1)) == [1, 2, 3, 4]
    assert not boundary_band(torch.zeros(1, 6, 6, dtype=torch.long), 2).any()


IDENTICAL = torch.tensor([[1.0, 0.0], [2.0, 0.0]])  # normalised: both (1, 0), C_s = all ones
ORTHOGONAL = torch.tensor([[1.0, 0.0], [0.0, 3.0]])  # normalised: C = identity
SAME_CLASS = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
OTHER_CLASS = torch.tensor([[1.0, 0.0], [0.0, 1.0]])


def test_representation_loss_hand_values() -> None:
    # ω = 0, supervised contrastive: two pixels of different classes the student maps together:
    # (log2 ‖C_s‖² − log2 ‖C_s ⊙ I‖²) / 2 = (log2 4 − log2 2) / 2
    assert float(representation_loss(IDENTICAL, ORTHOGONAL, OTHER_CLASS, 0.0)) == pytest.approx(0.5)
    # ... and of the same class: C_ty = ones, nothing to pay.
    assert float(representation_loss(IDENTICAL, ORTHOGONAL, SAME_CLASS, 0.0)) == pytest.approx(0.0)
    # ω = 1, pure distillation: the teacher keeps the pixels apart (C_t = I): the same 0.5.
    assert float(representation_loss(IDENTICAL, ORTHOGONAL, SAME_CLASS, 1.0)) == pytest.approx(0.5)
    # ω = 1/2 between C_t = ones and YYᵀ = I: C_ty = [[1, .5], [.5, 1]], ‖C_s ⊙ C_ty‖² = 2.5
    mixed = representation_loss(IDENTICAL, IDENTICAL, OTHER_CLASS, 0.5)
    assert float(mixed) == pytest.approx((2 - math.log2(2.5)) / 2)


def test_omega_ends_ignore_the_other_target() -> None:
    z_s, z_t = torch.randn(6, 4), torch.randn(6, 8)
    y1 = torch.nn.functional.one_hot(torch.tensor([0, 0, 1, 1, 0, 1]), 2)
    y2 = torch.nn.functional.one_hot(torch.tensor([1, 0, 0, 1, 1, 1]), 2)
    def loss(z_teacher: torch.Tensor, labels: torch.Tensor, omega: float) -> float:
        return float(representation_loss(z_s, z_teacher, labels, omega))

    assert loss(z_t, y1, 1.0) == loss(z_t, y2, 1.0)  # pure distillation: labels unused
    assert loss(z_t, y1, 0.0) == loss(torch.randn(6, 8), y1, 0.0)  # pure contrastive: no teacher
    assert loss(z_t, y1, 0.0) != loss(z_t, y2, 0.0)


def test_logit_distillation_hand_values() -> None:
    student = _pixels((0.0, 0.0), (0.0, 0.0))
    teacher = _pixels((0.0, 0.0), (LN3, 0.0))
    kl = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)  # KL([3/4, 1/4] ‖ [1/2, 1/2])
    assert float(logit_distillation(student, teacher, 1.0)) == pytest.approx(kl / 2)
    only_second = torch.tensor([[[False, True]]])
    assert float(logit_distillation(student, teacher, 1.0, only_second)) == pytest.approx(kl)
    # τ = 1/2 sharpens the teacher to [0.9, 0.1]
    sharp = 0.9 * math.log(1.8) + 0.1 * math.log(0.2)
    assert float(logit_distillation(student, teacher, 0.5, only_second)) == pytest.approx(sharp)


def test_the_unified_loss_trains_the_student_and_its_embedding() -> None:
    torch.manual_seed(0)
    target = torch.zeros(2, 16, 16, dtype=torch.long)
    target[:, 4:12, 4:12] = 1
    student_logits = torch.randn(2, 2, 16, 16, requires_grad=True)
    student_repr = torch.randn(2, 8, 8, 8, requires_grad=True)
    loss = MobileVOSLoss(8, 12, MobileVOSLossConfig(max_pixels=16))
    terms = loss(student_logits, student_repr, torch.randn(2, 2, 16, 16), torch.randn(2, 12, 8, 8),
                 target, iteration=0, generator=torch.Generator().manual_seed(0))
    assert 2 <= terms.sampled_pixels <= 32
    assert terms.representation > 0 and terms.logit > 0 and terms.cross_entropy > 0
    parts = terms.cross_entropy + terms.logit + terms.representation
    assert float(terms.total) == pytest.approx(parts, rel=1e-5)
    terms.total.backward()
    assert student_repr.grad is not None and student_repr.grad.abs().sum() > 0
    assert loss.embed.weight.grad is not None and loss.embed.weight.grad.abs().sum() > 0
    uniform = loss(student_logits, student_repr, torch.randn(2, 2, 16, 16),
                   torch.randn(2, 12, 8, 8), torch.zeros(2, 16, 16, dtype=torch.long), iteration=0)
    assert uniform.sampled_pixels == 0 and uniform.representation == 0.0 and uniform.logit == 0.0
