"""ASR and ATR against the rules in specs §3, evaluated every δt; both mIoU definitions."""

from __future__ import annotations

import math

import numpy as np

from mobdistill.server.rates import AdaptiveRates, foreground_miou, miou


def test_miou() -> None:
    a = np.array([[0, 0], [1, 1]])
    assert miou(a, a, 2) == 1.0
    assert math.isclose(miou(a, np.array([[0, 1], [1, 1]]), 2), (1 / 2 + 2 / 3) / 2)


def _interval(rates: AdaptiveRates, similarity: float) -> None:
    rates._phis.append(similarity)
    rates.evaluate()


def test_asr_code_rule() -> None:
    rates = AdaptiveRates(rate_fps=0.5)
    _interval(rates, 0.9)  # static scene: rate drops by 0.2·tanh(6)
    assert math.isclose(rates.rate_fps, 0.5 - 0.2 * math.tanh(6))
    for _ in range(4):  # fast change: rate rises, clipped at r_max
        _interval(rates, 0.2)
    assert rates.rate_fps == 1.0
    for _ in range(20):
        _interval(rates, 1.0)
    assert rates.rate_fps == 0.1


def test_atr_hibernates_grows_and_wakes() -> None:
    rates = AdaptiveRates(update_interval_s=10.0, rate_fps=0.1)
    intervals = []
    for _ in range(30):
        _interval(rates, 1.0)
        intervals.append(rates.update_interval_s)
    assert rates.hibernating and intervals[0] == 12.0 and intervals[1] == 14.0
    assert max(intervals) == 60.0  # capped at 6·T0
    for _ in range(6):
        _interval(rates, 0.0)
    assert not rates.hibernating and rates.update_interval_s == 10.0


def test_miou_with_and_without_background_on_hand_made_masks() -> None:
    """3 classes, background 0; the IoUs worked out by hand below."""
    target = np.array([[0, 0, 0, 1], [1, 1, 2, 2]])
    prediction = np.array([[0, 0, 1, 1], [0, 2, 2, 0]])
    # class 0: pred {00,01,10,13}, target {00,01,02}: inter 2, union 5 -> 2/5
    # class 1: pred {02,03}, target {03,10,11}: inter 1, union 4 -> 1/4
    # class 2: pred {11,12}, target {12,13}: inter 1, union 3 -> 1/3
    assert math.isclose(miou(prediction, target, 3), (2 / 5 + 1 / 4 + 1 / 3) / 3)
    assert math.isclose(foreground_miou(prediction, target, 3), (1 / 4 + 1 / 3) / 2)
    # a frame without a person in either map: nothing to score in the foreground definition,
    # a perfect 1.0 (one class, fully agreed) in the definition with background
    empty = np.zeros((2, 4), np.int64)
    assert foreground_miou(empty, empty, 2) is None and miou(empty, empty, 2) == 1.0
    # a person predicted where the teacher sees none scores 0, not "nothing to score"
    assert foreground_miou(np.eye(2, 4, dtype=np.int64), empty, 2) == 0.0


def test_asr_is_re_evaluated_every_delta_t_without_training() -> None:
    rates = AdaptiveRates(update_interval_s=10.0, asr_interval_s=2.0, rate_fps=0.5)
    same = np.zeros((4, 4), np.int64)
    rates.observe_labels(same, same, 2)  # φ = 1: static scene
    assert rates.advance(1.9) == 0 and rates.rate_fps == 0.5
    assert rates.advance(2.0) == 1 and math.isclose(rates.rate_fps, 0.5 - 0.2 * math.tanh(8))
    changed = np.ones((4, 4), np.int64)
    rates.observe_labels(same, changed, 2)  # φ = 0: everything changed
    assert rates.advance(6.0) == 2  # two boundaries passed: 4 s (new label) and 6 s (none)
    assert math.isclose(rates.rate_fps, min(1.0, 0.5 - 0.2 * math.tanh(8) + 0.2 * math.tanh(12)))
    assert rates.evaluations == 3


def test_hibernating_session_keeps_re_evaluating_asr_every_delta_t() -> None:
    """In hibernation T_update grows by 2 s per δt, but the rate is still re-evaluated every δt:
    a scene change wakes the session within δt-steps, not within ever longer training intervals."""
    rates = AdaptiveRates(update_interval_s=10.0, asr_interval_s=10.0, rate_fps=0.1)
    still = np.zeros((4, 4), np.int64)
    for k in range(1, 6):
        rates.observe_labels(still, still, 2)
        rates.advance(10.0 * k)
    assert rates.hibernating and rates.update_interval_s == 20.0  # 5 δt steps of +2 s
    moving = np.ones((4, 4), np.int64)
    for k in range(6, 12):
        rates.observe_labels(still, moving, 2)
        rates.advance(10.0 * k)
        if not rates.hibernating:
            break
    assert not rates.hibernating and rates.update_interval_s == 10.0
    assert rates.evaluations == k  # one evaluation per δt, none skipped while hibernating
