"""What `mobdistill serve` keeps on disk (docs/protocol.md, "Keys and state").

``devices.json`` (mode 0600): the enrolled devices, ``{"devices": {ID_HEX: {"key_hex", "name"}}}``.
``sessions/ID_HEX.pt``: one device's session after every training phase — the trained student
parameters, the optimizer's moments, the packet sequence, per element the sequence that last
changed it (what a catch-up needs), the rates and the session clock. Every file is replaced
atomically (temporary file, fsync, rename, fsync of the folder): a crash leaves the old file or
the new one, never a partial one.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from mobdistill.contract import wire
from mobdistill.errors import UsageError

STATE_VERSION = 1


def atomic_write(path: Path, write: Callable[[Any], None], mode: int = 0o600) -> None:
    """Writes through ``write(file)`` into a temporary sibling, then renames it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


@dataclass(frozen=True)
class Enrolment:
    device_id: bytes
    key: bytes
    name: str


class DeviceRegistry:
    """The devices allowed to connect, each with its own 32-byte key (``devices.json``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.devices: dict[bytes, Enrolment] = {}
        if path.is_file():
            self._load()

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text())
            for id_hex, entry in data["devices"].items():
                device_id, key = bytes.fromhex(id_hex), bytes.fromhex(entry["key_hex"])
                if len(device_id) != 16 or len(key) < 16:
                    raise ValueError(f"device {id_hex}: id must be 16 bytes, key >= 16 bytes")
                self.devices[device_id] = Enrolment(device_id, key, entry.get("name", ""))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise UsageError(f"{self.path} is not a devices file ({err}); fix or remove it "
                             "and enrol again with `mobdistill serve --enroll NAME`") from None

    def key(self, device_id: bytes) -> bytes | None:
        entry = self.devices.get(device_id)
        return entry.key if entry else None

    def enroll(self, name: str) -> Enrolment:
        entry = Enrolment(wire.new_device_id(), wire.new_key(), name)
        self.devices[entry.device_id] = entry
        document = {"devices": {e.device_id.hex(): {"key_hex": e.key.hex(), "name": e.name}
                                for e in self.devices.values()}}
        atomic_write(self.path, lambda f: f.write(json.dumps(document, indent=1).encode()))
        return entry


def session_path(state_dir: Path, device_id: bytes) -> Path:
    return state_dir / "sessions" / f"{device_id.hex()}.pt"


def save_session(path: Path, state: dict[str, Any]) -> None:
    atomic_write(path, lambda f: torch.save({"version": STATE_VERSION, **state}, f))


def load_session(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    state = torch.load(path, weights_only=True)
    if state.get("version") != STATE_VERSION:
        raise UsageError(f"{path}: session state version {state.get('version')}, expected "
                         f"{STATE_VERSION}; move it away to start the device afresh")
    return state
