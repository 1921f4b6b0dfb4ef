"""The device abstraction: where the engine runs. The host itself is the default device."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import tempfile
import weakref
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from mobdistill.errors import DeviceError
from mobdistill.files import atomic_copy, sha256_file

DEFAULT_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class CommandResult:
    exit_code: int
    stdout: str
    stderr: str
    timed_out: bool = False


class Device(ABC):
    """A place that can hold files and run the engine. Paths on the device are strings.

    Use it as a context manager (or call `close()`): it releases its connection and, for the
    host, its private staging folder."""

    serial: str

    def close(self) -> None:
        """Release what the device holds open; safe to call twice."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    @abstractmethod
    def abi(self) -> str:
        """Engine build to stage: 'x86_64' (host), 'arm64-v8a', ..."""

    @abstractmethod
    def describe(self) -> dict[str, str]:
        """Model, OS, SoC and whatever else identifies the device in a report."""

    @abstractmethod
    def workdir(self) -> str:
        """A writable directory on the device for staged artifacts and logs."""

    @abstractmethod
    def stage(self, local: Path, remote_name: str, *, timeout_s: float = DEFAULT_TIMEOUT_S,
              private: bool = False) -> str:
        """Copy `local` into workdir atomically (temporary name, verify, rename); return its path.

        `private` files (keys) are readable by their owner only (mode 0600)."""

    @abstractmethod
    def remove(self, remote: str) -> None:
        """Delete a staged file; a missing file is not an error."""

    @abstractmethod
    def fetch(self, remote: str, local: Path, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        """Copy a device file to `local` (atomically on the host side)."""

    @abstractmethod
    def run(self, argv: list[str], *, timeout_s: float = DEFAULT_TIMEOUT_S) -> CommandResult:
        """Run a command in workdir() on the device; a timeout kills it and sets `timed_out`."""


class LocalDevice(Device):
    """The host as the embedded default device: same engine, same files, no transport.

    Without `root`, files are staged in a fresh private folder (mkdtemp, mode 0700) that
    `close()` removes, so no other local user can swap a staged engine before it runs."""

    serial = "host"

    def __init__(self, root: Path | None = None) -> None:
        self._cleanup: weakref.finalize | None = None
        if root is None:
            self._root = Path(tempfile.mkdtemp(prefix="mobdistill-device-"))
            self._cleanup = weakref.finalize(self, shutil.rmtree, self._root, ignore_errors=True)
        else:
            self._root = Path(root)
            self._root.mkdir(mode=0o700, parents=True, exist_ok=True)

    def close(self) -> None:
        if self._cleanup is not None:
            self._cleanup()

    def abi(self) -> str:
        return platform.machine()

    def describe(self) -> dict[str, str]:
        return {
            "serial": self.serial,
            "kind": "host",
            "model": platform.node(),
            "os": f"{platform.system()} {platform.release()}",
            "abi": self.abi(),
            "cpu_count": str(os.cpu_count()),
        }

    def workdir(self) -> str:
        return str(self._root)

    def stage(self, local: Path, remote_name: str, *, timeout_s: float = DEFAULT_TIMEOUT_S,
              private: bool = False) -> str:
        if not local.is_file():
            raise DeviceError(f"cannot stage {local}: no such file")
        dst = self._root / remote_name
        atomic_copy(local, dst, mode=0o600 if private else None)
        if sha256_file(dst) != sha256_file(local):
            dst.unlink(missing_ok=True)
            raise DeviceError(f"staged copy of {local} does not match its source; try again")
        return str(dst)

    def remove(self, remote: str) -> None:
        Path(remote).unlink(missing_ok=True)

    def fetch(self, remote: str, local: Path, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        if not Path(remote).is_file():
            raise DeviceError(f"cannot fetch {remote}: no such file on {self.serial}")
        atomic_copy(Path(remote), local)

    def run(self, argv: list[str], *, timeout_s: float = DEFAULT_TIMEOUT_S) -> CommandResult:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s,
                                  cwd=self._root)
        except subprocess.TimeoutExpired as err:
            return CommandResult(-9, _text(err.stdout), _text(err.stderr), timed_out=True)
        except OSError as err:
            raise DeviceError(f"cannot run {argv[0]} on {self.serial}: {err}") from err
        return CommandResult(done.returncode, done.stdout, done.stderr)


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value
