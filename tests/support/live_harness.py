"""What the live and fleet tests share: the tiny starting point's settings, enrolling devices,
starting the real `mobdistill serve` process and host clients (through `experiments.live`, the
same code the live experiments run), and reading what they report. An importable module, not a
conftest: several test folders have a module named `conftest`."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mobdistill.experiments.clips import resolve_clip
from mobdistill.experiments.config import StreamConfig
from mobdistill.experiments.live import ServerProcess, client_command, serve_arguments, start_server
from mobdistill.server.live_store import DeviceRegistry

# Training fast enough for a loaded 2-core host: K = 5 on a width-16 student, T_update 0.5 s.
TINY = StreamConfig(videos=("carphone_pristine.mp4",), max_frames_per_clip=90,
                    resolution=(64, 128), aspp_channels=16, iterations=5, batch_size=2,
                    t_update_s=0.5, lr=1e-2, pretrain_iterations=2, num_threads=1,
                    uplink_codec="jpeg")


def build_live_student(cache: Path) -> tuple[Path, Path]:
    """(student cache folder, manifest) of the tiny starting point; the host engine's facade
    library built."""
    from mobdistill.experiments.student import prepare_student
    from mobdistill.runtime.facade import facade_library
    from mobdistill.server.teachers import load_teacher

    facade_library()
    teacher = load_teacher(TINY.teacher, class_names=TINY.teacher_classes)
    _, manifest = prepare_student(TINY, teacher, cache=cache)
    return cache, Path(manifest)


@dataclass
class Device:
    device_id: bytes
    key_file: Path


@dataclass
class Live:
    """Servers and clients on the tiny starting point; keys written under ``tmp``."""

    cache: Path
    manifest: Path
    tmp: Path

    def server(self, state_dir: Path, *extra: str, port: int = 0,
               timeout_s: float = 180) -> ServerProcess:
        return start_server([*serve_arguments(TINY, self.cache), *extra], state_dir, port=port,
                            timeout_s=timeout_s)

    def enrol(self, state_dir: Path, name: str = "phone") -> Device:
        entry = DeviceRegistry(state_dir / "devices.json").enroll(name)
        key_file = self.tmp / f"{name}.key"
        key_file.write_bytes(entry.key)
        key_file.chmod(0o600)
        return Device(entry.device_id, key_file)

    def client(self, port: int, device: Device, out: Path, *extra: str,
               videos: tuple[str, ...] = ("carphone_pristine.mp4",),
               max_frames: int | None = 90) -> subprocess.Popen:
        config = replace(TINY, max_frames_per_clip=max_frames)
        command = client_command(port, self.manifest, [resolve_clip(v) for v in videos],
                                 device.device_id, device.key_file, out, config)
        return subprocess.Popen([*command, *extra], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen, timeout_s: float = 90) -> dict[str, Any]:
    """Waits for a client that must succeed; its client.json."""
    _, err = process.communicate(timeout=timeout_s)
    assert process.returncode == 0, err[-3000:]
    out_dir = Path(process.args[process.args.index("--out") + 1])
    return json.loads((out_dir / "client.json").read_text())


def applied(summary: dict[str, Any]) -> list[dict[str, Any]]:
    return [u for u in summary["updates"] if (u["engine"] or {}).get("status") == "applied"]


def wait_for(server: ServerProcess, event: str, timeout_s: float = 60,
             **match: Any) -> dict[str, Any]:
    """The first status line ``event`` with fields ``match``; fails early if the server died."""
    deadline = time.monotonic() + timeout_s
    while True:
        exited = server.process.poll() is not None
        if exited:
            server.reader.join(10)  # its last lines
        for e in list(server.events):
            if e["event"] == event and all(e.get(k) == v for k, v in match.items()):
                return e
        if exited or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    raise AssertionError(f"no {event} {match} from the server (exit {server.process.poll()}): "
                         f"{server.events[-5:]}")


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """(certificate, key) PEM files for 127.0.0.1, made by the openssl CLI (callers skip the
    test without it)."""
    cert, key = folder / "server.pem", folder / "server.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout",
                    str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
