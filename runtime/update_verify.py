"""Finds (or builds) the C++ update decoder's CLI, ``mobdistill-update-verify``, and runs it."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mobdistill.contract.wire import (
    DecodeLimits,
    SequenceGuard,
    TensorLocation,
    apply_update,
    decode_update,
)
from mobdistill.errors import EngineError, ManifestError, UpdateError, UsageError
from mobdistill.export.manifest import load as load_manifest

REPO_ROOT = Path(__file__).resolve().parents[1]
SOURCE_DIR = REPO_ROOT / "android" / "engine" / "update"
DEFAULT_BUILD_DIR = REPO_ROOT / "build" / "mobdistill_update"
ENGINE_BUILD_DIR = REPO_ROOT / "build" / "engine" / "update"  # made by `make engine` / `make demo`
TOOL_NAME = "mobdistill-update-verify"
ENV_TOOL = "MOBDISTILL_UPDATE_VERIFY"


def _newest_source_mtime() -> float:
    return max(p.stat().st_mtime for p in SOURCE_DIR.rglob("*") if p.is_file())


def find_verify_tool(*, build: bool = True, build_dir: Path = DEFAULT_BUILD_DIR,
                     timeout_s: float = 300.0) -> Path:
    """``$MOBDISTILL_UPDATE_VERIFY``, else an up-to-date tool from the engine build or
    ``build_dir``, else (when ``build``) builds it in ``build_dir``."""
    if os.environ.get(ENV_TOOL):
        return Path(os.environ[ENV_TOOL])
    newest = _newest_source_mtime()
    for tool in (ENGINE_BUILD_DIR / TOOL_NAME, build_dir / TOOL_NAME):
        if tool.is_file() and tool.stat().st_mtime >= newest:
            return tool
    tool = build_dir / TOOL_NAME
    if not build:
        raise UsageError(f"{tool} is missing or older than its sources: build it with `cmake -S "
                         f"{SOURCE_DIR} -B {build_dir} && cmake --build {build_dir}` or set "
                         f"{ENV_TOOL}")
    if not shutil.which("cmake"):
        raise UsageError("cmake is not installed: apt-get install cmake g++ zlib1g-dev")
    build_dir.mkdir(parents=True, exist_ok=True)
    with open(build_dir / ".build.lock", "w") as lock:  # one build at a time
        fcntl.flock(lock, fcntl.LOCK_EX)
        for args in (["cmake", "-S", str(SOURCE_DIR), "-B", str(build_dir),
                      "-DCMAKE_BUILD_TYPE=Release"],
                     ["cmake", "--build", str(build_dir), "-j2"]):
            done = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s)
            if done.returncode:
                raise EngineError(f"building {TOOL_NAME} failed: {done.stderr[-2000:]}")
    return tool


def write_key_file(directory: Path, key: bytes) -> Path:
    """The key as a 0600 file (never on a command line, where every user could read it)."""
    path = directory / "update.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key)
    return path


def write_table(path: Path, table: dict[int, TensorLocation]) -> Path:
    path.write_text("".join(f"{i} {t.buffer_offset} {t.buffer_size} {t.dtype}\n"
                            for i, t in table.items()))
    return path


def run_verify_tool(tool: Path, updates: list[Path], *, base_sha256: bytes, device_id: bytes,
                    table: Path, hmac_key: bytes | None = None, insecure: bool = False,
                    last_sequence: int = 0, model: Path | None = None, chain: bool = False,
                    timeout_s: float = 120.0) -> list[dict]:
    """One result dict per update file (``status`` is ``ok`` or the C++ status name). Without
    ``hmac_key`` the tool refuses every packet unless ``insecure``."""
    with tempfile.TemporaryDirectory() as tmp:
        args = [str(tool), "--base-sha256", base_sha256.hex(), "--device-id", device_id.hex(),
                "--table", str(table), "--last-sequence", str(last_sequence)]
        args += ["--hmac-key-file", str(write_key_file(Path(tmp), hmac_key))] if hmac_key else []
        args += ["--insecure"] if insecure else []
        args += ["--model", str(model)] if model else []
        args += ["--chain"] if chain else []
        done = subprocess.run(args + [str(u) for u in updates], capture_output=True, text=True,
                              timeout=timeout_s)
    if done.returncode not in (0, 1):
        raise EngineError(f"{TOOL_NAME} exited with {done.returncode}: {done.stderr[-2000:]}")
    results = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    if len(results) != len(updates):
        raise EngineError(f"{TOOL_NAME} reported {len(results)} results for {len(updates)} files")
    return results


@dataclass(frozen=True)
class PacketVerdict:
    file: str
    status: str  # "ok" or the status name (the same for both engines)
    message: str
    sequence: int
    tensors: int
    values: int


@dataclass(frozen=True)
class VerifyUpdateResult:
    manifest: str
    engine: str
    base_sha256: str
    packets: list[PacketVerdict]

    @property
    def passed(self) -> bool:
        return all(p.status == "ok" for p in self.packets)


def tensor_table(manifest: Mapping[str, Any]) -> dict[int, TensorLocation]:
    entries = (manifest.get("parameter_map") or {}).get("entries", [])
    if not entries:
        raise ManifestError("the manifest has no parameter_map entries: nothing is updatable")
    return {e["tensor_index"]: TensorLocation(e["buffer_offset"], e["buffer_size"], e["dtype"])
            for e in entries}


def verify_update(manifest_path: Path, updates: list[Path], *, device_id: bytes,
                  hmac_key: bytes | None = None, insecure: bool = False, last_sequence: int = 0,
                  engine: str = "cpp") -> VerifyUpdateResult:
    """Decodes and applies each packet (on its own) to a copy of the manifest's .tflite, with the
    limits the engine derives from the manifest. Without ``hmac_key`` packets are refused unless
    ``insecure``."""
    manifest = load_manifest(manifest_path)
    model_path = manifest.tflite_path
    base = bytes.fromhex(manifest.tflite_sha256)
    table = tensor_table(manifest)
    if engine == "cpp":
        with tempfile.TemporaryDirectory() as tmp:
            rows = run_verify_tool(find_verify_tool(), updates, base_sha256=base,
                                   device_id=device_id, table=write_table(Path(tmp) / "table.txt",
                                                                          table),
                                   hmac_key=hmac_key, insecure=insecure,
                                   last_sequence=last_sequence, model=model_path)
        verdicts = [PacketVerdict(r["file"], r["status"], r["message"], r["sequence"],
                                  r["tensors"], r["values"]) for r in rows]
    elif engine == "python":
        model = model_path.read_bytes()
        verdicts = [_python_verdict(p, model, table, base, device_id, hmac_key, insecure,
                                    last_sequence) for p in updates]
    else:
        raise UsageError(f"engine {engine!r} must be 'cpp' or 'python'")
    return VerifyUpdateResult(str(manifest_path), engine, base.hex(), verdicts)


def _python_verdict(path: Path, model: bytes, table: dict, base: bytes, device_id: bytes,
                    key: bytes | None, insecure: bool, last: int) -> PacketVerdict:
    try:
        packet = decode_update(path.read_bytes(), expected_base_sha256=base,
                               expected_device_id=device_id, hmac_key=key,
                               limits=DecodeLimits.for_table(table), insecure=insecure)
        SequenceGuard(last).check(packet)
        apply_update(model, table, packet)
    except UpdateError as err:
        return PacketVerdict(str(path), err.status, str(err), 0, 0, 0)
    return PacketVerdict(str(path), "ok", "", packet.sequence, len(packet.tensors),
                         sum(len(t.values) for t in packet.tensors))
