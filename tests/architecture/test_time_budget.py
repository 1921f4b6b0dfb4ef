"""Every test area declares its share of the suite's time (tests/support/time_budget.py)."""

from __future__ import annotations

from pathlib import Path

from time_budget import BUDGET_S, area_of

TESTS = Path(__file__).resolve().parents[1]


def test_every_area_with_tests_has_a_budget() -> None:
    areas = {p.parent.relative_to(TESTS).parts[0] for p in TESTS.rglob("test_*.py")}
    assert areas - set(BUDGET_S) == set(), "add the new area to time_budget.BUDGET_S"
    assert set(BUDGET_S) - areas == set(), "a budget for an area that has no tests"


def test_area_is_the_folder_under_tests() -> None:
    assert area_of("tests/engine/test_engine.py::test_x[a/b]") == "engine"
    assert area_of("tests/adb/sub/test_y.py::test_z") == "adb"
    assert area_of("tests/test_top.py::test_t") == "tests"
