"""CLI options shared by commands that take a model (info, export).

Each model option maps to one config field through `dataclasses.replace`:
--no-aspp -> aspp=False, --queue-length -> queue_length, --num-classes -> num_classes,
--num-objects -> num_objects, --width-multiplier -> width_multiplier, --units -> units.
An option left out keeps the paper (or, with --tiny, the tiny) value.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from mobdistill.errors import UsageError
from mobdistill.models import registry
from mobdistill.models.spec import ModelEntry

# argparse dest -> (flag, config field)
MODEL_OPTIONS: dict[str, tuple[str, str]] = {
    "aspp": ("--no-aspp", "aspp"),
    "queue_length": ("--queue-length", "queue_length"),
    "num_classes": ("--num-classes", "num_classes"),
    "num_objects": ("--num-objects", "num_objects"),
    "width_multiplier": ("--width-multiplier", "width_multiplier"),
    "units": ("--units", "units"),
}


@dataclass(frozen=True)
class ModelSelection:
    """A registry entry, its configuration and the (H, W) frame resolution."""

    entry: ModelEntry
    config: Any
    resolution: tuple[int, int]


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """Adds --model, --resolution, --tiny and the config override options to `parser`."""
    parser.add_argument("--model", required=True, help=f"one of: {', '.join(registry.names())}")
    parser.add_argument("--resolution", help="HEIGHTxWIDTH (default: the model's own)")
    parser.add_argument("--tiny", action="store_true", help="tiny widths (tests, smoke runs)")
    parser.add_argument("--no-aspp", dest="aspp", action="store_const", const=False,
                        help="mobilevos: no ASPP before the decoder")
    parser.add_argument("--queue-length", type=int, help="mobilevos: memory length Q")
    parser.add_argument("--num-objects", type=int, help="mobilevos: objects N")
    parser.add_argument("--num-classes", type=int, help="jitnet/deeplab: output classes")
    parser.add_argument("--width-multiplier", type=float, help="jitnet: width multiplier m")
    parser.add_argument("--units", type=int, help="jitnet: residual units per block u")


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
