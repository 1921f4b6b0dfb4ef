"""Every committed benchmark result says which commit measured it and with which settings."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
COMMIT = re.compile(r"^[0-9a-f]{40}(\+dirty)?$")


@pytest.mark.parametrize("path", sorted(RESULTS.glob("*.json")), ids=lambda p: p.name)
def test_result_records_commit_and_settings(path):
    data = json.loads(path.read_text())
    assert isinstance(data, dict), "a result file is one JSON object"
    assert COMMIT.match(str(data.get("commit", ""))), f"{path.name}: no commit hash"
    assert isinstance(data.get("settings"), dict) and data["settings"], \
        f"{path.name}: no settings"
