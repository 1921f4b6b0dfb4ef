"""`export_model`: student -> verified TFLite + ONNX artifacts + manifest, all or nothing.

Steps (each a small function below):
  1. build the student (and load a checkpoint)      4. map parameters to TFLite buffers
  2. convert to TFLite (one file, named signatures)  5. verify every artifact on real frames
  3. export ONNX (one file per signature)            6. write the manifest, then publish
With `quantize`, the verified float32 .tflite is then quantized (export/quantize.py) and the
variant checked against it on segmentation; only the variant and its manifest are published,
as `<model>-<mode>.tflite` beside any float32 export.
Artifacts are written into a hidden staging folder inside `out_dir` and renamed into place only
after verification passed, so a failed export never replaces a good one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from torch import nn

from mobdistill.errors import UsageError, VerifyError
from mobdistill.export import manifest as mf
from mobdistill.export import onnx as onnx_export
from mobdistill.export import quantize as quant
from mobdistill.export import tflite as tflite_export
from mobdistill.export.checkpoint import load_checkpoint
from mobdistill.export.deploy import signature_modules
from mobdistill.export.param_map import build_parameter_map
from mobdistill.export.verify import (
    OnnxRunner,
    Runner,
    TfliteRunner,
    Tolerance,
    TorchRunner,
    VerifyReport,
    compare,
    run_frames,
)
from mobdistill.models import registry
from mobdistill.models.spec import (
    KeyframeScheduleSpec,
    MemoryQueueSpec,
    ModelEntry,
    SignatureSpec,
)
from mobdistill.video import DEFAULT_CLIP, iter_frames, read_frames

FORMATS = ("tflite", "onnx")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArtifactSummary:
    format: str
    file: str
    size_bytes: int
    sha256: str
    transpose_ops: int | None = None


@dataclass(frozen=True)
class ExportResult:
    model: str
    resolution: tuple[int, int]
    num_params: int
    manifest_path: Path
    artifacts: list[ArtifactSummary]
    verification: dict | None
    parameter_map_status: str
    timings_s: dict[str, float] = field(default_factory=dict)
    quantization: dict | None = None

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["manifest_path"] = str(self.manifest_path)
        return data


@dataclass
class _Job:
    """Everything one export works on; filled step by step."""

    entry: ModelEntry
    config: Any
    resolution: tuple[int, int]
    model: nn.Module
    stage: Path
    stem: str
    specs: tuple[SignatureSpec, ...]
    memory: MemoryQueueSpec | None
    schedule: KeyframeScheduleSpec | None = None
    artifacts: list[dict] = field(default_factory=list)
    parameter_map: dict = field(default_factory=lambda: {
        "status": "not_exported", "entries": [], "unmapped": []})
    verification: VerifyReport | None = None
    inherited_verification: dict | None = None  # quantize_export: the float32 manifest's
    float_tflite: Path | None = None
    quantization: dict | None = None
    timings_s: dict[str, float] = field(default_factory=dict)


def export_model(
    model_name: str | ModelEntry | nn.Module,
    *,
    out_dir: Path,
    formats: tuple[str, ...] = FORMATS,
    resolution: tuple[int, int] | None = None,
    overrides: dict[str, Any] | None = None,
    config: Any | None = None,
    checkpoint: Path | None = None,
    tiny: bool = False,
    verify: bool = True,
    video: str | Path = DEFAULT_CLIP,
    tolerance: Tolerance = Tolerance(),
    quantize: quant.QuantizeOptions | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> ExportResult:
    """Export `model_name` and return where the verified artifacts and manifest are.

    `tiny` starts from the model's small test configuration and resolution instead of the
    paper's; `overrides` replace config fields; a complete `config` replaces both.
    `quantize` publishes a quantized variant of the TFLite export instead of the float32 one;
    it is verified on segmentation against the float32 export (which is verified against
    PyTorch first, so `verify` cannot be off). Raises UsageError (bad model/option/out_dir),
    CheckpointError, ExportError, VerifyError.
    """
    unknown = set(formats) - set(FORMATS)
    if unknown or not formats:
        raise UsageError(f"unknown format(s) {sorted(unknown)}; choose from {', '.join(FORMATS)}")
    if quantize is not None:
        _check_quantize(quantize, formats, verify)
    entry = registry.resolve(model_name, resolution)  # a name, or your own (custom_entry)
    if config is None:
        config = registry.configure(entry, tiny=tiny, **(overrides or {}))
    height, width = resolution or (entry.tiny_resolution if tiny else entry.default_resolution)
    registry.check_resolution(entry, height, width)
    schedule = entry.schedule(config)
    if quantize is not None and schedule is not None:
        raise UsageError(f"--quantize does not support {entry.name} yet: its carried state "
                         "would be quantized across frames unchecked; export it in float32")
    model = entry.build(config).eval()
    if checkpoint is not None:
        load_checkpoint(model, Path(checkpoint))
    out_dir = Path(out_dir)
    with _staging(out_dir) as stage:
        job = _Job(entry, config, (height, width), model, stage, entry.name,
                   entry.signatures(config, height, width), entry.memory(config), schedule)
        steps = _steps(formats, verify, video, tolerance, quantize)
        manifest_path = _run_steps(job, steps, progress, out_dir)
    return _result(job, manifest_path)


def quantize_export(
    manifest_path: Path,
    options: quant.QuantizeOptions,
    *,
    out_dir: Path | None = None,
    checkpoint: Path | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> ExportResult:
    """A quantized variant of an existing, verified float32 export (no new conversion).

    Published as `<model>-<mode>` beside it (or in `out_dir`). The checkpoint the float32 export
    was made from is needed only for the fp16 parameter map (sparse updates); without it the
    variant's map is `not_exported`. Raises UsageError, ManifestError, ExportError, VerifyError.
    """
    source = mf.load(Path(manifest_path))
    if source.quantization is not None:
        raise UsageError(f"{source.path} is already a {source.precision} variant: quantize the "
                         "float32 export it came from")
    if not source["verification"]:
        raise UsageError(f"{source.path} was exported with --no-verify: a variant is checked "
                         "against a verified float32 export only")
    _check_quantize(options, ("tflite",), True)
    entry = registry.get(source.model_name)
    if source.schedule is not None:
        raise UsageError(f"--quantize does not support {entry.name} yet: its carried state "
                         "would be quantized across frames unchecked")
    config = entry.config_type(**{k: tuple(v) if isinstance(v, list) else v
                                  for k, v in source["model"]["config"].items()})
    height, width = source.resolution
    model = entry.build(config).eval()
    if checkpoint is not None:
        load_checkpoint(model, Path(checkpoint))
    out_dir = Path(out_dir or source.path.parent)
    with _staging(out_dir) as stage:
        job = _Job(entry, config, (height, width), model, stage, entry.name,
                   entry.signatures(config, height, width), entry.memory(config),
                   artifacts=[dict(a) for a in source["artifacts"] if a["format"] == "tflite"],
                   inherited_verification=source["verification"],
                   float_tflite=source.tflite_path)
        steps = _steps((), False, DEFAULT_CLIP, Tolerance(), options)
        if checkpoint is None and options.mode == "fp16":
            steps = [(label, _no_parameter_map if label == "map parameters" else step)
                     for label, step in steps]
        manifest_path = _run_steps(job, steps, progress, out_dir)
    return _result(job, manifest_path)


def _no_parameter_map(job: _Job) -> None:
    job.parameter_map = {"status": "not_exported", "entries": [], "unmapped": [],
                         "reason": "quantized from an export without --checkpoint: the PyTorch "
                                   "weights the map is found by were not given"}


def _run_steps(job: _Job, steps: list[tuple[str, Callable[[_Job], None]]],
               progress: Callable[[int, int, str], None] | None, out_dir: Path) -> Path:
    for number, (label, step) in enumerate(steps, 1):
        if progress:
            progress(number, len(steps), label)
        started = time.perf_counter()
        step(job)
        job.timings_s[label] = round(time.perf_counter() - started, 3)
    return _publish(job, out_dir)


def _steps(formats, verify, video, tolerance,
           quantize: quant.QuantizeOptions | None) -> list[tuple[str, Callable[[_Job], None]]]:
    steps: list[tuple[str, Callable[[_Job], None]]] = []
    if "tflite" in formats:
        steps.append(("convert tflite", _convert_tflite))
        if quantize is None:
            steps.append(("map parameters", _map_parameters))
    if "onnx" in formats:
        steps.append(("export onnx", _export_onnx))
    if verify:
        steps.append(("verify", lambda job: _verify(job, video, tolerance)))
    if quantize is not None:
        steps += [(f"quantize {quantize.mode}", lambda job: _quantize(job, quantize)),
                  (f"verify {quantize.mode}", lambda job: _verify_quantized(job, quantize)),
                  ("map parameters", _map_parameters)]
    return steps


def _check_quantize(options: quant.QuantizeOptions, formats: tuple[str, ...],
                    verify: bool) -> None:
    if tuple(formats) != ("tflite",):
        raise UsageError("--quantize makes a TFLite variant: use --format tflite (ONNX exports "
                         "stay float32; export them without --quantize)")
    if not verify:
        raise UsageError("--quantize needs verification: the variant is accepted only when it "
                         "agrees with the verified float32 export (drop --no-verify)")
    if options.mode == "int8" and _same_clip(options.calibration, options.verification):
        raise UsageError(f"calibration and verification would both use {options.verification}: "
                         "give --calibration-video a clip that --quantize-video is not (a variant "
                         "checked on its own calibration frames looks better than it is)")


def _same_clip(a: str | Path, b: str | Path) -> bool:
    pa, pb = Path(str(a)), Path(str(b))
    if pa.is_file() and pb.is_file():
        return pa.resolve() == pb.resolve()
    return pa.name == pb.name


@contextlib.contextmanager
def _staging(out_dir: Path) -> Iterator[Path]:
    """A hidden folder inside out_dir (same filesystem, so publishing is a rename)."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=".mobdistill-export-", dir=out_dir))
    except OSError as err:
        raise UsageError(f"cannot write to --out {out_dir}: {err.strerror or err}") from err
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _convert_tflite(job: _Job) -> None:
    path = job.stage / f"{job.stem}.tflite"
    tflite_export.to_tflite(signature_modules(job.model, job.specs), path)
    job.float_tflite = path
    ops = tflite_export.inspect(path).op_counts
    job.artifacts.append(mf.artifact_json(path, "tflite", [s.name for s in job.specs],
                                          op_counts=ops, transpose_ops=ops.get("TRANSPOSE", 0)))


def _map_parameters(job: _Job) -> None:
    path = job.stage / f"{job.stem}.tflite"
    mode = job.quantization["mode"] if job.quantization else None
    if mode in ("dynamic-int8", "int8"):
        job.parameter_map = {"status": "not_exported", "entries": [], "unmapped": [],
                             "reason": quant.UPDATE_RULES[mode]}
        return
    job.parameter_map = build_parameter_map(job.model, tflite_export.inspect(path),
                                            path.read_bytes())


def _quantize(job: _Job, options: quant.QuantizeOptions) -> None:
    """Quantize the verified float32 .tflite; the variant replaces it in the artifact list."""
    float_path = job.float_tflite
    assert float_path is not None
    job.stem = f"{job.entry.name}-{options.mode}"
    path = job.stage / f"{job.stem}.tflite"
    calibration = None
    data = None
    if options.mode == "int8":
        video = options.calibration
        frames = _spread_frames(video, options.calibration_frames, job.resolution)
        data = quant.calibration_inputs(TfliteRunner(float_path), job.specs, job.memory, frames)
        calibration = {"video": Path(str(video)).name, "frames": len(frames),
                       "selection": "evenly spread over the clip"}
    quant.quantize_tflite(float_path, path, options.mode, data)
    float_artifact = next(a for a in job.artifacts if a["format"] == "tflite")
    ops = tflite_export.inspect(path).op_counts
    job.artifacts = [mf.artifact_json(path, "tflite", [s.name for s in job.specs],
                                      op_counts=ops, transpose_ops=ops.get("TRANSPOSE", 0))]
    job.quantization = {"options": options, "mode": options.mode, "float_path": float_path,
                        "float_artifact": float_artifact, "calibration": calibration}


def _spread_frames(video: str | Path, count: int, size: tuple[int, int]) -> np.ndarray:
    """`count` frames spread over the whole clip (consecutive frames are near duplicates)."""
    frames = list(iter_frames(video, size=size))
    if not frames:
        raise UsageError(f"video {video} has no frames")
    return np.stack([frames[i] for i in quant.spread_indices(len(frames), count)])


def _verify_quantized(job: _Job, options: quant.QuantizeOptions) -> None:
    assert job.quantization is not None
    video = options.verification
    count = options.verification_frames
    if job.memory is not None:
        count = max(count, job.memory.queue_length + 2)
    frames = read_frames(video, count, size=job.resolution)
    try:
        check = quant.segmentation_check(
            TfliteRunner(job.quantization["float_path"]),
            TfliteRunner(job.stage / f"{job.stem}.tflite"), options.mode, job.specs, job.memory,
            frames, Path(str(video)).name, options)
    except (ValueError, RuntimeError) as err:  # the interpreter refuses the variant
        raise VerifyError(f"the {options.mode} variant does not run in ai_edge_litert: {err}; "
                          "nothing was written") from err
    section = quant.quantization_json(options, job.quantization["float_artifact"],
                                      job.quantization["calibration"], check)
    job.quantization = {**job.quantization, "section": section}
    if not check.passed:
        raise VerifyError(
            f"{options.mode} variant agrees with the float32 export on "
            f"{check.argmax_agreement:.4f} of the pixels of {check.frames} frames of "
            f"{check.video} (needs >= {check.min_argmax_agreement}; mIoU vs float32 "
            f"{check.miou_vs_float32:.4f}); nothing was written")


def _export_onnx(job: _Job) -> None:
    for name, module in signature_modules(job.model, job.specs).items():
        path = job.stage / onnx_export.onnx_file_name(job.stem, name, len(job.specs))
        onnx_export.to_onnx(module, path)
        job.artifacts.append(mf.artifact_json(path, "onnx", [name]))


def _verify(job: _Job, video: str | Path, tolerance: Tolerance) -> None:
    specs, memory, schedule = job.specs, job.memory, job.schedule
    count = 3 if memory is None else max(4, memory.queue_length + 2)
    if schedule is not None:  # keyframe, delta frames, the next keyframe and a delta after it
        count = schedule.period + 2
    frames = read_frames(video, count, size=job.resolution)
    reference = run_frames(TorchRunner(signature_modules(job.model, specs)), specs, memory, frames,
                           schedule=schedule)
    report = VerifyReport(str(Path(str(video)).name), count, tolerance)
    for fmt, runner in _runners(job):
        report.results.extend(compare(
            fmt, reference, run_frames(runner, specs, memory, frames, schedule=schedule),
            specs, tolerance))
    job.verification = report
    if not report.passed:
        worst = max(report.failures(), key=lambda c: c.max_abs_err)
        raise VerifyError(
            f"{worst.format} artifact differs from PyTorch: {worst.signature}/{worst.output} "
            f"max abs error {worst.max_abs_err:.3g} (reference max {worst.reference_max_abs:.3g}), "
            f"argmax agreement {worst.argmax_agreement}; nothing was written")


def _runners(job: _Job) -> Iterator[tuple[str, Runner]]:
    onnx_files: dict[str, Path] = {}
    for artifact in job.artifacts:
        path = job.stage / artifact["file"]
        if artifact["format"] == "tflite":
            yield "tflite", TfliteRunner(path)
        else:
            onnx_files.update({name: path for name in artifact["signatures"]})
    if onnx_files:
        yield "onnx", OnnxRunner(onnx_files)


def _manifest(job: _Job) -> dict[str, Any]:
    logits = next(t for s in job.specs for t in s.outputs if t.role == "logits")
    classes = logits.shape[-1]
    return {
        "schema": mf.SCHEMA_NAME, "schema_version": mf.SCHEMA_VERSION, "created_utc": mf.now_utc(),
        "model": {"name": job.entry.name, "config": mf.config_json(job.config),
                  "resolution": list(job.resolution),
                  "num_params": sum(p.numel() for p in job.model.parameters())},
        "artifacts": job.artifacts,
        "signatures": [mf.signature_json(s) for s in job.specs],
        "preprocessing": mf.preprocessing_json(job.entry.preprocessing),
        "output": {"name": logits.name, "num_classes": classes,
                   "class_names": _class_names(job.memory is not None, classes),
                   "layout": "NHWC", "activation": "none"},
        "memory": mf.memory_json(job.memory),
        **({"schedule": mf.schedule_json(job.schedule)} if job.schedule else {}),
        "verification": (job.verification.to_json() if job.verification
                         else job.inherited_verification),
        "tool_versions": mf.tool_versions(),
        "parameter_map": job.parameter_map,
        **({"quantization": job.quantization["section"]} if job.quantization else {}),
    }


_CITYSCAPES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
               "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
               "bus", "train", "motorcycle", "bicycle")


def _class_names(video_object_segmentation: bool, classes: int) -> list[str]:
    """Names an app can show: objects for VOS, Cityscapes for the 19-class AMS student."""
    if video_object_segmentation:
        return ["background"] + [f"object {k}" for k in range(1, classes)]
    if classes == len(_CITYSCAPES):
        return list(_CITYSCAPES)
    return [f"class {k}" for k in range(classes)]


def _publish(job: _Job, out_dir: Path) -> Path:
    """Write the manifest, then rename artifacts into place, manifest last."""
    staged_manifest = mf.manifest_path_for(job.stage, job.stem)
    mf.write(_manifest(job), staged_manifest)
    for artifact in job.artifacts:
        (job.stage / artifact["file"]).replace(out_dir / artifact["file"])
    final = mf.manifest_path_for(out_dir, job.stem)
    staged_manifest.replace(final)
    return final


def _result(job: _Job, manifest_path: Path) -> ExportResult:
    artifacts = [ArtifactSummary(a["format"], a["file"], a["size_bytes"], a["sha256"],
                                 a.get("transpose_ops")) for a in job.artifacts]
    return ExportResult(
        model=job.entry.name, resolution=job.resolution,
        num_params=sum(p.numel() for p in job.model.parameters()),
        manifest_path=manifest_path, artifacts=artifacts,
        verification=job.verification.to_json() if job.verification else None,
        parameter_map_status=job.parameter_map["status"], timings_s=job.timings_s,
        quantization=job.quantization["section"] if job.quantization else None)
