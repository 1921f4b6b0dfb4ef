"""Checks on a `mobdistill profile` folder that the engine-runner and app-runner tests share."""

from __future__ import annotations

import csv
from pathlib import Path


def check_runner_labels(out: Path, runner: str) -> None:
    """frames.csv's runner column and latency.png's title (its PNG Title text) name the runner."""
    from PIL import Image

    with open(out / "frames.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and {row["runner"] for row in rows} == {runner}
    with Image.open(out / "latency.png") as png:
        assert f"({runner} runner)" in png.text["Title"]
