"""MobileVOS's training loss (seed 002, §3 and Algorithm 1):

    L = bootstrapped poly-1 cross-entropy (ε = 1)
      + logit distillation, KL at temperature τ on boundary pixels           (eq. 9)
      + representation loss on boundary pixels, unified with supervised
        pixel-wise contrastive learning through ω                            (eqs. 2, 5, 6)

Where the paper is ambiguous, the choice is named at the function that makes it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def poly1_cross_entropy(logits: torch.Tensor, target: torch.Tensor,
                        epsilon: float = 1.0) -> torch.Tensor:
    """Per-pixel Poly-1 loss (Leng et al., the paper's [25]): CE + ε·(1 − p_target).
    logits (N, C, H, W), target (N, H, W) class indices -> (N, H, W)."""
    ce = F.cross_entropy(logits, target, reduction="none")
    p_target = torch.softmax(logits, dim=1).gather(1, target[:, None]).squeeze(1)
    return ce + epsilon * (1.0 - p_target)


def bootstrap_fraction(iteration: int, start_warm: int = 20_000, end_warm: int = 70_000,
                       top_p: float = 0.15) -> float:
    """STCN's bootstrapping schedule (MobileVOS follows STCN's recipe): every pixel until
    `start_warm`, then the hardest share falls linearly to `top_p` at `end_warm`."""
    if iteration < start_warm:
        return 1.0
    if iteration >= end_warm:
        return top_p
    return top_p + (1.0 - top_p) * (end_warm - iteration) / (end_warm - start_warm)


def bootstrapped_poly_cross_entropy(logits: torch.Tensor, target: torch.Tensor, *,
                                    fraction: float = 1.0, epsilon: float = 1.0) -> torch.Tensor:
    """The mean Poly-1 loss over the hardest `fraction` of pixels (STCN's bootstrapped CE with
    the cross-entropy replaced by Poly-1, as MobileVOS does)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    losses = poly1_cross_entropy(logits, target, epsilon).flatten()
    if fraction >= 1.0:
        return losses.mean()
    keep = max(1, int(losses.numel() * fraction))
    return torch.topk(losses, keep, sorted=False).values.mean()


_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def boundary_band(target: torch.Tensor, num_classes: int, width: int = 2) -> torch.Tensor:
    """Pixels on or within `width` pixels of a class boundary (§3.3; the footnote of Algorithm 1
    names a Sobel edge detector on the ground-truth masks). target (N, H, W) -> bool (N, H, W).
    The band's width is not given in the paper; it is a parameter here."""
    one_hot = F.one_hot(target, num_classes).permute(0, 3, 1, 2).float()
    kernels = torch.stack([_SOBEL_X, _SOBEL_X.t()])[:, None].to(one_hot)
    flat = one_hot.reshape(-1, 1, *one_hot.shape[2:])
    gradients = F.conv2d(F.pad(flat, (1, 1, 1, 1), mode="replicate"), kernels)
    edges = gradients.abs().sum(1).reshape(one_hot.shape).amax(1, keepdim=True) > 0
    band = F.max_pool2d(edges.float(), 2 * width + 1, stride=1, padding=width)
    return band[:, 0] > 0


def representation_loss(z_student: torch.Tensor, z_teacher: torch.Tensor,
                        labels_one_hot: torch.Tensor, omega: float) -> torch.Tensor:
    """Eq. 2 with C_t replaced by C_ty = ω·C_t + (1 − ω)·YYᵀ (eq. 6), for one frame's P sampled
    pixels: z_student (P, d_s), z_teacher (P, d_t), labels_one_hot (P, C).

    ω = 1 is pure representation distillation, ω = 0 supervised contrastive learning. The
    normaliser |C_s| is read as the number of sampled pixels P (Algorithm 1 divides by
    len(z_s)); Algorithm 1's second line assigns where eq. 2 subtracts: eq. 2 is followed."""
    if not 0.0 <= omega <= 1.0:
        raise ValueError(f"omega must be in [0, 1], got {omega}")
    zs = F.normalize(z_student, dim=1)
    zt = F.normalize(z_teacher, dim=1)
    c_s = zs @ zs.t()
    y = labels_one_hot.to(zs)
    c_ty = omega * (zt @ zt.t()) + (1.0 - omega) * (y @ y.t())
    regulariser = torch.log2(c_s.pow(2).sum())
    alignment = torch.log2((c_s * c_ty).pow(2).sum().clamp_min(1e-12))
    return (regulariser - alignment) / zs.shape[0]


def logit_distillation(student_logits: torch.Tensor, teacher_logits: torch.Tensor, tau: float,
                       pixels: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 9, the mean over the selected pixels of KL between the teacher's and the student's
    class distributions at temperature τ. Eq. 9 writes KL(p_S ‖ p_T) while Algorithm 1 calls
    kl(prob_t, prob_s); this follows the usual distillation direction KL(p_T ‖ p_S), the one
    Algorithm 1's call computes with PyTorch's argument order. logits (N, C, H, W); pixels a
    bool (N, H, W) selection (all pixels when None)."""
    log_p_student = F.log_softmax(student_logits / tau, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits / tau, dim=1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(1)
    if pixels is None:
        return kl.mean()
    if not pixels.any():
        return kl.sum() * 0.0
    return kl[pixels].mean()


@dataclass(frozen=True)
class MobileVOSLossConfig:
    omega: float = 0.95  # the paper's value for MobileNet students (0 for ResNet18)
    tau: float = 0.1
    epsilon: float = 1.0
    boundary_width: int = 2  # pixels, at each tensor's own resolution
    max_pixels: int = 1024  # cap on sampled pixels per frame (the P×P correlation matrices)
    bootstrap_start: int = 20_000
    bootstrap_end: int = 70_000
    bootstrap_top_p: float = 0.15


@dataclass(frozen=True)
class LossTerms:
    total: torch.Tensor
    cross_entropy: float
    logit: float
    representation: float
    sampled_pixels: int


class MobileVOSLoss(nn.Module):
    """The unified loss with the training-only linear embedding of the student's representation
    into the teacher's width (Algorithm 1's `embed_s`)."""

    def __init__(self, student_dim: int, teacher_dim: int,
                 config: MobileVOSLossConfig = MobileVOSLossConfig()) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Conv2d(student_dim, teacher_dim, kernel_size=1)

    def forward(self, student_logits: torch.Tensor, student_repr: torch.Tensor,
                teacher_logits: torch.Tensor, teacher_repr: torch.Tensor,
                target: torch.Tensor, iteration: int,
                generator: torch.Generator | None = None) -> LossTerms:
        """logits (N, C, H, W) at the target's resolution; representations (N, d, h, w) before
        the last point-wise conv, at their own (lower) resolution; target (N, H, W)."""
        c = self.config
        num_classes = student_logits.shape[1]
        fraction = bootstrap_fraction(iteration, c.bootstrap_start, c.bootstrap_end,
                                      c.bootstrap_top_p)
        ce = bootstrapped_poly_cross_entropy(student_logits, target, fraction=fraction,
                                             epsilon=c.epsilon)
        logit = logit_distillation(student_logits, teacher_logits, c.tau,
                                   boundary_band(target, num_classes, c.boundary_width))
        representation, sampled = self._representation(student_repr, teacher_repr, target,
                                                       num_classes, generator)
        return LossTerms(ce + logit + representation, float(ce.detach()), float(logit.detach()),
                         float(representation.detach()), sampled)

    def _representation(self, student_repr: torch.Tensor, teacher_repr: torch.Tensor,
                        target: torch.Tensor, num_classes: int,
                        generator: torch.Generator | None) -> tuple[torch.Tensor, int]:
        """Eq. 2/6 per frame on boundary pixels at the representations' resolution (labels
        downsampled by nearest neighbour so that YYᵀ stays in {0, 1}), averaged over frames."""
        c = self.config
        embedded = self.embed(student_repr)
        h, w = embedded.shape[2:]
        small = F.interpolate(target[:, None].float(), size=(h, w), mode="nearest")[:, 0].long()
        band = boundary_band(small, num_classes, c.boundary_width)
        losses, sampled = [], 0
        for frame in range(embedded.shape[0]):
            where = band[frame].flatten().nonzero().squeeze(1)
            if where.numel() < 2:
                continue
            if where.numel() > c.max_pixels:
                pick = torch.randperm(where.numel(), generator=generator)[:c.max_pixels]
                where = where[pick]
            zs = embedded[frame].flatten(1).t()[where]
            zt = teacher_repr[frame].flatten(1).t()[where]
            y = F.one_hot(small[frame].flatten()[where], num_classes)
            losses.append(representation_loss(zs, zt, y, c.omega))
            sampled += where.numel()
        if not losses:
            return embedded.sum() * 0.0, 0
        return torch.stack(losses).mean(), sampled
