"""The manifest: the versioned JSON contract written beside every export (docs/manifest.md)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from functools import cached_property, lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from mobdistill.errors import ManifestError, MissingArtifactError, UsageError
from mobdistill.files import atomic_write_text, sha256_file

SCHEMA_NAME = "mobdistill.manifest"
SCHEMA_VERSION = 1
_TOOLS = ("mobdistill", "torch", "litert-torch", "ai-edge-litert", "ai-edge-quantizer", "onnx",
          "onnxruntime", "numpy")


def manifest_path_for(out_dir: Path, stem: str) -> Path:
    return out_dir / f"{stem}.manifest.json"


def tool_versions() -> dict[str, str]:
    versions = {}
    for tool in _TOOLS:
        try:
            versions[tool] = metadata.version(tool)
        except metadata.PackageNotFoundError:
            versions[tool] = "not installed"
    return versions


def signature_json(spec) -> dict[str, Any]:
    return {"name": spec.name,
            "inputs": [_tensor_json(t) for t in spec.inputs],
            "outputs": [_tensor_json(t) for t in spec.outputs]}


def _tensor_json(tensor) -> dict[str, Any]:
    return {"name": tensor.name, "shape": list(tensor.shape), "dtype": tensor.dtype,
            "layout": tensor.layout, "role": tensor.role}


def memory_json(memory) -> dict[str, Any] | None:
    if memory is None:
        return None
    return {"kind": "memory_queue", "queue_length": memory.queue_length,
            "policy": "first_frame_plus_fifo", "pad": "repeat_oldest",
            "init_signature": memory.init_signature, "step_signature": memory.step_signature,
            "carry": [{"output": o, "input": i} for o, i in memory.carry]}


SCHEDULE_KIND = "keyframe_delta"
SCHEDULE_VERSION = 1


def schedule_json(schedule) -> dict[str, Any]:
    """The `schedule` section of a delta-distilled model (docs/manifest.md)."""
    return {"kind": SCHEDULE_KIND, "version": SCHEDULE_VERSION, "period": schedule.period,
            "keyframe_signature": schedule.keyframe_signature,
            "delta_signature": schedule.delta_signature,
            "carry": [{"output": o, "input": i} for o, i in schedule.carry]}


def preprocessing_json(pre) -> dict[str, Any]:
    return {"channel_order": pre.channel_order, "input_range": list(pre.input_range),
            "dtype": "float32", "normalization": "in_graph",
            "mean": list(pre.mean), "std": list(pre.std)}


def artifact_json(path: Path, fmt: str, signatures: list[str], **extra: Any) -> dict[str, Any]:
    return {"format": fmt, "file": path.name, "sha256": sha256_file(path),
            "size_bytes": path.stat().st_size, "signatures": signatures, **extra}


def now_utc() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def config_json(config: Any) -> dict[str, Any]:
    return asdict(config) if hasattr(config, "__dataclass_fields__") else dict(config)


@lru_cache(maxsize=1)
def _validator():
    import jsonschema

    schema = json.loads((Path(__file__).parent / "manifest_schema.json").read_text())
    return jsonschema.Draft202012Validator(schema)


def validate(manifest: dict[str, Any]) -> None:
    """Raise ManifestError naming the first schema violation."""
    if manifest.get("schema") != SCHEMA_NAME:
        raise ManifestError("not a mobdistill manifest (field 'schema' is missing or wrong)")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ManifestError(
            f"manifest schema_version {version!r} is not supported (this mobdistill reads "
            f"{SCHEMA_VERSION}); re-export the model with this version")
    error = next(iter(sorted(_validator().iter_errors(manifest), key=lambda e: e.path)), None)
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise ManifestError(f"invalid manifest at {where}: {error.message}")
    if manifest.get("schedule") is not None:
        _check_schedule(manifest)


def _check_schedule(manifest: dict[str, Any]) -> None:
    """What the schema cannot say: the schedule's signatures and carried tensors exist and fit."""
    schedule = manifest["schedule"]
    if manifest["memory"] is not None:
        raise ManifestError("invalid manifest: a model has a memory queue or a keyframe schedule, "
                            "not both")
    signatures = {s["name"]: s for s in manifest["signatures"]}
    names = (schedule["keyframe_signature"], schedule["delta_signature"])
    missing = [n for n in names if n not in signatures]
    if missing:
        raise ManifestError(f"invalid manifest at schedule: no signature {missing[0]!r}")
    keyframe, delta = (signatures[n] for n in names)
    delta_inputs = {t["name"]: t for t in delta["inputs"]}
    for pair in schedule["carry"]:
        source = [{t["name"]: t for t in sig["outputs"]}.get(pair["output"])
                  for sig in (keyframe, delta)]
        target = delta_inputs.get(pair["input"])
        if None in source or target is None:
            raise ManifestError(f"invalid manifest at schedule/carry: {pair['output']} -> "
                                f"{pair['input']} needs that output in both signatures and that "
                                f"input in {delta['name']}")
        if any(t["shape"] != target["shape"] for t in source if t is not None):
            raise ManifestError(f"invalid manifest at schedule/carry: {pair['output']} and "
                                f"{pair['input']} differ in shape")
    fed = {p["input"] for p in schedule["carry"]} | {
        t["name"] for t in delta["inputs"] if t["role"] == "frame"}
    unfed = sorted(set(delta_inputs) - fed)
    if unfed:
        raise ManifestError(f"invalid manifest at schedule/carry: delta input(s) {unfed} are "
                            "neither the frame nor carried")


def write(manifest: dict[str, Any], path: Path) -> None:
    """Validate, then write atomically."""
    validate(manifest)
    atomic_write_text(path, json.dumps(manifest, indent=2) + "\n")


def load(path: Path, *, check_files: bool = True) -> Manifest:
    """Read and validate a manifest; with check_files, every artifact must match its sha256."""
    return Manifest.load(path, check_files=check_files)


def check_artifact(path: Path, expected_sha256: str) -> None:
    if not path.is_file():
        raise ManifestError(f"artifact {path} listed in the manifest is missing; re-export it")
    actual = sha256_file(path)
    if actual != expected_sha256:
        raise ManifestError(
            f"artifact {path} does not match its manifest (sha256 {actual[:12]}…, expected "
            f"{expected_sha256[:12]}…): it was modified or truncated; re-export it")


@dataclass(frozen=True)
class Artifact:
    """One exported file listed in the manifest; `path` is resolved beside the manifest."""

    format: str  # "tflite" | "onnx"
    path: Path
    sha256: str
    size_bytes: int
    signatures: tuple[str, ...]


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str
    layout: str
    role: str


@dataclass(frozen=True)
class Signature:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def input_with_role(self, role: str) -> TensorSpec | None:
        return next((t for t in self.inputs if t.role == role), None)


@dataclass(frozen=True)
class MemorySpec:
    """The memory queue of a stateful model: which outputs feed which inputs, and how long."""

    queue_length: int
    init_signature: str
    step_signature: str
    carry: tuple[tuple[str, str], ...]  # (output, input)


@dataclass(frozen=True)
class ScheduleSpec:
    """Delta distillation's keyframe schedule: `keyframe` on every `period`-th frame, `delta`
    on the others with each carried output of the previous frame fed to its input."""

    period: int
    keyframe_signature: str
    delta_signature: str
    carry: tuple[tuple[str, str], ...]  # (output, input)


@dataclass(frozen=True)
class ParameterEntry:
    """Where one PyTorch parameter lives in the .tflite (the update address)."""

    parameter: str
    shape: tuple[int, ...]
    tensor_index: int
    buffer_index: int
    buffer_offset: int
    buffer_size: int
    tflite_shape: tuple[int, ...]
    permutation: tuple[int, ...]
    fold: Any  # None or the BatchNorm it was folded with (docs/manifest.md)


def _tensor(t: Mapping[str, Any]) -> TensorSpec:
    return TensorSpec(t["name"], tuple(t["shape"]), t["dtype"], t["layout"], t["role"])


class Manifest(Mapping[str, Any]):
    """A validated manifest with typed accessors. It stays a read-only mapping of its JSON
    document, so code that needs a field without an accessor reads it by key."""

    def __init__(self, data: Mapping[str, Any], path: Path) -> None:
        validate(dict(data))
        self._data = data
        self.path = Path(path)

    @classmethod
    def load(cls, path: Path, *, check_files: bool = True) -> Manifest:
        """Read and validate `path`; with check_files, every artifact must match its sha256."""
        path = Path(path)
        if path.suffix == ".tflite":
            path = _manifest_beside(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError as err:
            raise ManifestError(f"manifest {path} not found; run `mobdistill export` first") \
                from err
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ManifestError(f"cannot read manifest {path}: {err}") from err
        if not isinstance(data, dict):
            raise ManifestError(f"{path} is not a mobdistill manifest (not a JSON object)")
        manifest = cls(data, path)
        if check_files:
            for artifact in manifest.artifacts:
                check_artifact(artifact.path, artifact.sha256)
        return manifest

    # -- the mapping view of the JSON document
    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    # -- typed accessors
    @property
    def model_name(self) -> str:
        return str(self._data["model"]["name"])

    @property
    def resolution(self) -> tuple[int, int]:
        height, width = self._data["model"]["resolution"]
        return int(height), int(width)

    @property
    def num_params(self) -> int:
        return int(self._data["model"]["num_params"])

    @cached_property
    def artifacts(self) -> tuple[Artifact, ...]:
        return tuple(Artifact(a["format"], self.path.parent / a["file"], a["sha256"],
                              int(a["size_bytes"]), tuple(a["signatures"]))
                     for a in self._data["artifacts"])

    def artifact(self, fmt: str, signature: str | None = None) -> Artifact:
        """The artifact of format `fmt` (holding `signature`, if given)."""
        for artifact in self.artifacts:
            if artifact.format == fmt and (signature is None or signature in artifact.signatures):
                return artifact
        raise MissingArtifactError(
            f"manifest {self.path} lists no {fmt} artifact"
            + (f" for signature {signature}" if signature else "")
            + f"; re-export with --format {fmt}")

    @property
    def tflite(self) -> Artifact:
        return self.artifact("tflite")

    @property
    def tflite_path(self) -> Path:
        return self.tflite.path

    @property
    def tflite_sha256(self) -> str:
        return self.tflite.sha256

    @property
    def onnx_paths(self) -> dict[str, Path]:
        """Signature name -> the ONNX file that holds it."""
        return {name: a.path for a in self.artifacts if a.format == "onnx"
                for name in a.signatures}

    @cached_property
    def signatures(self) -> tuple[Signature, ...]:
        return tuple(Signature(s["name"], tuple(map(_tensor, s["inputs"])),
                               tuple(map(_tensor, s["outputs"])))
                     for s in self._data["signatures"])

    def signature(self, name: str) -> Signature:
        for signature in self.signatures:
            if signature.name == name:
                return signature
        raise ManifestError(f"manifest {self.path} has no signature {name!r}")

    @cached_property
    def memory(self) -> MemorySpec | None:
        memory = self._data["memory"]
        if memory is None:
            return None
        return MemorySpec(int(memory["queue_length"]), memory["init_signature"],
                          memory["step_signature"],
                          tuple((c["output"], c["input"]) for c in memory["carry"]))

    @cached_property
    def schedule(self) -> ScheduleSpec | None:
        """The keyframe schedule of a delta-distilled model; None for other models."""
        schedule = self._data.get("schedule")
        if schedule is None:
            return None
        return ScheduleSpec(int(schedule["period"]), schedule["keyframe_signature"],
                            schedule["delta_signature"],
                            tuple((c["output"], c["input"]) for c in schedule["carry"]))

    @property
    def quantization(self) -> dict[str, Any] | None:
        """The `quantization` section of a quantized variant; None for a float32 export."""
        section = self._data.get("quantization")
        return dict(section) if section is not None else None

    @property
    def precision(self) -> str:
        """"float32", or the quantization mode ("fp16", "dynamic-int8", "int8")."""
        section = self._data.get("quantization")
        return str(section["mode"]) if section else "float32"

    @property
    def parameter_map_status(self) -> str:
        return str(self._data["parameter_map"]["status"])

    @cached_property
    def parameter_entries(self) -> tuple[ParameterEntry, ...]:
        return tuple(ParameterEntry(e["parameter"], tuple(e["shape"]), int(e["tensor_index"]),
                                    int(e["buffer_index"]), int(e["buffer_offset"]),
                                    int(e["buffer_size"]), tuple(e["tflite_shape"]),
                                    tuple(e["permutation"]), e["fold"])
                     for e in self._data["parameter_map"]["entries"])


def _manifest_beside(tflite: Path) -> Path:
    """The manifest in the same folder that lists `tflite` (what `mobdistill export` wrote).

    A bare .tflite does not say which inputs are frames or masks, nor how a memory queue is
    carried, so the engine cannot run it without its manifest."""
    if not tflite.is_file():
        raise UsageError(f"{tflite} not found")
    for candidate in sorted(tflite.parent.glob("*.manifest.json")):
        try:
            data = json.loads(candidate.read_text())
            files = [a["file"] for a in data["artifacts"] if a["format"] == "tflite"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if tflite.name in files:
            return candidate
    raise UsageError(
        f"{tflite} has no manifest beside it: mobdistill runs a model through the "
        "*.manifest.json that `mobdistill export` writes next to the .tflite (it names the "
        "frame and mask inputs, the output and the memory queue); export the model with "
        "`mobdistill export`, or pass its manifest")
