"""The manifest: the versioned JSON contract written beside every export (docs/manifest.md)."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime, timezone
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from mobdistill.errors import ManifestError
from mobdistill.files import atomic_write_text, sha256_file

SCHEMA_NAME = "mobdistill.manifest"
SCHEMA_VERSION = 1
_TOOLS = ("mobdistill", "torch", "litert-torch", "ai-edge-litert", "onnx", "onnxruntime", "numpy")


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


def write(manifest: dict[str, Any], path: Path) -> None:
    """Validate, then write atomically."""
    validate(manifest)
    atomic_write_text(path, json.dumps(manifest, indent=2) + "\n")


def load(path: Path, *, check_files: bool = True) -> dict[str, Any]:
    """Read and validate a manifest; with check_files, every artifact must match its sha256."""
    try:
        manifest = json.loads(Path(path).read_text())
    except FileNotFoundError as err:
        raise ManifestError(f"manifest {path} not found; run `mobdistill export` first") from err
    except (OSError, json.JSONDecodeError) as err:
        raise ManifestError(f"cannot read manifest {path}: {err}") from err
    validate(manifest)
    if check_files:
        for artifact in manifest["artifacts"]:
            check_artifact(Path(path).parent / artifact["file"], artifact["sha256"])
    return manifest


def check_artifact(path: Path, expected_sha256: str) -> None:
    if not path.is_file():
        raise ManifestError(f"artifact {path} listed in the manifest is missing")
    actual = sha256_file(path)
    if actual != expected_sha256:
        raise ManifestError(
            f"artifact {path} does not match its manifest (sha256 {actual[:12]}…, expected "
            f"{expected_sha256[:12]}…): it was modified or truncated; re-export it")


def artifact_path(manifest_path: Path, manifest: dict[str, Any], fmt: str,
                  signature: str | None = None) -> Path:
    """The file of format `fmt` (holding `signature`, if given) listed in the manifest."""
    for artifact in manifest["artifacts"]:
        if artifact["format"] == fmt and (signature is None or signature in artifact["signatures"]):
            return Path(manifest_path).parent / artifact["file"]
    raise ManifestError(f"the manifest lists no {fmt} artifact" + (f" for {signature}" if signature else ""))
