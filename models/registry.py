"""The model registry: name -> `ModelEntry` (build, signatures, memory, references).

Signature shapes are deployment shapes (see models/spec.py): frames, masks and logits are NHWC,
memory tensors "raw". `torch_shape()` maps a spec to the shape the PyTorch method takes.
Preprocessing is read as x_norm = (x / 255 - mean) / std, done inside the graph.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from mobdistill.errors import UsageError

from . import deeplabv3_mnv2, delta_distill, jitnet, mobilevos
from .blocks import IMAGENET_MEAN, IMAGENET_STD
from .spec import (
    KeyframeScheduleSpec,
    MemoryQueueSpec,
    ModelEntry,
    Preprocessing,
    Reference,
    SignatureSpec,
    TensorSpec,
)

# Config fields that change neither parameters nor per-frame architecture; ignored when deciding
# whether a reference figure applies to a configuration.
RUNTIME_FIELDS = frozenset({"queue_length"})


def feature_size(size: int, stride: int) -> int:
    """Spatial size after `log2(stride)` 3x3 stride-2 convs with padding 1 (ceil halving)."""
    while stride > 1:
        size, stride = (size + 1) // 2, stride // 2
    return size


def _image(name: str, height: int, width: int, channels: int, role: Any) -> TensorSpec:
    return TensorSpec(name, (1, height, width, channels), "NHWC", role)


def _stateless_signatures(num_classes: int, height: int, width: int) -> tuple[SignatureSpec, ...]:
    return (
        SignatureSpec(
            name="serving_default",
            method="forward",
            inputs=(_image("frame", height, width, 3, "frame"),),
            outputs=(_image("logits", height, width, num_classes, "logits"),),
        ),
    )


def _mobilevos_signatures(
    config: mobilevos.Config, height: int, width: int
) -> tuple[SignatureSpec, ...]:
    h, w = feature_size(height, 16), feature_size(width, 16)
    q, n = config.queue_length, config.num_objects
    frame = _image("frame", height, width, 3, "frame")
    key = TensorSpec("key", (1, h, w, config.key_dim), "raw", "state")
    value = TensorSpec("value", (1, n, h, w, config.value_dim), "raw", "state")
    init = SignatureSpec(
        "init", "init", (frame, _image("mask", height, width, n, "mask")), (key, value)
    )
    memory = (
        TensorSpec("memory_keys", (q, h, w, config.key_dim), "raw", "memory"),
        TensorSpec("memory_values", (q, n, h, w, config.value_dim), "raw", "memory"),
    )
    logits = _image("logits", height, width, n + 1, "logits")
    step = SignatureSpec("step", "step", (frame, *memory), (logits, key, value))
    return (init, step)


def _delta_signatures(
    config: delta_distill.Config, height: int, width: int
) -> tuple[SignatureSpec, ...]:
    shapes = delta_distill.state_shapes(config, height, width)
    frame = _image("frame", height, width, 3, "frame")
    logits = _image("logits", height, width, config.num_classes, "logits")
    state = tuple(_image(name, h, w, c, "state") for name, (h, w, c) in shapes.items())
    previous = tuple(_image(name + delta_distill.PREVIOUS, h, w, c, "state")
                     for name, (h, w, c) in shapes.items())
    keyframe = SignatureSpec("keyframe", "keyframe", (frame,), (logits, *state))
    delta = SignatureSpec("delta", "delta", (frame, *previous), (logits, *state))
    return (keyframe, delta)


def _delta_schedule(config: delta_distill.Config) -> KeyframeScheduleSpec:
    return KeyframeScheduleSpec(
        period=config.keyframe_period,
        carry=tuple((name, name + delta_distill.PREVIOUS)
                    for name in delta_distill.state_names(config)))


_JITNET = ModelEntry(
    name="jitnet",
    summary="JITNet online-distillation student (Mullapudi et al.), logits at full resolution",
    config_type=jitnet.Config,
    paper_config=jitnet.paper_config,
    tiny_config=jitnet.tiny_config,
    build=jitnet.build,
    signatures=lambda c, h, w: _stateless_signatures(c.num_classes, h, w),
    default_resolution=(720, 1280),
    tiny_resolution=(64, 128),
    # The paper's 720p is not a multiple of 32: the decoder resizes to each skip's own size, so
    # the stride-32 map is ceil(H/32) as in the paper's TensorFlow code. Exports need only the
    # levels up to stride 16 to tile exactly.
    stride=16,
    preprocessing=Preprocessing(mean=IMAGENET_MEAN, std=IMAGENET_STD),
    references=(
        Reference("JITNet m=0.5 u=1, 23 classes", {}, (720, 1280), 750_000, 0.03, 15.2e9),
        Reference(
            "JITNet m=1 u=1, 23 classes", {"width_multiplier": 1.0}, (720, 1280),
            2_980_000, 0.03, 47.9e9,
        ),
        Reference(
            "JITNet m=1 u=2, 81 classes",
            {"width_multiplier": 1.0, "units": 2, "num_classes": 81},
            (720, 1280), 5_750_000, 0.03, 92.0e9,
        ),
    ),
)

_DEEPLAB = ModelEntry(
    name="deeplab",
    summary="DeepLabV3-MobileNetV2 (output stride 16, 2-branch ASPP), the AMS student",
    config_type=deeplabv3_mnv2.Config,
    paper_config=deeplabv3_mnv2.paper_config,
    tiny_config=deeplabv3_mnv2.tiny_config,
    build=deeplabv3_mnv2.build,
    signatures=lambda c, h, w: _stateless_signatures(c.num_classes, h, w),
    default_resolution=(256, 512),
    tiny_resolution=(64, 128),
    stride=16,
    preprocessing=Preprocessing(mean=deeplabv3_mnv2.TF_MEAN, std=deeplabv3_mnv2.TF_STD),
    references=(
        Reference(
            "AMS DeepLabV3-MNV2, 19 classes", {}, (257, 513), 2_113_043, 0.005,
            macs=1.40e9, macs_rel_tol=0.06,
        ),
    ),
)

_MOBILEVOS = ModelEntry(
    name="mobilevos",
    summary="MobileVOS student: STCN with MobileNetV2 encoders, memory queue, init/step graphs",
    config_type=mobilevos.Config,
    paper_config=mobilevos.paper_config,
    tiny_config=mobilevos.tiny_config,
    build=mobilevos.build,
    signatures=_mobilevos_signatures,
    default_resolution=(480, 864),
    tiny_resolution=(64, 64),
    stride=16,
    preprocessing=Preprocessing(mean=IMAGENET_MEAN, std=IMAGENET_STD),
    memory=lambda c: MemoryQueueSpec(queue_length=c.queue_length),
    references=(
        Reference(
            "MobileVOS MNV2 with ASPP (Table 4)", {"aspp": True}, (480, 864), 2_500_000, 0.10
        ),
        Reference(
            "MobileVOS MNV2 without ASPP (Table 4)", {"aspp": False}, (480, 864), 1_900_000, 0.10
        ),
    ),
)

_DEEPLAB_DELTA = ModelEntry(
    name="deeplab-delta",
    summary="DeepLabV3-MobileNetV2 with delta-distilled units (Delta Distillation), "
            "keyframe/delta graphs",
    config_type=delta_distill.Config,
    paper_config=delta_distill.paper_config,
    tiny_config=delta_distill.tiny_config,
    build=delta_distill.build,
    signatures=_delta_signatures,
    default_resolution=(256, 512),
    tiny_resolution=(64, 128),
    stride=16,
    preprocessing=Preprocessing(mean=deeplabv3_mnv2.TF_MEAN, std=deeplabv3_mnv2.TF_STD),
    schedule=_delta_schedule,
)

_ENTRIES = {entry.name: entry for entry in (_DEEPLAB, _DEEPLAB_DELTA, _JITNET, _MOBILEVOS)}


def names() -> tuple[str, ...]:
    """Registered model names, sorted."""
    return tuple(sorted(_ENTRIES))


def get(name: str) -> ModelEntry:
    """Returns the entry of `name`.

    Raises:
        UsageError: `name` is not registered (the message lists valid names).
    """
    try:
        return _ENTRIES[name]
    except KeyError:
        raise UsageError(f"unknown model {name!r}; choose one of: {', '.join(names())}") from None


def configure(entry: ModelEntry, *, tiny: bool = False, **overrides: Any) -> Any:
    """The paper (or tiny) config of `entry` with `overrides` applied via `dataclasses.replace`.

    Raises:
        UsageError: An override names no config field or has an invalid value.
    """
    base = entry.tiny_config() if tiny else entry.paper_config()
    if isinstance(base, dict):  # a custom model's config: the keyword arguments of its build
        return {**base, **overrides}
    valid = {f.name for f in dataclasses.fields(base)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise UsageError(
            f"{entry.name} has no option {', '.join(unknown)}; "
            f"its options: {', '.join(sorted(valid))}"
        )
    try:
        return dataclasses.replace(base, **overrides)
    except (ValueError, TypeError) as err:
        raise UsageError(f"invalid {entry.name} option: {err}") from None


def reference_config(entry: ModelEntry, reference: Reference) -> Any:
    """The configuration a reference figure was measured with."""
    return dataclasses.replace(entry.paper_config(), **reference.config_overrides)


def reference_applies(entry: ModelEntry, reference: Reference, config: Any) -> bool:
    """True when `config` equals the reference's configuration (runtime-only fields ignored)."""
    ref = reference_config(entry, reference)
    return all(
        getattr(ref, f.name) == getattr(config, f.name)
        for f in dataclasses.fields(ref)
        if f.name not in RUNTIME_FIELDS
    )


def parse_resolution(text: str) -> tuple[int, int]:
    """Parses "HxW" (e.g. "480x864") into (H, W).

    Raises:
        UsageError: The text is not two positive integers separated by 'x'.
    """
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if match is None or 0 in (int(match[1]), int(match[2])):
        raise UsageError(
            f"bad resolution {text!r}: write HEIGHTxWIDTH with positive integers, e.g. 480x864"
        )
    return int(match[1]), int(match[2])


def check_resolution(
    entry: ModelEntry, height: int, width: int, *, require_divisible: bool = True
) -> None:
    """Checks that (H, W) suits `entry`: at least its stride, and (export) divisible by it.

    Raises:
        UsageError: The resolution is too small or not a multiple of the model's stride.
    """
    stride = entry.stride
    if height < stride or width < stride:
        raise UsageError(f"{entry.name} needs a resolution of at least {stride}x{stride}")
    if require_divisible and (height % stride or width % stride):
        raise UsageError(
            f"{entry.name} exports need height and width divisible by {stride}; "
            f"got {height}x{width}, try {height // stride * stride}x{width // stride * stride}"
        )


def torch_shape(spec: TensorSpec) -> tuple[int, ...]:
    """The PyTorch (NCHW) shape of a deployment tensor spec."""
    if spec.layout == "NHWC":
        n, h, w, c = spec.shape
        return (n, c, h, w)
    return spec.shape


def sample_inputs(
    signature: SignatureSpec, *, device: torch.device | None = None, seed: int = 0
) -> dict[str, Tensor]:
    """Random PyTorch inputs for `signature`'s method, keyed by input name.

    Frames are uniform in [0, 255], masks in [0, 1], memory standard normal. On the meta device
    the tensors are empty (shape only, for FLOP counting).
    """
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for spec in signature.inputs:
        shape = torch_shape(spec)
        if device is not None and device.type == "meta":
            out[spec.name] = torch.empty(shape, device=device)
            continue
        if spec.role == "frame":
            x = torch.rand(shape, generator=generator) * 255
        elif spec.role == "mask":
            x = torch.rand(shape, generator=generator)
        else:
            x = torch.randn(shape, generator=generator)
        out[spec.name] = x if device is None else x.to(device)
    return out


# ------------------------------------------------------------------------------ custom models
CUSTOM_SPEC_KEYS = frozenset({"name", "resolution", "stride", "mean", "std", "config"})


def is_custom_reference(text: str) -> bool:
    """True for `path/to/file.py:function` (a custom model), false for a registry name."""
    path, _, function = text.rpartition(":")
    return path.endswith(".py") and function.isidentifier()


def custom_entry(
    model: nn.Module | Callable[..., nn.Module],
    *,
    name: str,
    resolution: tuple[int, int],
    stride: int = 1,
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0),
    std: tuple[float, float, float] = (1.0, 1.0, 1.0),
    config: dict[str, Any] | None = None,
) -> ModelEntry:
    """A `ModelEntry` for a student of your own: export, verification, manifest (parameter map
    included) and profiling treat it like a registered one (docs/models.md says what it must
    provide).

    `model` is the module itself or a `build(**config)` returning one. Its `forward(frame)`
    takes a float32 NCHW frame [1, 3, H, W] with values in 0..255 (normalise inside, as `mean`
    and `std` record in the manifest) and returns logits [1, K, H, W]; K is read from one
    forward pass here. `stride`: H and W must be multiples of it (your down-sampling).

    Raises:
        UsageError: the module does not take a `frame` of the resolution or its output is not
            [1, K, H, W] logits.
    """
    settings = dict(config or {})
    if isinstance(model, nn.Module):
        built = model
        if settings:
            raise UsageError("a ready nn.Module takes no config; pass a build function instead")
    else:
        built = _build_custom(model, settings, name)
    height, width = resolution
    num_classes = _custom_classes(built.eval(), name, height, width)

    def build(config: dict[str, Any]) -> nn.Module:
        return built if config == settings else _build_custom(model, config, name)

    return ModelEntry(
        name=name,
        summary=f"custom model {name}",
        config_type=dict,
        paper_config=lambda: dict(settings),
        tiny_config=lambda: dict(settings),
        build=build,
        signatures=lambda c, h, w: _stateless_signatures(num_classes, h, w),
        default_resolution=(height, width),
        tiny_resolution=(height, width),
        stride=stride,
        preprocessing=Preprocessing(mean=mean, std=std),
    )


def resolve(model: str | ModelEntry | nn.Module,
            resolution: tuple[int, int] | None = None) -> ModelEntry:
    """A registry name, a ready entry (e.g. `custom_entry`), or an nn.Module to export at
    `resolution` (named after its class) -> its entry.

    Raises:
        UsageError: unknown name, or a module without a resolution.
    """
    if isinstance(model, ModelEntry):
        return model
    if isinstance(model, nn.Module):
        if resolution is None:
            raise UsageError("exporting an nn.Module needs resolution=(HEIGHT, WIDTH)")
        return custom_entry(model, name=type(model).__name__.lower(), resolution=resolution)
    return get(model)


def load_custom(reference: str, spec_file: Path | None) -> ModelEntry:
    """The custom model `path/to/file.py:build` with its JSON spec (`--config`): name,
    resolution [H, W], and optionally stride, mean, std and config (build's keyword arguments).

    Raises:
        UsageError: the file, function or spec is missing or malformed.
    """
    path_text, _, function = reference.rpartition(":")
    path = Path(path_text)
    if not path.is_file():
        raise UsageError(f"custom model file {path} not found (--model FILE.py:FUNCTION)")
    if spec_file is None:
        raise UsageError("a custom model needs --config SPEC.json with at least "
                         '{"name": ..., "resolution": [H, W]}; see docs/models.md')
    spec = _read_spec(spec_file)
    module_name = f"mobdistill_custom_{path.stem}"
    loader = importlib.util.spec_from_file_location(module_name, path)
    if loader is None or loader.loader is None:
        raise UsageError(f"cannot import {path} as Python")
    module = importlib.util.module_from_spec(loader)
    sys.modules[module_name] = module  # dataclasses and pickling look modules up by name
    try:
        loader.loader.exec_module(module)
    except Exception as err:  # the user's file: any error it raises is a usage error here
        raise UsageError(f"importing {path} failed: {type(err).__name__}: {err}") from err
    build = getattr(module, function, None)
    if not callable(build):
        raise UsageError(f"{path} has no function {function!r} (--model {reference})")
    height, width = spec["resolution"]
    return custom_entry(build, name=spec["name"], resolution=(height, width),
                        stride=spec.get("stride", 1), mean=tuple(spec.get("mean", (0, 0, 0))),
                        std=tuple(spec.get("std", (1, 1, 1))), config=spec.get("config"))


def _read_spec(spec_file: Path) -> dict[str, Any]:
    try:
        spec = json.loads(Path(spec_file).read_text())
    except (OSError, ValueError) as err:
        raise UsageError(f"cannot read custom model spec {spec_file}: {err}") from err
    if not isinstance(spec, dict):
        raise UsageError(f"{spec_file}: the spec is a JSON object")
    unknown = sorted(set(spec) - CUSTOM_SPEC_KEYS)
    if unknown:
        raise UsageError(f"{spec_file}: unknown key(s) {', '.join(unknown)}; "
                         f"valid: {', '.join(sorted(CUSTOM_SPEC_KEYS))}")
    name, resolution = spec.get("name"), spec.get("resolution")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise UsageError(f"{spec_file}: 'name' must be a file-name-safe string")
    if (not isinstance(resolution, list) or len(resolution) != 2
            or not all(isinstance(v, int) and v > 0 for v in resolution)):
        raise UsageError(f"{spec_file}: 'resolution' must be [HEIGHT, WIDTH], positive integers")
    if not isinstance(spec.get("config", {}), dict):
        raise UsageError(f"{spec_file}: 'config' must be an object (build's keyword arguments)")
    for key in ("mean", "std"):
        if key in spec and (not isinstance(spec[key], list) or len(spec[key]) != 3):
            raise UsageError(f"{spec_file}: '{key}' must be three numbers (R, G, B)")
    return spec


def _build_custom(build: Callable[..., nn.Module], config: dict[str, Any], name: str) -> nn.Module:
    try:
        model = build(**config)
    except Exception as err:  # the user's code
        raise UsageError(f"building custom model {name} failed: {type(err).__name__}: {err}"
                         ) from err
    if not isinstance(model, nn.Module):
        raise UsageError(f"the build function of {name} returned {type(model).__name__}, "
                         "not a torch.nn.Module")
    return model


def _custom_classes(model: nn.Module, name: str, height: int, width: int) -> int:
    """K of the module's logits [1, K, H, W] for one frame, checked."""
    frame = torch.zeros(1, 3, height, width)
    try:
        with torch.no_grad():
            logits = model(frame=frame)
    except Exception as err:  # the user's code
        raise UsageError(f"custom model {name}: forward(frame=[1, 3, {height}, {width}]) failed: "
                         f"{type(err).__name__}: {err}") from err
    if not isinstance(logits, Tensor) or logits.dim() != 4 or logits.shape[0] != 1 \
            or tuple(logits.shape[2:]) != (height, width) or logits.shape[1] < 2:
        shape = list(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise UsageError(f"custom model {name}: forward must return logits [1, K>=2, {height}, "
                         f"{width}] (full resolution); got {shape}")
    return int(logits.shape[1])
