"""Drive the C++ engine (android/engine) on a Device: build it, stage files, run, collect.

The engine is a benchmark_model-style executable (`mobdistill-engine`) that reads a manifest,
checks the model's sha256, runs the frames and writes one JSON line per frame (flushed per
record) plus a summary JSON. This module:

* finds the host engine: --engine / $MOBDISTILL_ENGINE, else builds it with CMake into
  build/engine in a source checkout (`find_engine`, `build_host_engine`),
* finds the TFLite C API runtime library shipped by the litert-lm-api wheel (`runtime_library`),
* stages engine, runtime library, model, manifest and frames on a `Device` and runs the engine
  (`run_engine`), fetching the per-frame log and summary even when the engine failed or timed
  out, so completed frames are never lost.

`EngineOptions` is the one place Python writes the engine's defaults (`to_flags`). Only the
`Device` interface (stage, fetch, remove, run, workdir, abi, describe) is used, so the same code
drives the host (`LocalDevice`) and a phone (`AdbDevice`).
"""

from __future__ import annotations

import enum
import fcntl
import importlib.util
import json
import logging
import os
import posixpath
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from mobdistill.errors import DeviceError, EngineError, UsageError
from mobdistill.export.manifest import Manifest
from mobdistill.runtime.device import DEFAULT_TIMEOUT_S, Device

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
ENGINE_SOURCE = REPO_ROOT / "android" / "engine"
BUILD_DIR = REPO_ROOT / "build" / "engine"
ENGINE_NAME = "mobdistill-engine"
ENGINE_ENV = "MOBDISTILL_ENGINE"  # path of a mobdistill-engine build (installed packages)
RUNTIME_LIB_NAME = "liblitert-lm.so"
_HOST_ABIS = {"x86_64", "amd64", "aarch64"}


class Delegate(enum.Enum):
    """Which TFLite delegate the engine applies (one at most; the engine reports what ran)."""

    XNNPACK = "xnnpack"
    GPU = "gpu"
    NNAPI = "nnapi"
    CPU = "cpu"  # the built-in kernels, no delegate


@dataclass(frozen=True)
class EngineOptions:
    """How to run the engine: the one place Python writes the engine's defaults.

    Field names follow the engine's flags (benchmark_model's where it has them). File-valued
    update options are local paths that `run_engine` stages; device-side paths are strings.
    """

    num_threads: int = 1
    warmup_runs: int = 1
    num_runs: int = 50
    delegate: Delegate = Delegate.XNNPACK
    timeout_s: float = DEFAULT_TIMEOUT_S  # the whole run on the device, then it is killed
    run_delay_s: float = 0.0  # sleep between runs (paces frames at a video's rate)
    record_sensors: bool = False
    # per-operator times after the measured runs (docs/engine.md "Per-operator profile")
    enable_op_profiling: bool = False
    # delta-distilled models: keyframe every N-th frame (None: the manifest's schedule.period)
    keyframe_interval: int | None = None
    engine_binary: Path | None = None  # None: $MOBDISTILL_ENGINE, else the source-tree build
    # streamed sparse updates (docs/engine.md)
    update_schedule: Path | None = None  # local JSONL {"frame": K, "packet": PATH[, "sequence"]}
    update_dir: str | None = None  # watched folder on the device
    update_port: int | None = None  # TCP port on the device's loopback
    update_key_file: Path | None = None  # local HMAC key file (staged 0600, removed after)
    update_device_id: str | None = None  # 32 hex chars the packets must carry
    insecure_updates: bool = False  # accept unauthenticated packets (opt-in only)
    update_state_file: str | None = None  # high-water sequence file on the device
    update_blocking: bool = False
    # "idle": updates decode, patch and build as SCHED_IDLE between frames; "normal": at frame
    # priority (the engine before issue 14; comparisons only)
    update_build_priority: str = "idle"

    def __post_init__(self) -> None:
        if self.num_threads == 0 or self.num_threads < -1:
            raise UsageError(f"--num_threads {self.num_threads}: use -1 (runtime decides) or >= 1")
        if self.warmup_runs < 0 or self.num_runs < 1:
            raise UsageError("--warmup_runs must be >= 0 and --num_runs >= 1")
        if self.timeout_s <= 0:
            raise UsageError(f"--timeout {self.timeout_s:g}: must be positive")
        if self.keyframe_interval is not None and self.keyframe_interval < 1:
            raise UsageError(f"--keyframe_interval {self.keyframe_interval}: must be >= 1")

    def to_flags(self, staged: Mapping[str, str] | None = None) -> list[str]:
        """The engine flags for these options; `staged` maps each file-valued flag
        ("update_schedule", "update_key_file", "op_profile") to its path on the device."""
        staged = staged or {}
        flags = [f"--num_threads={self.num_threads}", f"--warmup_runs={self.warmup_runs}",
                 f"--num_runs={self.num_runs}"]
        flags += [f"--use_{d.value}={_bool(self.delegate is d)}"
                  for d in (Delegate.XNNPACK, Delegate.GPU, Delegate.NNAPI)]
        if self.run_delay_s:
            flags.append(f"--run_delay={self.run_delay_s:g}")
        if self.record_sensors:
            flags.append("--record_sensors=true")
        if self.enable_op_profiling:
            flags += ["--enable_op_profiling=true", f"--op_profile={staged['op_profile']}"]
        if self.keyframe_interval is not None:
            flags.append(f"--keyframe_interval={self.keyframe_interval}")
        for name in ("update_schedule", "update_key_file"):
            if getattr(self, name) is not None:
                flags.append(f"--{name}={staged[name]}")
        for name in ("update_dir", "update_port", "update_device_id", "update_state_file"):
            if getattr(self, name) is not None:
                flags.append(f"--{name}={getattr(self, name)}")
        if self.insecure_updates:
            flags.append("--insecure_updates=true")
        if self.update_blocking:
            flags.append("--update_blocking=true")
        if self.update_build_priority != "idle":
            flags.append(f"--update_build_priority={self.update_build_priority}")
        return flags


def _bool(value: bool) -> str:
    return "true" if value else "false"


class EngineRunError(EngineError):
    """The engine failed, crashed or timed out; `partial` holds the frames it completed."""

    def __init__(self, message: str, partial: ProfileResult | None = None) -> None:
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
    # delta-distilled models (docs/engine.md "Delta Distillation"): the keyframe signature ran,
    # and why ("interval", "video_start", "model_changed", "state_missing"; None on delta frames)
    keyframe: bool | None = None
    keyframe_reason: str | None = None


@dataclass(frozen=True)
class UpdateEvent:
    """One `{"event": "update"}` record of the engine: a packet applied or rejected.

    `sequence` is the packet's own when the engine decoded it, else the one its schedule line
    declared; `packet` is the local file a scheduled packet was staged from."""

    source: str  # "schedule" | "dir" | "tcp"
    name: str
    sequence: int | None
    mode: str | None
    status: str  # "applied" | "rejected"
    reason: str | None
    message: str
    received_frame: int | None
    swapped_frame: int | None
    decode_us: float | None
    patch_us: float | None
    build_us: float | None
    warm_us: float | None
    packet_bytes: int
    values: int
    packet: str | None = None

    @property
    def applied(self) -> bool:
        return self.status == "applied"


_FRAME_FIELDS = frozenset(f.name for f in fields(FrameTiming))
_EVENT_FIELDS = frozenset(f.name for f in fields(UpdateEvent))


@dataclass
class ProfileResult:
    """What one engine run measured. Latencies in the summary are microseconds."""

    model: str
    manifest_path: str
    device: dict[str, str]
    options: EngineOptions
    frames: list[FrameTiming]
    summary: dict[str, Any] = field(default_factory=dict)
    jsonl_path: str = ""
    summary_path: str = ""
    output_masks_path: str | None = None
    output_logits_path: str | None = None
    update_events: list[UpdateEvent] = field(default_factory=list)
    op_profile: dict[str, Any] | None = None  # --enable_op_profiling: the engine's passes
    runner: str = "engine"  # what ran it: "engine" (the binary from a shell) or "app" (harness)

    @property
    def num_threads(self) -> int:
        return self.options.num_threads

    @property
    def warmup_runs(self) -> int:
        return self.options.warmup_runs

    @property
    def num_runs(self) -> int:
        return self.options.num_runs

    @property
    def updates(self) -> list[dict[str, Any]]:
        """The update events as JSON records (for reports and JSON output)."""
        return [asdict(event) for event in self.update_events]

    def measured_invoke_us(self) -> list[float]:
        return [f.invoke_us for f in self.frames if f.phase == "measure"]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["options"] = _options_json(self.options)
        return data


def _options_json(options: EngineOptions) -> dict[str, Any]:
    return {k: (v.value if isinstance(v, Delegate) else str(v) if isinstance(v, Path) else v)
            for k, v in asdict(options).items()}


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


def source_checkout() -> bool:
    """True when running from a source tree that holds the engine's sources (editable install)."""
    return (ENGINE_SOURCE / "CMakeLists.txt").is_file()


def find_engine(binary: Path | None = None) -> Path:
    """The host engine: `binary` (--engine), else $MOBDISTILL_ENGINE, else the source tree's
    build (built on demand). An installed package without either says how to get one."""
    chosen = binary or (Path(os.environ[ENGINE_ENV]) if os.environ.get(ENGINE_ENV) else None)
    if chosen is not None:
        if not (chosen.is_file() and os.access(chosen, os.X_OK)):
            raise UsageError(f"engine {chosen} is not an executable file (--engine or "
                             f"${ENGINE_ENV}); build it with `make engine` in a source checkout")
        return chosen
    if source_checkout():
        return build_host_engine()
    raise UsageError(
        f"no engine build: this mobdistill is installed without the engine's sources. In a "
        f"checkout of mobdistill run `make engine`, then pass --engine "
        f"CHECKOUT/build/engine/{ENGINE_NAME} or set {ENGINE_ENV} to that path")


def engine_for(device: Device, binary: Path | None = None) -> tuple[Path, Path]:
    """(engine executable, runtime library) built for the device's ABI."""
    abi = device.abi()
    if abi in _HOST_ABIS and abi == os.uname().machine:
        return find_engine(binary), runtime_library()
    android = binary.parent if binary else REPO_ROOT / "build" / f"engine-android-{abi}"
    engine, lib = binary or android / ENGINE_NAME, android / RUNTIME_LIB_NAME
    if engine.is_file() and lib.is_file():
        return engine, lib
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


def _runs_dir() -> Path:
    """Where run logs land by default: build/engine-runs in a checkout, else a private temp dir."""
    if source_checkout():
        return REPO_ROOT / "build" / "engine-runs"
    return Path(tempfile.mkdtemp(prefix="mobdistill-runs-"))


def load_records(jsonl: Path, packets: Mapping[str, tuple[str, int | None]]
                 ) -> tuple[list[FrameTiming], list[UpdateEvent]]:
    """Per-frame records and update events; `packets` maps a staged packet name to its local
    file and the sequence its schedule line declared."""
    frames: list[FrameTiming] = []
    events: list[UpdateEvent] = []
    if not jsonl.is_file():
        return frames, events
    for line in jsonl.read_text().splitlines():
        try:
            record = json.loads(line)
            if isinstance(record, dict) and record.get("event") == "update":
                events.append(_update_event(record, packets))
            elif isinstance(record, dict) and "event" not in record:
                # Fields a newer engine adds are skipped, not fatal; a missing field is.
                frames.append(FrameTiming(**{k: v for k, v in record.items()
                                             if k in _FRAME_FIELDS}))
        except (ValueError, TypeError):
            break  # a line cut by a kill: everything before it is complete
    return frames, events


def _update_event(record: dict[str, Any],
                  packets: Mapping[str, tuple[str, int | None]]) -> UpdateEvent:
    known = {k: v for k, v in record.items() if k in _EVENT_FIELDS}
    local, declared = packets.get(posixpath.basename(str(record.get("name", ""))), (None, None))
    if known.get("sequence") is None:
        known["sequence"] = declared
    return UpdateEvent(**{**known, "packet": local})


@dataclass(frozen=True)
class ScheduledPacket:
    """One line of an update schedule: `packet` becomes visible when run `frame` starts."""

    frame: int
    packet: Path  # local file
    sequence: int | None  # what the line declared (reports use it when the engine could not)


def read_schedule(schedule: Path) -> list[ScheduledPacket]:
    """The lines of a local schedule (JSONL {"frame": K, "packet": PATH[, "sequence": S]});
    a relative packet path is relative to the schedule's folder."""
    packets = []
    for i, line in enumerate(Path(schedule).read_text().splitlines()):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            packet = Path(entry["packet"])
            frame = int(entry["frame"])
        except (ValueError, KeyError, TypeError) as err:
            raise UsageError(f"{schedule} line {i + 1}: expected "
                             '{"frame": K, "packet": PATH}: ' + str(err)) from err
        if not packet.is_absolute():
            packet = Path(schedule).parent / packet
        packets.append(ScheduledPacket(frame, packet, entry.get("sequence")))
    return packets


def _stage_schedule(device: Device, schedule: Path, run_id: str, local_dir: Path,
                    timeout_s: float) -> tuple[str, dict[str, tuple[str, int | None]]]:
    """Stage every packet a schedule names, then the schedule rewritten to the staged paths.

    Returns the staged schedule and, per staged packet name, (local file, declared sequence)."""
    lines, packets = [], {}
    for i, entry in enumerate(read_schedule(schedule)):
        name = f"{run_id}.u{i}.mdup"
        staged = device.stage(entry.packet, name, timeout_s=timeout_s)
        packets[name] = (str(entry.packet), entry.sequence)
        lines.append(json.dumps({"frame": entry.frame, "packet": staged}))
    local = local_dir / f"{run_id}.schedule.jsonl"
    local.write_text("\n".join(lines) + "\n")
    return device.stage(local, local.name, timeout_s=timeout_s), packets


# --------------------------------------------------------------------------- run


def run_engine(
    device: Device,
    manifest_path: Path,
    options: EngineOptions | None = None,
    *,
    frames_path: Path | None = None,
    init_mask: Path | None = None,
    out_dir: Path | None = None,
    output_masks: bool = False,
    output_logits: bool = False,
    extra_flags: tuple[str, ...] = (),
    extra_files: dict[str, Path] | None = None,
    **overrides: Any,
) -> ProfileResult:
    """Run the engine on `device` and return its per-frame timings, update events and summary.

    `options` (default `EngineOptions()`) says how; keyword `overrides` replace single fields of
    it (`run_engine(device, m, num_runs=5)`). `extra_files` maps an engine flag (e.g.
    "swap_graph") to a local file that is staged and passed as --flag=<staged path>. Logs land
    in `out_dir` (default: a fresh folder under build/engine-runs). Raises EngineRunError (an
    EngineError) naming what failed, with `.partial` holding the frames completed before a
    failure, crash or timeout. The key file is staged readable by its owner only and removed
    from the device after the run.
    """
    options = replace(options or EngineOptions(), **overrides)
    manifest = Manifest.load(Path(manifest_path), check_files=False)
    tflite = manifest.tflite_path
    if not tflite.is_file():
        raise UsageError(f"manifest {manifest.path} lists {tflite}, which does not exist; "
                         "re-export the model")
    if frames_path is not None and not Path(frames_path).is_file():
        raise UsageError(f"frames file {frames_path} not found")
    engine, runtime = engine_for(device, options.engine_binary)
    run_id = uuid.uuid4().hex[:8]
    local = Path(out_dir or _runs_dir() / run_id)
    local.mkdir(parents=True, exist_ok=True)
    timeout_s = options.timeout_s
    staged_engine = _stage_cached(device, engine, ENGINE_NAME, timeout_s)
    staged_lib = _stage_cached(device, runtime, RUNTIME_LIB_NAME, timeout_s)
    remote_tflite = device.stage(tflite, tflite.name, timeout_s=timeout_s)
    remote_manifest = device.stage(manifest.path, manifest.path.name, timeout_s=timeout_s)
    work = device.workdir()
    outputs = ("jsonl", "summary.json", "masks", "logits") + (
        ("op_profile.json",) if options.enable_op_profiling else ())
    remote = {k: f"{work}/{run_id}.{k}" for k in outputs}
    flags = [f"--manifest={remote_manifest}", f"--graph={remote_tflite}",
             f"--runtime_lib={staged_lib}", f"--jsonl={remote['jsonl']}",
             f"--summary={remote['summary.json']}"]
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
    staged_files: dict[str, str] = {}
    if options.enable_op_profiling:
        staged_files["op_profile"] = remote["op_profile.json"]
    packets: dict[str, tuple[str, int | None]] = {}
    if options.update_schedule is not None:
        staged_files["update_schedule"], packets = _stage_schedule(
            device, options.update_schedule, run_id, local, timeout_s)
    if options.update_key_file is not None:
        staged_files["update_key_file"] = device.stage(
            Path(options.update_key_file), f"{run_id}.key", timeout_s=timeout_s, private=True)
    flags += options.to_flags(staged_files) + list(extra_flags)
    # chmod through the shell: staging copies bytes, not the executable bit (host and adb alike)
    argv = ["sh", "-c", 'chmod 755 "$0" 2>/dev/null; exec "$0" "$@"', staged_engine, *flags]
    log.info("running %s on %s", ENGINE_NAME, device.serial)
    try:
        done = device.run(argv, timeout_s=timeout_s)
    finally:
        if "update_key_file" in staged_files:
            device.remove(staged_files["update_key_file"])
    run = EngineRun(argv, done.exit_code, done.timed_out, done.stderr, local)
    fetched = _fetch_outputs(device, remote, local, timeout_s)
    frames, events = load_records(fetched["jsonl"], packets)
    result = ProfileResult(
        model=manifest.model_name, manifest_path=str(manifest.path), device=device.describe(),
        options=options, frames=frames, update_events=events,
        summary=read_json(fetched["summary.json"]) if run.exit_code == 0 else {},
        jsonl_path=str(fetched["jsonl"]), summary_path=str(fetched["summary.json"]),
        output_masks_path=str(fetched["masks"]) if output_masks else None,
        output_logits_path=str(fetched["logits"]) if output_logits else None,
        op_profile=(read_json(fetched["op_profile.json"]) or None
                    if options.enable_op_profiling else None))
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


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


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
