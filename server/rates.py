"""Adaptive Sampling Rate (ASR, uplink frames/s), Adaptive Training Rate (ATR, T_update), and the
two mIoU definitions the papers use.

Both controllers run every δt (the paper's rate-update interval, §3.2 and App. D), whatever
T_update is: ASR computes φ, the mean teacher mIoU between consecutive sampled labels received
since the last evaluation (1 = nothing changed), and sets
``r ← clip(r − 0.2·tanh(20(φ − 0.6)), r_min, r_max)`` (the public code's rule); the paper's form
(eq. 1, φ as a *loss*, ``r ← clip(r + η(φ − φ_target))``) is ``rule="paper"`` with φ = 1 − mIoU.
Then ATR: hibernate when the mean of the last 5 rates < 0.25 fps; while hibernating
T_update += 2 s per δt up to 6·T₀; wake above 0.35 fps and reset T_update = T₀. (The public code
evaluates both only when it trains, so under hibernation it re-evaluates less and less often.)
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from mobdistill.errors import UsageError


def miou(prediction: np.ndarray, target: np.ndarray, num_classes: int) -> float:
    """Mean IoU over the classes present in either map, background included (1.0 for two maps
    that share a single class)."""
    ious = _ious(prediction, target, range(num_classes))
    return float(np.mean(ious)) if ious else 1.0


def foreground_miou(prediction: np.ndarray, target: np.ndarray, num_classes: int,
                    background: int = 0) -> float | None:
    """JITNet's definition: mean IoU over the foreground classes present in either map, the
    background class excluded. None when neither map holds any foreground pixel (the frame has
    nothing to score: callers leave it out of the mean and count it)."""
    ious = _ious(prediction, target, (c for c in range(num_classes) if c != background))
    return float(np.mean(ious)) if ious else None


def _ious(prediction: np.ndarray, target: np.ndarray, classes) -> list[float]:
    ious = []
    for c in classes:
        p, t = prediction == c, target == c
        union = np.logical_or(p, t).sum()
        if union:
            ious.append(float(np.logical_and(p, t).sum() / union))
    return ious


@dataclass
class AdaptiveRates:
    """Both controllers for one session. Call `observe_labels` per labelled frame and
    `advance(now_s)` as the server clock moves: it evaluates ASR then ATR at every δt boundary
    (``asr_interval_s``) passed since the last call."""

    update_interval_s: float = 10.0
    asr_interval_s: float = 10.0
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
    evaluations: int = 0
    _phis: list[float] = field(default_factory=list)
    _rates: deque = field(default_factory=lambda: deque(maxlen=5))

    def __post_init__(self) -> None:
        if self.rule not in ("code", "paper"):
            raise UsageError(f"ASR rule {self.rule!r} must be 'code' or 'paper'")
        if self.asr_interval_s <= 0:
            raise UsageError(f"the ASR interval δt={self.asr_interval_s} s must be positive")
        self.base_interval_s = self.update_interval_s
        self._rates = deque(maxlen=self.history)

    @property
    def next_evaluation_s(self) -> float:
        return (self.evaluations + 1) * self.asr_interval_s

    def observe_labels(self, previous: np.ndarray, current: np.ndarray, num_classes: int) -> None:
        self._phis.append(miou(current, previous, num_classes))

    def advance(self, now_s: float) -> int:
        """Evaluates every δt boundary ≤ ``now_s`` not yet evaluated; returns how many."""
        done = 0
        while self.next_evaluation_s <= now_s + 1e-9:
            self.evaluate()
            done += 1
        return done

    def evaluate(self) -> None:
        """One δt step: the sampling rate (ASR; unchanged when no new labels arrived), then the
        training interval (ATR)."""
        self.evaluations += 1
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
