"""ASR and ATR against the rules in specs §3."""

from __future__ import annotations

import math

import numpy as np

from mobdistill.server.rates import AdaptiveRates, miou


def test_miou() -> None:
    a = np.array([[0, 0], [1, 1]])
    assert miou(a, a, 2) == 1.0
    assert math.isclose(miou(a, np.array([[0, 1], [1, 1]]), 2), (1 / 2 + 2 / 3) / 2)


def _interval(rates: AdaptiveRates, similarity: float) -> None:
    rates._phis.append(similarity)
    rates.end_interval()


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
