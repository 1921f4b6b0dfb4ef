"""Values the session fixtures (tests/conftest.py) hand out. They live in an importable module,
not in a conftest, because `tests/support/shared.py` pickles them between pytest-xdist workers
and several folders have a module named `conftest`."""

from __future__ import annotations

import glob
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mobdistill.export.api import ExportResult
from mobdistill.models import registry

JDK = os.environ.get("JAVA_HOME") or next(iter(glob.glob("/usr/lib/jvm/java-17-openjdk-*")), "")


@dataclass(frozen=True)
class TinyExport:
    """A verified export of a tiny student whose weights tests can rebuild exactly."""

    name: str
    config: Any
    checkpoint: Path
    result: ExportResult

    @property
    def manifest_path(self) -> Path:
        return self.result.manifest_path

    @property
    def resolution(self) -> tuple[int, int]:
        return self.result.resolution

    def model(self) -> torch.nn.Module:
        model = registry.get(self.name).build(self.config)
        model.load_state_dict(torch.load(self.checkpoint, weights_only=True))
        return model.eval()



@dataclass(frozen=True)
class AndroidHost:
    """What android/verify_host.sh built: the JNI bridge on the real engine core and one jar of
    all host-compilable Kotlin (library, harness parts, the JVM checks in hostcheck/)."""

    build: Path
    script_output: str

    @property
    def jar(self) -> Path:
        return self.build / "kotlin" / "hostcheck.jar"

    @property
    def jni_dir(self) -> Path:
        return self.build / "jni"

    @property
    def runtime_lib(self) -> Path:
        return Path((self.build / "runtime_library.txt").read_text().strip())

    @property
    def java(self) -> Path:
        return Path(JDK, "bin", "java")

    def run_check(self, main_class: str, *args: str, timeout_s: float = 120,
                  env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run one JVM check (a `main` in hostcheck/, e.g. "RealCoreCheckKt") with the bridge."""
        command = [str(self.java), f"-Djava.library.path={self.jni_dir}", "-cp", str(self.jar),
                   main_class, *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout_s,
                              env={**os.environ, **(env or {})})
