"""android/verify_host.sh: the JNI bridge linked with the REAL engine core, the android.jar-free
Kotlin, and a JVM driving a tiny real export through them (segment, apply update, stats, benchmark).

The script runs once per session in the `android_host` fixture (tests/conftest.py), which other
JVM checks share. It skips unless cmake, g++, a JDK 17 and kotlinc (npm kotlin-compiler@2.4.20 in
.cache/npm, which the Makefile installs; the test never downloads) are present.
"""

from __future__ import annotations

import re
from pathlib import Path

BRIDGE = Path(__file__).resolve().parents[2] / "android/library/src/main/cpp/mobdistill_jni.cc"


def test_verify_host_script(android_host) -> None:
    declared = len(re.findall(r"JNIEXPORT", BRIDGE.read_text()))
    assert declared > 0
    assert f"exports {declared} JNI functions" in android_host.script_output
    assert "host check passed" in android_host.script_output
    assert android_host.jar.is_file() and android_host.runtime_lib.is_file()
