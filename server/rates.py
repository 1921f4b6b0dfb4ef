"""Adaptive Sampling Rate (ASR, uplink frames/s) and Adaptive Training Rate (ATR, T_update).

ASR (specs §3; public AMS code): every δt the server computes φ, the mean teacher mIoU between
consecutive sampled labels (1 = nothing changed), and sets
``r ← clip(r − 0.2·tanh(20(φ − 0.6)), r_min, r_max)``: similar labels lower the rate. The paper's
form (eq. 1, φ as a *loss*, r ← clip(r + η(φ̄ − φ_target))) is available as ``rule="paper"`` with
φ = 1 − mIoU.

ATR (paper App. D): hibernate when the mean of the last 5 rates < 0.25 fps; while hibernating
T_update += 2 s per interval up to 6·T₀; wake when it exceeds 0.35 fps and reset T_update = T₀.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from mobdistill.errors import UsageError


def miou(prediction: np.ndarray, target: np.ndarray, num_classes: int) -> float:
    """Mean IoU over the classes present in either map (1.0 for two empty maps)."""
    ious = []
    for c in range(num_classes):
        p, t = prediction == c, target == c
        union = np.logical_or(p, t).sum()
        if union:
            ious.append(np.logical_and(p, t).sum() / union)
    return float(np.mean(ious)) if ious else 1.0


@dataclass
class AdaptiveRates:
    """Both controllers for one session. Call `observe_labels` per labelled frame and
    `end_interval` every δt (the server calls it after each update)."""

    update_interval_s: float = 10.0
    rate_fps: float = 1.0
    r_min: float = 0.1
    r_max: float = 1.0
    rule: str = "code"
    eta: float = 1.0
    phi_target: float = 0.4  # paper rule only: target label-change loss
    hibernate_below_fps: float = 0.25
    wake_above_fps: float = 0.35
    hibernate_step_s: float = 2.0
    max_interval_factor: float = 6.0
    history: int = 5
    hibernating: bool = False
    _phis: list[float] = field(default_factory=list)
    _rates: deque = field(default_factory=lambda: deque(maxlen=5))

    def __post_init__(self) -> None:
        if self.rule not in ("code", "paper"):
            raise UsageError(f"ASR rule {self.rule!r} must be 'code' or 'paper'")
        self.base_interval_s = self.update_interval_s
        self._rates = deque(maxlen=self.history)

    def observe_labels(self, previous: np.ndarray, current: np.ndarray, num_classes: int) -> None:
        self._phis.append(miou(current, previous, num_classes))

    def end_interval(self) -> None:
        """Updates the sampling rate (ASR), then the training interval (ATR)."""
        if self._phis:
            similarity = float(np.mean(self._phis))
            if self.rule == "code":
                step = -0.2 * math.tanh(20 * (similarity - 0.6))
            else:
                step = self.eta * ((1 - similarity) - self.phi_target)
            self.rate_fps = min(self.r_max, max(self.r_min, self.rate_fps + step))
            self._phis.clear()
        self._rates.append(self.rate_fps)
        self._update_training_rate()

    def _update_training_rate(self) -> None:
        mean_rate = float(np.mean(self._rates))
        if self.hibernating and mean_rate > self.wake_above_fps:
            self.hibernating = False
        elif not self.hibernating and mean_rate < self.hibernate_below_fps:
            self.hibernating = True
        if self.hibernating:
            limit = self.max_interval_factor * self.base_interval_s
            self.update_interval_s = min(limit, self.update_interval_s + self.hibernate_step_s)
        else:
            self.update_interval_s = self.base_interval_s
