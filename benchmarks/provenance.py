"""What every benchmark JSON records beside its numbers: the commit that measured them, the
settings they were measured with, the host and the versions of the packages that shape the
numbers."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def commit() -> str:
    """HEAD's hash, with "+dirty" when tracked files differ from it (results excepted: a chain of
    runs rewrites them, and they are outputs, not what ran)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                              check=False).stdout.strip()

    head = git("rev-parse", "HEAD") or "unknown"
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".",
                  ":(exclude)benchmarks/results")
    return head + ("+dirty" if changed else "")


# What converts, trains and runs the models: results from two machines differ when these do
# (update_coding's starting students came out different per seed on a fresh machine).
PACKAGES = ("torch", "litert-torch", "ai-edge-litert", "litert-lm-api", "numpy", "onnxruntime",
            "av")


def packages() -> dict[str, str | None]:
    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return {name: version(name) for name in PACKAGES}


def provenance(settings: dict[str, Any]) -> dict[str, Any]:
    return {"commit": commit(), "settings": settings,
            "host": {"machine": platform.machine(), "processor": platform.processor(),
                     "node": platform.node(), "cpu_count": os.cpu_count()},
            "packages": packages()}
