"""Each test area's share of `make test`: a pytest plugin that sums setup + call + teardown
seconds per area (the folder under tests/) and prints them against the area's budget.

The budgets hold the suite where it was measured (about 10-12 minutes of pytest on 2 cores with 2
workers, depending on the machine); an area over its budget is named at the end of the run, so
the author of the change that grew it sees it first and can cut or move it. Slow work goes
behind `@pytest.mark.slow` (`make test-full`).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import PurePosixPath

import pytest

# Worker-seconds per area (summed over both workers): the suite of 2026-12-02 12:17 UTC on a quiet
# 2-core VM (1,317 worker-seconds, 709 s of pytest; 1,290 and 700 s in the next run), plus
# 5-10 % for run-to-run noise.
BUDGET_S: dict[str, int] = {
    "adb": 330,
    "architecture": 45,
    "benchmarks": 5,
    "engine": 130,
    "experiments": 5,
    "export": 400,
    "fleet": 20,
    "hostile": 45,
    "live": 220,
    "models": 32,  # 28.6 s on a fresh machine (14:30 UTC), over the first 25
    "report": 10,
    "streaming": 160,
    "training": 15,
}
TOTAL_BUDGET_S = sum(BUDGET_S.values())


def area_of(nodeid: str) -> str:
    """`tests/engine/test_x.py::test_y` -> `engine`; a test directly under tests/ -> `tests`."""
    parts = PurePosixPath(nodeid.split("::", 1)[0]).parts
    return parts[1] if len(parts) > 2 and parts[0] == "tests" else "tests"


class TimeBudget:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.seconds[area_of(report.nodeid)] += report.duration

    @pytest.hookimpl
    def pytest_terminal_summary(self, terminalreporter) -> None:
        if not self.seconds:
            return
        terminalreporter.section("time per area (worker-seconds vs budget)")
        over = []
        for area, spent in sorted(self.seconds.items(), key=lambda kv: -kv[1]):
            budget = BUDGET_S.get(area)
            mark = "" if budget is None or spent <= budget else "  OVER BUDGET"
            if mark:
                over.append(area)
            shown = "-" if budget is None else f"{budget}"
            terminalreporter.write_line(f"{area:14s} {spent:7.1f} s / {shown:>5s} s{mark}")
        total = sum(self.seconds.values())
        terminalreporter.write_line(f"{'all':14s} {total:7.1f} s / {TOTAL_BUDGET_S:5d} s")
        if over:
            terminalreporter.write_line(
                f"over budget: {', '.join(over)} (tests/support/time_budget.py says how the "
                "budgets are set; move slow work behind @pytest.mark.slow)", yellow=True)


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(TimeBudget(), "mobdistill-time-budget")
