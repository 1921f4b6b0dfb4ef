"""What every benchmark JSON records beside its numbers: the commit that measured them, the
settings they were measured with, and the host."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def commit() -> str:
    """HEAD's hash, with "+dirty" when tracked files differ from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                              check=False).stdout.strip()

    head = git("rev-parse", "HEAD") or "unknown"
    return head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def provenance(settings: dict[str, Any]) -> dict[str, Any]:
    return {"commit": commit(), "settings": settings,
            "host": {"machine": platform.machine(), "processor": platform.processor(),
                     "node": platform.node(), "cpu_count": os.cpu_count()}}
