"""Session-wide fixtures: tiny real exports, made once per test run and shared."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest
import torch

from mobdistill.export.api import export_model
from mobdistill.models import registry

sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))

import tiny_models  # noqa: E402
from live_harness import Live, build_live_student  # noqa: E402
from session_types import JDK, AndroidHost, TinyExport  # noqa: E402
from shared import once  # noqa: E402

pytest_plugins = ["time_budget"]  # each area's seconds against its budget, at the end


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory) -> Callable[..., TinyExport]:
    """Export a seeded tiny student through a checkpoint, cached by arguments for the session."""
    cache: dict[tuple, TinyExport] = {}

    def build(name: str, formats: tuple[str, ...], overrides: dict, out: Path) -> TinyExport:
        entry = registry.get(name)
        config = registry.configure(entry, tiny=True, **overrides)
        torch.manual_seed(0)
        checkpoint = out / "student.pt"
        torch.save(entry.build(config).state_dict(), checkpoint)
        result = export_model(name, out_dir=out, formats=formats, config=config,
                              checkpoint=checkpoint, tiny=True)
        return TinyExport(name, config, checkpoint, result)

    def get(name: str, formats: tuple[str, ...] = ("tflite", "onnx"), **overrides) -> TinyExport:
        # Both formats are always made: one export then serves the tflite-only callers too.
        formats = tuple(dict.fromkeys(("tflite", "onnx", *formats)))
        key = (name, formats, tuple(sorted(overrides.items())))
        if key not in cache:
            cache[key] = once(tmp_path_factory, f"tiny-export {key!r}",
                              lambda out: build(name, key[1], overrides, out))
        return cache[key]

    return get


@pytest.fixture(scope="session")
def stateless_manifest(tmp_path_factory) -> Path:
    """A tiny stateless model (tests/support/tiny_models.py) for engine and device tests."""
    return once(tmp_path_factory, "tiny stateless",
                lambda folder: tiny_models.build_stateless(folder / "stateless"))


@pytest.fixture(scope="session")
def stateful_manifest(tmp_path_factory) -> Path:
    """A tiny model with a memory queue of length 3."""
    return once(tmp_path_factory, "tiny stateful q3",
                lambda folder: tiny_models.build_stateful(folder / "stateful", queue_length=3))


@pytest.fixture(scope="session")
def selfie_model() -> Path:
    """The cached selfie segmenter; a missing one fails (not skips) with how to fetch it."""
    from mobdistill.server import teachers

    path = teachers.cache_dir() / "selfie_segmentation.tflite"
    if not path.is_file():
        pytest.fail(f"the selfie teacher is not in {path.parent}: run `make teacher` (set-up "
                    "fetches it once; tests use no network)")
    return path


@pytest.fixture(scope="session")
def live_student(tmp_path_factory, selfie_model) -> tuple[Path, Path]:
    """(student cache folder, manifest) of the live and fleet tests' tiny starting point
    (tests/support/live_harness.py), made once per run."""
    return once(tmp_path_factory, "live student", build_live_student)


@pytest.fixture()
def live(live_student, tmp_path) -> Live:
    """Real `mobdistill serve` processes and host clients on the tiny starting point."""
    return Live(*live_student, tmp_path)


ROOT = Path(__file__).resolve().parents[1]
KOTLINC = ROOT / ".cache/npm/node_modules/kotlin-compiler/bin/kotlinc"


@pytest.fixture(scope="session")
def android_host(tmp_path_factory, tiny_export) -> AndroidHost:
    """Run android/verify_host.sh once per session (one JNI build, one kotlinc compile)."""
    if not KOTLINC.exists():
        pytest.skip(f"no kotlinc at {KOTLINC} (npm install --prefix .cache/npm "
                    "kotlin-compiler@2.4.20; make test installs it)")
    if not (shutil.which("cmake") and shutil.which("g++")):
        pytest.skip("needs cmake and g++")
    if not Path(JDK, "include", "jni.h").exists():
        pytest.skip("needs a JDK 17 (jni.h)")
    model = tiny_export("deeplab", formats=("tflite",)).manifest_path.parent

    def build(folder: Path) -> AndroidHost:
        shutil.copytree(model, folder / "check" / "model",
                        ignore=shutil.ignore_patterns("*.pt"))
        done = subprocess.run(["bash", str(ROOT / "android" / "verify_host.sh"), str(folder)],
                              capture_output=True, text=True, timeout=900,
                              env={**os.environ, "JAVA_HOME": JDK})
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return AndroidHost(folder, done.stdout)

    return once(tmp_path_factory, "android-host", build)
