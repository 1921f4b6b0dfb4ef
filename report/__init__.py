"""`mobdistill report`: one self-contained HTML page from profile, sweep and stream runs."""

from __future__ import annotations

from pathlib import Path

from mobdistill.files import atomic_write_text
from mobdistill.report.render import render
from mobdistill.report.runs import Run, load_run

__all__ = ["Run", "load_run", "render", "write_report"]


def write_report(run_dirs: list[Path], out: Path) -> list[Run]:
    """Read every run folder and write the page to `out` (atomically); returns the runs."""
    runs = [load_run(Path(d)) for d in run_dirs]
    atomic_write_text(Path(out), render(runs))
    return runs
