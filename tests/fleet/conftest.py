"""Fleet tests: `mobdistill serve --ray` as a process on a local Ray cluster, real host clients
(`runtime.live_client`, the engine through its C facade) over loopback, the tiny starting point
of the live tests (same settings and `once` key, so one export serves both)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from shared import once

from mobdistill.experiments.clips import resolve_clip
from mobdistill.experiments.config import StreamConfig

# The live tests' TINY: K = 5 on a width-16 student, T_update 0.5 s.
TINY = StreamConfig(videos=("carphone_pristine.mp4",), max_frames_per_clip=90,
                    resolution=(64, 128), aspp_channels=16, iterations=5, batch_size=2,
                    t_update_s=0.5, lr=1e-2, pretrain_iterations=2, num_threads=1,
                    uplink_codec="jpeg")


@pytest.fixture(scope="session")
def fleet_student(tmp_path_factory) -> tuple[Path, Path]:
    """(student cache folder, manifest), made once per run; the facade library built."""
    from mobdistill.experiments.student import prepare_student
    from mobdistill.runtime.facade import facade_library
    from mobdistill.server.teachers import load_teacher

    def build(cache: Path) -> tuple[Path, Path]:
        teacher = load_teacher(TINY.teacher, class_names=TINY.teacher_classes)
        _, manifest = prepare_student(TINY, teacher, cache=cache)
        return cache, Path(manifest)

    facade_library()
    return once(tmp_path_factory, "live student", build)


@dataclass
class Serve:
    """A `mobdistill serve --json` child and its status lines."""

    process: subprocess.Popen
    events: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("{"):
                self.events.append(json.loads(line))

    def wait_for(self, event: str, timeout_s: float = 120, **match: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for e in list(self.events):
                if e["event"] == event and all(e.get(k) == v for k, v in match.items()):
                    return e
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no {event} {match} from the server: {self.events[-5:]}")

    @property
    def port(self) -> int:
        return int(self.wait_for("listening", 300)["port"])

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.reader.join(10)
        return self.process.returncode


def serve(cache: Path, state: Path, *extra: str) -> Serve:
    h, w = TINY.resolution
    command = [sys.executable, "-m", "mobdistill", "serve", "--json", "--port", "0",
               "--state-dir", str(state), "--teacher", TINY.teacher, "--resolution", f"{h}x{w}",
               "--tiny", "--pretrain-iterations", str(TINY.pretrain_iterations),
               "--seed", str(TINY.seed), "--iterations", str(TINY.iterations),
               "--batch-size", str(TINY.batch_size), "--lr", str(TINY.lr),
               "--t-update", str(TINY.t_update_s), "--num-threads", "1",
               "--student-cache", str(cache), *extra]
    return Serve(subprocess.Popen(command, stdout=subprocess.PIPE, text=True))


def client(port: int, manifest: Path, device: bytes, key_file: Path, out: Path,
           videos: tuple[str, ...]) -> subprocess.Popen:
    command = [sys.executable, "-m", "mobdistill.runtime.live_client",
               "--server", f"127.0.0.1:{port}", "--manifest", str(manifest),
               "--video", ",".join(resolve_clip(v) for v in videos),
               "--device-id", device.hex(), "--key-file", str(key_file), "--uplink", "jpeg",
               "--out", str(out)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


def finish(process: subprocess.Popen, out: Path, timeout_s: float = 240) -> dict[str, Any]:
    _, err = process.communicate(timeout=timeout_s)
    assert process.returncode == 0, err[-3000:]
    return json.loads((out / "client.json").read_text())
