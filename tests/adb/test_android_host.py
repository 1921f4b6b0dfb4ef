"""android/verify_host.sh: the JNI bridge linked with the REAL engine core, the android.jar-free
Kotlin, and a JVM driving a tiny real export through them (segment, apply update, stats, benchmark).

Skips unless cmake, g++, a JDK 17 and kotlinc (npm kotlin-compiler@2.4.20 in .cache/npm, which the
Makefile installs; the test never downloads) are present. About 2 minutes on 2 cores (engine build
and a tiny export from scratch).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KOTLINC = ROOT / ".cache/npm/node_modules/kotlin-compiler/bin/kotlinc"
JDK = os.environ.get("JAVA_HOME") or next(iter(glob.glob("/usr/lib/jvm/java-17-openjdk-*")), "")


@pytest.mark.skipif(not KOTLINC.exists(), reason=f"no kotlinc at {KOTLINC} (npm install "
                    "--prefix .cache/npm kotlin-compiler@2.4.20)")
@pytest.mark.skipif(not (shutil.which("cmake") and shutil.which("g++")), reason="needs cmake, g++")
@pytest.mark.skipif(not Path(JDK, "include", "jni.h").exists(), reason="needs a JDK 17 (jni.h)")
def test_verify_host_script(tmp_path: Path) -> None:
    done = subprocess.run(
        ["bash", str(ROOT / "android" / "verify_host.sh"), str(tmp_path)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "JAVA_HOME": JDK},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "exports 9 JNI functions" in done.stdout
    assert "host check passed" in done.stdout
