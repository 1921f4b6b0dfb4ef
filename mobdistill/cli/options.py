"""CLI options shared by several commands: the model options (info, export), the device options
(every command with --device) and the engine options (profile, sweep).

Flag style: the engine's flags keep TFLite benchmark_model's names (`--num_threads`,
`--warmup_runs`, `--num_runs`, `--use_xnnpack`, `--use_gpu`, `--use_nnapi`, `--run_delay`);
every other flag is lower-case with dashes (`--queue-length`, `--adb-key`, `--auth-timeout`).

Each model option maps to one config field through `dataclasses.replace`:
--no-aspp -> aspp=False, --queue-length -> queue_length, --num-classes -> num_classes,
--num-objects -> num_objects, --width-multiplier -> width_multiplier, --units -> units.
An option left out keeps the paper (or, with --tiny, the tiny) value.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mobdistill.errors import UsageError
from mobdistill.models import registry
from mobdistill.models.spec import ModelEntry

if TYPE_CHECKING:  # the runtime imports adb-shell: only when a command runs
    from mobdistill.runtime.adb_device import AdbOptions
    from mobdistill.runtime.device import Device
    from mobdistill.runtime.engine import EngineOptions

# argparse dest -> (flag, config field)
MODEL_OPTIONS: dict[str, tuple[str, str]] = {
    "aspp": ("--no-aspp", "aspp"),
    "queue_length": ("--queue-length", "queue_length"),
    "num_classes": ("--num-classes", "num_classes"),
    "num_objects": ("--num-objects", "num_objects"),
    "width_multiplier": ("--width-multiplier", "width_multiplier"),
    "units": ("--units", "units"),
    "keyframe_period": ("--keyframe-period", "keyframe_period"),
}


@dataclass(frozen=True)
class ModelSelection:
    """A registry entry, its configuration and the (H, W) frame resolution."""

    entry: ModelEntry
    config: Any
    resolution: tuple[int, int]


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """Adds --model, --resolution, --tiny and the config override options to `parser`."""
    parser.add_argument("--model", required=True,
                        help=f"one of: {', '.join(registry.names())}; or your own student as "
                             "FILE.py:FUNCTION with --config (docs/models.md)")
    parser.add_argument("--config", type=Path, default=None,
                        help="custom model: JSON spec (name, resolution, ...; docs/models.md)")
    parser.add_argument("--resolution", help="HEIGHTxWIDTH (default: the model's own)")
    parser.add_argument("--tiny", action="store_true", help="tiny widths (tests, smoke runs)")
    parser.add_argument("--no-aspp", dest="aspp", action="store_const", const=False,
                        help="mobilevos: no ASPP before the decoder")
    parser.add_argument("--queue-length", type=int, help="mobilevos: memory length Q")
    parser.add_argument("--num-objects", type=int, help="mobilevos: objects N")
    parser.add_argument("--num-classes", type=int, help="jitnet/deeplab: output classes")
    parser.add_argument("--width-multiplier", type=float, help="jitnet: width multiplier m")
    parser.add_argument("--units", type=int, help="jitnet: residual units per block u")
    parser.add_argument("--keyframe-period", type=int,
                        help="deeplab-delta: T, the original network runs every T-th frame")


def _overrides(args: argparse.Namespace, entry: ModelEntry, fields: set[str]) -> dict[str, Any]:
    out = {}
    for dest, (flag, field_name) in MODEL_OPTIONS.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        if field_name not in fields:
            raise UsageError(f"{flag} does not apply to {entry.name}")
        out[field_name] = value
    return out


def select_model(
    args: argparse.Namespace, *, require_divisible: bool = False
) -> ModelSelection:
    """Turns parsed model options into a `ModelSelection`.

    Args:
        args: Namespace from a parser set up by `add_model_options`.
        require_divisible: Also require H and W divisible by the model's stride (export).

    Raises:
        UsageError: Unknown model, bad resolution or an option the model does not have.
    """
    if registry.is_custom_reference(args.model):
        return _select_custom(args, require_divisible)
    if args.config is not None:
        raise UsageError("--config applies to a custom model (--model FILE.py:FUNCTION)")
    entry = registry.get(args.model)
    base = entry.tiny_config() if args.tiny else entry.paper_config()
    fields = set(base.__dataclass_fields__)
    config = registry.configure(entry, tiny=args.tiny, **_overrides(args, entry, fields))
    if args.resolution:
        resolution = registry.parse_resolution(args.resolution)
    else:
        resolution = entry.tiny_resolution if args.tiny else entry.default_resolution
    registry.check_resolution(entry, *resolution, require_divisible=require_divisible)
    return ModelSelection(entry, config, resolution)


def _select_custom(args: argparse.Namespace, require_divisible: bool) -> ModelSelection:
    """A student of the user's own: options come from its --config spec, not from flags."""
    given = [flag for dest, (flag, _) in MODEL_OPTIONS.items() if getattr(args, dest, None)
             is not None] + (["--tiny"] if args.tiny else [])
    if given:
        raise UsageError(f"{', '.join(given)} do not apply to a custom model: put its settings "
                         "in --config")
    entry = registry.load_custom(args.model, args.config)
    resolution = (registry.parse_resolution(args.resolution) if args.resolution
                  else entry.default_resolution)
    registry.check_resolution(entry, *resolution, require_divisible=require_divisible)
    return ModelSelection(entry, entry.paper_config(), resolution)


# ------------------------------------------------------------------------------ devices
def add_device_options(parser: argparse.ArgumentParser, *, device: bool = True) -> None:
    """--device (unless the command adds its own), --adb-key and --auth-timeout."""
    from mobdistill.runtime.adb_device import AdbOptions

    if device:
        parser.add_argument("--device", default="host",
                            help="host (default), a USB serial, HOST:PORT, or adb/auto")
    parser.add_argument("--adb-key", type=Path, default=None,
                        help="ADB private key (default ~/.android/adbkey, created if missing)")
    parser.add_argument("--auth-timeout", type=float, default=AdbOptions().auth_timeout_s,
                        help="seconds to wait for 'Allow USB debugging?' on the phone")


def adb_options(args: argparse.Namespace) -> AdbOptions:
    from mobdistill.runtime.adb_device import AdbOptions

    return AdbOptions(adbkey=args.adb_key, auth_timeout_s=args.auth_timeout)


def open_device(args: argparse.Namespace) -> Device:
    """The device named by --device, connected; close it (it is a context manager)."""
    from mobdistill.runtime.devices import open_device as open_spec

    return open_spec(args.device, options=adb_options(args))


# ------------------------------------------------------------------------------ engine
def _boolean(text: str) -> bool:
    if text.lower() in ("true", "1"):
        return True
    if text.lower() in ("false", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


# benchmark_model's delegate flags; the engine reports which delegate actually ran.
DELEGATE_FLAGS = {
    "use_xnnpack": "XNNPACK delegate (default)",
    "use_gpu": "GPU delegate (phones; needs the LiteRT GPU delegate library)",
    "use_nnapi": "NNAPI (Android only)",
}


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    """The engine's run options; defaults come from EngineOptions (shown in --help)."""
    from mobdistill.runtime.engine import EngineOptions

    defaults = {f.name: f.default for f in fields(EngineOptions)}
    parser.add_argument("--num_threads", type=int, default=defaults["num_threads"],
                        help="CPU threads, -1: the runtime decides (default %(default)s)")
    parser.add_argument("--warmup_runs", type=int, default=defaults["warmup_runs"],
                        help="warmup runs (default %(default)s)")
    parser.add_argument("--num_runs", type=int, default=defaults["num_runs"],
                        help="measured runs (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=defaults["timeout_s"],
                        help="seconds before the engine is killed (default %(default)s)")
    for flag, help_text in DELEGATE_FLAGS.items():
        parser.add_argument(f"--{flag}", type=_boolean, nargs="?", const=True, default=None,
                            metavar="true|false", help=help_text)
    parser.add_argument("--keyframe_interval", type=int, default=None, metavar="T",
                        help="delta-distilled models: the keyframe signature every T-th frame, "
                             "delta frames between (default: the manifest's schedule.period)")
    parser.add_argument("--engine", type=Path, default=None,
                        help="a mobdistill-engine build (default: $MOBDISTILL_ENGINE, else "
                             "build/engine of this source checkout, built on demand)")


def engine_options(args: argparse.Namespace) -> EngineOptions:
    from mobdistill.runtime.engine import Delegate, EngineOptions

    if args.use_gpu and args.use_nnapi:
        raise UsageError("--use_gpu and --use_nnapi exclude each other: the engine applies one "
                         "delegate")
    delegate = (Delegate.GPU if args.use_gpu else Delegate.NNAPI if args.use_nnapi
                else Delegate.CPU if args.use_xnnpack is False else Delegate.XNNPACK)
    return EngineOptions(num_threads=args.num_threads, warmup_runs=args.warmup_runs,
                         num_runs=args.num_runs, delegate=delegate, timeout_s=args.timeout,
                         keyframe_interval=args.keyframe_interval, engine_binary=args.engine)
