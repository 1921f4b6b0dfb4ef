"""`mobdistill profile`: run a student through the on-device engine and report its latency."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from mobdistill.cli.options import (
    add_device_options,
    add_engine_options,
    engine_options,
    open_device,
)

DEFAULT_OUT = Path("out/profile")


def add_shared_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by profile and sweep."""
    add_device_options(parser)
    add_engine_options(parser)
    parser.add_argument("--video", help="video file or built-in clip (default bikes.mp4)")
    parser.add_argument("--resolution", help="HEIGHTxWIDTH to export at")
    parser.add_argument("--tiny", action="store_true", help="export the tiny configuration")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--runner", choices=("engine", "app"), default="engine",
                        help="engine: the mobdistill-engine binary (default); app: inside the "
                             "harness app (installed/updated from --apk, needs a debug build)")
    parser.add_argument("--apk", type=Path, default=None,
                        help="harness APK for --runner app (default: the Gradle debug build, "
                             "android/harness/build/outputs/apk/debug/harness-debug.apk, if "
                             "built); installed when missing or different")
    parser.add_argument("--app-start", choices=("instrument", "activity"), default="instrument",
                        help="--runner app: `am instrument -w` (default) or `am start -W` and "
                             "polling for the summary")


def add_parser(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="registry name: exported on demand")
    which.add_argument("--artifact", type=Path,
                       help="an exported *.manifest.json, or the .tflite exported beside one")
    parser.add_argument("--queue-length", type=int, help="mobilevos: memory length Q")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--enable_op_profiling", action="store_true",
                        help="after the measured runs, time every operator (per delegated "
                             "partition under XNNPACK, and on the built-in kernels): a sorted "
                             "table on stderr and `op_profile` in profile.json")
    add_shared_options(parser)
    parser.set_defaults(func=run)


def resolution(args: argparse.Namespace) -> tuple[int, int] | None:
    from mobdistill.models.registry import parse_resolution

    return parse_resolution(args.resolution) if args.resolution else None


def run(args: argparse.Namespace) -> int:
    from mobdistill.runtime.profile import profile

    options = replace(engine_options(args), enable_op_profiling=args.enable_op_profiling)
    with open_device(args) as device:
        common: dict[str, Any] = dict(model=args.model, artifact=args.artifact, device=device,
                      out_dir=args.out, options=options, video=args.video,
                      resolution=resolution(args), queue_length=args.queue_length,
                      tiny=args.tiny)
        if args.runner == "app":
            from mobdistill.runtime.app_runner import AppTarget, StartMode, default_apk

            common["device"] = AppTarget(device, default_apk(args.apk), StartMode(args.app_start))
        report = profile(**common)
    if report.result.op_profile is not None:
        from mobdistill.runtime.profile import format_op_table

        entry = next(m for r in report.to_json()["results"].values() for rt in r.values()
                     for m in rt.values())
        print(format_op_table(entry["op_profile"]), file=sys.stderr)
    print(json.dumps(report.to_json(), indent=2) if args.json else report.table)
    return 0
