"""android/gradlew without the wrapper jar: download, checksum, atomic unpack, run.

The Gradle distribution is replaced by a small zip served from a file:// URL (curl reads those),
whose bin/gradle records its arguments: what is tested is the launcher, not Gradle.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NAME = "gradle-8.11.1"

pytestmark = pytest.mark.skipif(
    not (shutil.which("curl") and shutil.which("unzip") and shutil.which("java")),
    reason="needs curl, unzip and java")


def fake_distribution(path: Path) -> str:
    """A zip laid out like Gradle's, whose launcher prints its arguments; returns its sha256."""
    script = '#!/bin/sh\necho "fake gradle: $*"\n'
    with zipfile.ZipFile(path, "w") as archive:
        info = zipfile.ZipInfo(f"{NAME}/bin/gradle")
        info.external_attr = 0o100755 << 16  # a regular, executable file once unzipped
        archive.writestr(info, script)
        archive.writestr(f"{NAME}/lib/README", "not Gradle\n")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def project(tmp_path: Path, url: str, sha: str | None) -> Path:
    """A copy of android/'s launcher and wrapper properties pointing at `url`."""
    app = tmp_path / "android"
    (app / "gradle" / "wrapper").mkdir(parents=True)
    shutil.copy2(ROOT / "android" / "gradlew", app / "gradlew")
    lines = []
    properties = ROOT / "android/gradle/wrapper/gradle-wrapper.properties"
    for line in properties.read_text().splitlines():
        if line.startswith("distributionUrl="):
            line = "distributionUrl=" + url.replace(":", "\\:")
        elif line.startswith("distributionSha256Sum="):
            if sha is None:
                continue
            line = "distributionSha256Sum=" + sha
        lines.append(line)
    (app / "gradle" / "wrapper" / "gradle-wrapper.properties").write_text("\n".join(lines) + "\n")
    return app


def gradlew(app: Path, home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "GRADLE_USER_HOME": str(home)}
    return subprocess.run([str(app / "gradlew"), *args], capture_output=True, text=True,
                          timeout=60, env=env)


def test_the_committed_properties_pin_a_checksum() -> None:
    text = (ROOT / "android/gradle/wrapper/gradle-wrapper.properties").read_text()
    assert f"/{NAME}-bin.zip" in text
    assert "distributionSha256Sum=" in text and len(text.split("distributionSha256Sum=")[1]
                                                     .split()[0]) == 64


def test_downloads_checks_unpacks_and_runs_then_works_offline(tmp_path: Path) -> None:
    dist = tmp_path / "server" / f"{NAME}-bin.zip"
    dist.parent.mkdir()
    app = project(tmp_path, dist.as_uri(), fake_distribution(dist))
    home = tmp_path / "gradle-home"
    first = gradlew(app, home, ":harness:installDebug")
    assert first.returncode == 0, first.stderr
    assert f"fake gradle: --project-dir {app.resolve()} :harness:installDebug" in first.stdout
    assert "downloading" in first.stderr
    dists = home / "wrapper" / "dists" / "mobdistill"
    assert sorted(p.name for p in dists.iterdir()) == [NAME]  # no temporary folder left
    dist.unlink()  # the second run must not need the network
    second = gradlew(app, home, "tasks")
    assert second.returncode == 0 and "fake gradle: --project-dir" in second.stdout
    assert "downloading" not in second.stderr


def test_a_checksum_mismatch_installs_nothing(tmp_path: Path) -> None:
    dist = tmp_path / f"{NAME}-bin.zip"
    fake_distribution(dist)
    app = project(tmp_path, dist.as_uri(), "0" * 64)
    home = tmp_path / "gradle-home"
    done = gradlew(app, home, "tasks")
    assert done.returncode == 1
    assert "expected " + "0" * 64 in done.stderr and "discarded" in done.stderr
    assert list((home / "wrapper" / "dists" / "mobdistill").iterdir()) == []


def test_refuses_an_unpinned_or_unreachable_distribution(tmp_path: Path) -> None:
    dist = tmp_path / f"{NAME}-bin.zip"
    fake_distribution(dist)
    unpinned = project(tmp_path / "a", dist.as_uri(), None)
    done = gradlew(unpinned, tmp_path / "home", "tasks")
    assert done.returncode == 1 and "no distributionSha256Sum" in done.stderr
    missing = project(tmp_path / "b", (tmp_path / "nowhere.zip").as_uri(), "0" * 64)
    done = gradlew(missing, tmp_path / "home", "tasks")
    assert done.returncode == 1 and "could not download" in done.stderr
    assert list((tmp_path / "home" / "wrapper" / "dists" / "mobdistill").iterdir()) == []


@pytest.mark.parametrize("leftover", ["empty", "damaged"])
def test_a_stale_distribution_folder_is_replaced_not_nested(tmp_path: Path, leftover: str) -> None:
    """An empty (or bin/gradle-less) gradle-8.11.1/ left by an interrupted install: `mv` onto it
    used to nest the new copy inside, so every later run downloaded again, forever."""
    dist = tmp_path / f"{NAME}-bin.zip"
    app = project(tmp_path, dist.as_uri(), fake_distribution(dist))
    home = tmp_path / "gradle-home"
    stale = home / "wrapper" / "dists" / "mobdistill" / NAME
    stale.mkdir(parents=True)
    if leftover == "damaged":
        (stale / "lib").mkdir()
        (stale / "lib" / "half.jar").write_bytes(b"PK")
    first = gradlew(app, home, "tasks")
    assert first.returncode == 0 and "fake gradle: --project-dir" in first.stdout, first.stderr
    assert (stale / "bin" / "gradle").is_file() and not (stale / NAME).exists()
    assert sorted(p.name for p in stale.parent.iterdir()) == [NAME]  # nothing set aside is left
    dist.unlink()
    second = gradlew(app, home, "tasks")
    assert second.returncode == 0 and "downloading" not in second.stderr
