"""Drive the C++ engine (android/engine) on a Device: build it, stage files, run, collect.

The engine is a benchmark_model-style executable (`mobdistill-engine`) that reads a manifest,
checks the model's sha256, runs the frames and writes one JSON line per frame (flushed per
record) plus a summary JSON. This module:

* builds the host engine with CMake into build/engine (`build_host_engine`),
* finds the TFLite C API runtime library shipped by the litert-lm-api wheel (`runtime_library`),
* stages engine, runtime library, model, manifest and frames on a `Device` and runs the engine
  (`run_engine`), fetching the per-frame log and summary even when the engine failed or timed
  out, so completed frames are never lost.

Only the `Device` interface (stage, fetch, run, workdir, abi, describe) is used, so the same code
drives the host (`LocalDevice`) and a phone (`AdbDevice`).
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import uuid
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from mobdistill.errors import DeviceError, EngineError, UsageError
from mobdistill.runtime.device import DEFAULT_TIMEOUT_S, Device

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
ENGINE_SOURCE = REPO_ROOT / "android" / "engine"
BUILD_DIR = REPO_ROOT / "build" / "engine"
ENGINE_NAME = "mobdistill-engine"
RUNTIME_LIB_NAME = "liblitert-lm.so"
_HOST_ABIS = {"x86_64", "amd64", "aarch64"}


class EngineRunError(EngineError):
    """The engine failed, crashed or timed out; `partial` holds the frames it completed."""

    def __init__(self, message: str, partial: "ProfileResult | None" = None) -> None:
        super().__init__(message)
        self.partial = partial


@dataclass(frozen=True)
class FrameTiming:
    """One engine run (one frame): the engine's own per-frame JSON line."""

    run: int
    frame: int
    phase: str  # "warmup" | "measure"
    preprocess_us: float
    invoke_us: float
    postprocess_us: float
    model_version: int
    # --record_sensors (docs/engine.md "Device sensors"): present only when a source was readable
    sensors_us: float | None = None  # cost of reading them (after postprocess, untimed)
    cpu_freq_khz: list[int | None] | None = None  # index = CPU number; None: unreadable
    thermal_c: dict[str, float] | None = None  # zone type -> degrees C


@dataclass
class ProfileResult:
    """What one engine run measured. Latencies in the summary are microseconds."""

    model: str
    manifest_path: str
    device: dict[str, str]
    num_threads: int
    warmup_runs: int
    num_runs: int
    frames: list[FrameTiming]
    summary: dict[str, Any] = field(default_factory=dict)
    jsonl_path: str = ""
    summary_path: str = ""
    output_masks_path: str | None = None
    output_logits_path: str | None = None
    # `{"event": "update", ...}` records from the JSONL, in order (streamed sparse updates)
    updates: list[dict[str, Any]] = field(default_factory=list)

    def measured_invoke_us(self) -> list[float]:
        return [f.invoke_us for f in self.frames if f.phase == "measure"]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class EngineRun:
    """How the engine was invoked on the device and how it ended."""

    argv: list[str]
    exit_code: int
    timed_out: bool
    stderr: str
    local_dir: Path


# --------------------------------------------------------------------------- build


def _sources() -> list[Path]:
    files = [ENGINE_SOURCE / "CMakeLists.txt"]
    for sub in ("src", "tests", "update/src", "update/include/mobdistill_update"):
        files += sorted(p for p in (ENGINE_SOURCE / sub).glob("*") if p.is_file())
    files.append(ENGINE_SOURCE / "update" / "CMakeLists.txt")
    return files


def _up_to_date(binary: Path) -> bool:
    if not binary.is_file():
        return False
    built = binary.stat().st_mtime
    return all(src.stat().st_mtime <= built for src in _sources())


def build_host_engine(force: bool = False, *, build_dir: Path = BUILD_DIR, jobs: int = 2) -> Path:
    """Configure and build the host engine (warnings are errors); reuse it if up to date.

    Returns the path of the `mobdistill-engine` executable. Raises EngineError with the tail of
    the compiler output when CMake fails.
    """
    binary = build_dir / ENGINE_NAME
    build_dir.mkdir(parents=True, exist_ok=True)
    with open(build_dir / ".build.lock", "w") as lock:  # one build at a time
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not force and _up_to_date(binary):
            return binary
        if shutil.which("cmake") is None:
            raise EngineError(
                "cmake not found: install cmake and a C++17 compiler to build the engine")
        configure = ["cmake", "-S", str(ENGINE_SOURCE), "-B", str(build_dir),
                     "-DCMAKE_BUILD_TYPE=Release", "-DMOBDISTILL_WERROR=ON"]
        if shutil.which("ninja") and not (build_dir / "CMakeCache.txt").exists():
            configure += ["-G", "Ninja"]
        for argv in (configure, ["cmake", "--build", str(build_dir), "-j", str(jobs)]):
            done = subprocess.run(argv, capture_output=True, text=True)
            if done.returncode != 0:
                tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-25:])
                raise EngineError(f"engine build failed ({' '.join(argv[:2])}):\n{tail}")
        if not binary.is_file():
            raise EngineError(f"engine build produced no {binary}")
        binary.touch()
        return binary


def runtime_library() -> Path:
    """liblitert-lm.so from the installed litert-lm-api wheel (the TFLite C API, host build)."""
    spec = importlib.util.find_spec("litert_lm")
    if spec is None or not spec.submodule_search_locations:
        raise EngineError("litert-lm-api is not installed: pip install litert-lm-api==0.18.1")
    for folder in spec.submodule_search_locations:
        lib = Path(folder) / RUNTIME_LIB_NAME
        if lib.is_file():
            return lib
    raise EngineError(f"litert-lm-api is installed but ships no {RUNTIME_LIB_NAME}")


def engine_for(device: Device) -> tuple[Path, Path]:
    """(engine executable, runtime library) built for the device's ABI."""
    abi = device.abi()
    if abi in _HOST_ABIS and abi == os.uname().machine:
        return build_host_engine(), runtime_library()
    android = REPO_ROOT / "build" / f"engine-android-{abi}"
    binary, lib = android / ENGINE_NAME, android / RUNTIME_LIB_NAME
    if binary.is_file() and lib.is_file():
        return binary, lib
    raise EngineError(
        f"no engine build for ABI {abi}: cross-compile android/engine with the NDK into {android} "
        f"and put that ABI's {RUNTIME_LIB_NAME} beside it (see docs/engine.md)")


# --------------------------------------------------------------------------- staging

_STAGED: dict[tuple[str, str, str, int, float], str] = {}


def _stage_cached(device: Device, local: Path, name: str, timeout_s: float) -> str:
    """Stage big unchanging files (engine, runtime library) once per device and process."""
    st = local.stat()
    key = (device.serial, device.workdir(), str(local.resolve()), st.st_size, st.st_mtime)
    if key not in _STAGED:
        _STAGED[key] = device.stage(local, name, timeout_s=timeout_s)
    return _STAGED[key]


def _tflite_file(manifest_path: Path) -> Path:
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as err:
        raise UsageError(f"cannot read manifest {manifest_path}: {err}") from err
    for artifact in manifest.get("artifacts", []):
        if artifact.get("format") == "tflite":
            path = manifest_path.parent / artifact["file"]
            if not path.is_file():
                raise UsageError(f"manifest {manifest_path} lists {path}, which does not exist; "
                                 "re-export the model")
            return path
    raise UsageError(f"manifest {manifest_path} lists no tflite artifact; export with tflite")


_FRAME_FIELDS = frozenset(f.name for f in fields(FrameTiming))


def _load_frames(jsonl: Path, updates: list[dict[str, Any]] | None = None) -> list[FrameTiming]:
    """Per-frame records; `{"event": ...}` records go to `updates` (if given) instead."""
    frames = []
    if not jsonl.is_file():
        return frames
    for line in jsonl.read_text().splitlines():
        try:
            record = json.loads(line)
            if isinstance(record, dict) and "event" in record:
                if updates is not None:
                    updates.append(record)
                continue
            # Fields a newer engine adds are skipped, not fatal; a missing field is.
            frames.append(FrameTiming(**{k: v for k, v in record.items() if k in _FRAME_FIELDS}))
        except (ValueError, TypeError):
            break  # a line cut by a kill: everything before it is complete
    return frames


def _stage_schedule(device: Device, schedule: Path, run_id: str, timeout_s: float) -> str:
    """Stage every packet a schedule names, then the schedule rewritten to the staged paths."""
    lines = []
    for i, line in enumerate(Path(schedule).read_text().splitlines()):
        if not line.strip():
            continue
        entry = json.loads(line)
        packet = Path(entry["packet"])
        if not packet.is_absolute():
            packet = Path(schedule).parent / packet
        entry["packet"] = device.stage(packet, f"{run_id}.u{i}.mdup", timeout_s=timeout_s)
        lines.append(json.dumps(entry))
    local = REPO_ROOT / "build" / "engine-runs" / f"{run_id}.schedule.jsonl"
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_text("\n".join(lines) + "\n")
    return device.stage(local, f"{run_id}.schedule.jsonl", timeout_s=timeout_s)


# --------------------------------------------------------------------------- run


def run_engine(
    device: Device,
    manifest_path: Path,
    *,
    num_threads: int = 1,
    warmup_runs: int = 1,
    num_runs: int = 50,
    frames_path: Path | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    init_mask: Path | None = None,
    out_dir: Path | None = None,
    output_masks: bool = False,
    output_logits: bool = False,
    extra_flags: tuple[str, ...] = (),
    extra_files: dict[str, Path] | None = None,
    update_schedule: Path | None = None,
    update_dir: str | None = None,
    update_port: int | None = None,
    update_key_file: Path | None = None,
    update_blocking: bool = False,
) -> ProfileResult:
    """Run the engine on `device` and return its per-frame timings and summary.

    `extra_files` maps an engine flag (e.g. "swap_graph") to a local file that is staged and
    passed as --flag=<staged path>. Streamed sparse updates (docs/engine.md): `update_schedule`
    is a local JSONL of `{"frame": K, "packet": PATH}` (packets staged with it),
    `update_dir` a folder on the device, `update_port` a TCP port on the device's loopback,
    `update_key_file` the local HMAC key file; the outcomes land in `ProfileResult.updates`. Logs land in `out_dir` (default: a fresh folder under
    build/engine-runs). Raises EngineRunError (an EngineError) naming what failed, with
    `.partial` holding the frames completed before a failure, crash or timeout.
    """
    manifest_path = Path(manifest_path)
    if not manifest_path.is_file():
        raise UsageError(f"manifest {manifest_path} not found; run `mobdistill export` first")
    tflite = _tflite_file(manifest_path)
    if frames_path is not None and not Path(frames_path).is_file():
        raise UsageError(f"frames file {frames_path} not found")
    engine, runtime = engine_for(device)
    run_id = uuid.uuid4().hex[:8]
    local = Path(out_dir or REPO_ROOT / "build" / "engine-runs" / run_id)
    local.mkdir(parents=True, exist_ok=True)
    staged_engine = _stage_cached(device, engine, ENGINE_NAME, timeout_s)
    staged_lib = _stage_cached(device, runtime, RUNTIME_LIB_NAME, timeout_s)
    remote_tflite = device.stage(tflite, tflite.name, timeout_s=timeout_s)
    remote_manifest = device.stage(manifest_path, manifest_path.name, timeout_s=timeout_s)
    work = device.workdir()
    remote = {k: f"{work}/{run_id}.{k}" for k in ("jsonl", "summary.json", "masks", "logits")}
    flags = [f"--manifest={remote_manifest}", f"--graph={remote_tflite}",
             f"--runtime_lib={staged_lib}", f"--num_threads={num_threads}",
             f"--warmup_runs={warmup_runs}", f"--num_runs={num_runs}",
             f"--jsonl={remote['jsonl']}", f"--summary={remote['summary.json']}"]
    if frames_path is not None:
        staged = device.stage(Path(frames_path), f"{run_id}.rgb", timeout_s=timeout_s)
        flags.append(f"--frames={staged}")
    if init_mask is not None:
        staged = device.stage(Path(init_mask), f"{run_id}.mask", timeout_s=timeout_s)
        flags.append(f"--init_mask={staged}")
    if output_masks:
        flags.append(f"--output_masks={remote['masks']}")
    if output_logits:
        flags.append(f"--output_logits={remote['logits']}")
    for flag, path in (extra_files or {}).items():
        staged = device.stage(Path(path), f"{run_id}.{flag}", timeout_s=timeout_s)
        flags.append(f"--{flag}={staged}")
    if update_schedule is not None:
        staged = _stage_schedule(device, Path(update_schedule), run_id, timeout_s)
        flags.append(f"--update_schedule={staged}")
    if update_dir is not None:
        flags.append(f"--update_dir={update_dir}")
    if update_port is not None:
        flags.append(f"--update_port={update_port}")
    if update_key_file is not None:
        staged = device.stage(Path(update_key_file), f"{run_id}.key", timeout_s=timeout_s)
        flags.append(f"--update_key_file={staged}")
    if update_blocking:
        flags.append("--update_blocking=true")
    flags += list(extra_flags)
    # chmod through the shell: staging copies bytes, not the executable bit (host and adb alike)
    argv = ["sh", "-c", 'chmod 755 "$0" 2>/dev/null; exec "$0" "$@"', staged_engine, *flags]
    log.info("running %s on %s", ENGINE_NAME, device.serial)
    done = device.run(argv, timeout_s=timeout_s)
    run = EngineRun(argv, done.exit_code, done.timed_out, done.stderr, local)
    fetched = _fetch_outputs(device, remote, local, timeout_s)
    updates: list[dict[str, Any]] = []
    frames = _load_frames(fetched["jsonl"], updates)
    result = ProfileResult(
        model=_model_name(manifest_path), manifest_path=str(manifest_path),
        device=device.describe(), num_threads=num_threads, warmup_runs=warmup_runs,
        num_runs=num_runs, frames=frames, updates=updates,
        summary=_read_json(fetched["summary.json"]) if run.exit_code == 0 else {},
        jsonl_path=str(fetched["jsonl"]), summary_path=str(fetched["summary.json"]),
        output_masks_path=str(fetched["masks"]) if output_masks else None,
        output_logits_path=str(fetched["logits"]) if output_logits else None)
    (local / "stderr.txt").write_text(done.stderr)
    _raise_if_failed(run, result, timeout_s, device.serial)
    return result


def _fetch_outputs(device: Device, remote: dict[str, str], local: Path,
                   timeout_s: float) -> dict[str, Path]:
    out = {}
    for key, path in remote.items():
        out[key] = local / f"engine.{key}"
        try:
            device.fetch(path, out[key], timeout_s=timeout_s)
        except DeviceError:
            pass  # not written (failed early, or not requested): callers check existence
    return out


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _model_name(manifest_path: Path) -> str:
    return str(_read_json(manifest_path).get("model", {}).get("name", manifest_path.stem))


def _raise_if_failed(run: EngineRun, result: ProfileResult, timeout_s: float, serial: str) -> None:
    kept = f"{len(result.frames)} completed frame(s) kept in {result.jsonl_path}"
    if run.timed_out:
        raise EngineRunError(f"engine timed out after {timeout_s:g} s on {serial} and was "
                             f"killed; {kept}", result)
    if run.exit_code != 0:
        lines = [ln for ln in run.stderr.strip().splitlines() if ln.strip()]
        last = lines[-1] if lines else "(no message)"
        if run.exit_code < 0 or run.exit_code > 128:
            sig = -run.exit_code if run.exit_code < 0 else run.exit_code - 128
            raise EngineRunError(f"engine crashed (signal {sig}) on {serial}: {last}; {kept}",
                                 result)
        raise EngineRunError(f"engine failed on {serial}: {last}", result)
    if not result.summary:
        raise EngineRunError(f"engine exited 0 on {serial} but wrote no summary; {kept}", result)
