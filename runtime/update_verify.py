"""Finds (or builds) the C++ update decoder's CLI, ``mobdistill-update-verify``, and runs it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mobdistill.errors import EngineError, ManifestError, UpdateError, UsageError
from mobdistill.export.manifest import artifact_path
from mobdistill.export.manifest import load as load_manifest
from mobdistill.contract.wire import (
    SequenceGuard, TensorLocation, apply_update, decode_update,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
SOURCE_DIR = REPO_ROOT / "android" / "engine" / "update"
DEFAULT_BUILD_DIR = REPO_ROOT / "build" / "mobdistill_update"
TOOL_NAME = "mobdistill-update-verify"
ENV_TOOL = "MOBDISTILL_UPDATE_VERIFY"


def find_verify_tool(*, build: bool = False, build_dir: Path = DEFAULT_BUILD_DIR,
                     timeout_s: float = 300.0) -> Path:
    """``$MOBDISTILL_UPDATE_VERIFY``, else ``build_dir``'s tool, building it when ``build``."""
    if os.environ.get(ENV_TOOL):
        return Path(os.environ[ENV_TOOL])
    tool = build_dir / TOOL_NAME
    if tool.exists() or not build:
        if not tool.exists():
            raise UsageError(f"{tool} does not exist: build it with `cmake -S {SOURCE_DIR} -B "
                             f"{build_dir} && cmake --build {build_dir}` or set {ENV_TOOL}")
        return tool
    if not shutil.which("cmake"):
        raise UsageError("cmake is not installed: apt-get install cmake g++ zlib1g-dev")
    for args in (["cmake", "-S", str(SOURCE_DIR), "-B", str(build_dir),
                  "-DCMAKE_BUILD_TYPE=Release"],
                 ["cmake", "--build", str(build_dir), "-j2"]):
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s)
        if done.returncode:
            raise EngineError(f"building {TOOL_NAME} failed: {done.stderr[-2000:]}")
    return tool


def run_verify_tool(tool: Path, updates: list[Path], *, base_sha256: bytes,
                    hmac_key: bytes | None = None, last_sequence: int = 0,
                    model: Path | None = None, table: Path | None = None, chain: bool = False,
                    timeout_s: float = 120.0) -> list[dict]:
    """One result dict per update file (``status`` is ``ok`` or the C++ status name)."""
    args = [str(tool), "--base-sha256", base_sha256.hex(), "--last-sequence", str(last_sequence)]
    args += ["--hmac-key-hex", hmac_key.hex()] if hmac_key else []
    args += ["--model", str(model), "--table", str(table)] if model else []
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
    status: str  # "ok" or the C++ status name / "error" (python engine)
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


def tensor_table(manifest: dict) -> dict[int, TensorLocation]:
    entries = (manifest.get("parameter_map") or {}).get("entries", [])
    if not entries:
        raise ManifestError("the manifest has no parameter_map entries: nothing is updatable")
    return {e["tensor_index"]: TensorLocation(e["buffer_offset"], e["buffer_size"], e["dtype"])
            for e in entries}


def verify_update(manifest_path: Path, updates: list[Path], *, hmac_key: bytes | None = None,
                  last_sequence: int = 0, engine: str = "cpp") -> VerifyUpdateResult:
    """Decodes and applies each packet (on its own) to a copy of the manifest's .tflite."""
    manifest = load_manifest(manifest_path)
    model_path = artifact_path(manifest_path, manifest, "tflite")
    base = bytes.fromhex(next(a["sha256"] for a in manifest["artifacts"] if a["format"] == "tflite"))
    table = tensor_table(manifest)
    if engine == "cpp":
        with tempfile.TemporaryDirectory() as tmp:
            table_path = Path(tmp) / "table.txt"
            table_path.write_text("".join(f"{i} {t.buffer_offset} {t.buffer_size} {t.dtype}\n"
                                          for i, t in table.items()))
            rows = run_verify_tool(find_verify_tool(), updates, base_sha256=base,
                                   hmac_key=hmac_key, last_sequence=last_sequence,
                                   model=model_path, table=table_path)
        verdicts = [PacketVerdict(r["file"], r["status"], r["message"], r["sequence"],
                                  r["tensors"], r["values"]) for r in rows]
    elif engine == "python":
        model = model_path.read_bytes()
        verdicts = [_python_verdict(p, model, table, base, hmac_key, last_sequence)
                    for p in updates]
    else:
        raise UsageError(f"engine {engine!r} must be 'cpp' or 'python'")
    return VerifyUpdateResult(str(manifest_path), engine, base.hex(), verdicts)


def _python_verdict(path: Path, model: bytes, table: dict, base: bytes, key: bytes | None,
                    last: int) -> PacketVerdict:
    try:
        packet = decode_update(path.read_bytes(), expected_base_sha256=base, hmac_key=key)
        SequenceGuard(last).check(packet)
        apply_update(model, table, packet)
    except UpdateError as err:
        return PacketVerdict(str(path), "error", str(err), 0, 0, 0)
    return PacketVerdict(str(path), "ok", "", packet.sequence, len(packet.tensors),
                         sum(len(t.values) for t in packet.tensors))
