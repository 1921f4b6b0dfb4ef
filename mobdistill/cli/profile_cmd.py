"""`mobdistill profile`: run a student through the on-device engine and report its latency."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DEFAULT_OUT = Path("out/profile")


# benchmark_model's delegate flags; the engine reports which delegate actually ran.
DELEGATE_FLAGS = {
    "use_xnnpack": "XNNPACK delegate (engine default: true)",
    "use_gpu": "GPU delegate (phones; needs the LiteRT GPU delegate library)",
    "use_nnapi": "NNAPI (Android only)",
}


def _boolean(text: str) -> bool:
    if text.lower() in ("true", "1"):
        return True
    if text.lower() in ("false", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def delegate_flags(args: argparse.Namespace) -> tuple[str, ...]:
    """The engine flags for the delegate options the user set."""
    return tuple(f"--{flag}={str(value).lower()}" for flag in DELEGATE_FLAGS
                 if (value := getattr(args, flag)) is not None)


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by profile and sweep (defaults are the engine's own)."""
    parser.add_argument("--device", default="host", help="host (default), a serial, or 'auto'")
    parser.add_argument("--num_threads", type=int, default=1, help="CPU threads (default 1)")
    parser.add_argument("--warmup_runs", type=int, default=1, help="warmup runs (default 1)")
    parser.add_argument("--num_runs", type=int, default=50, help="measured runs (default 50)")
    parser.add_argument("--video", help="video file or built-in clip (default bikes.mp4)")
    parser.add_argument("--resolution", help="HEIGHTxWIDTH to export at")
    parser.add_argument("--tiny", action="store_true", help="export the tiny configuration")
    parser.add_argument("--timeout", type=float, default=600.0, help="engine timeout, seconds")
    for flag, help_text in DELEGATE_FLAGS.items():
        parser.add_argument(f"--{flag}", type=_boolean, nargs="?", const=True, default=None,
                            metavar="true|false", help=help_text)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def add_parser(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="registry name: exported on demand")
    which.add_argument("--artifact", type=Path, help="an exported *.manifest.json")
    parser.add_argument("--queue-length", type=int, help="mobilevos: memory length Q")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    add_engine_options(parser)
    parser.set_defaults(func=run)


def resolution(args: argparse.Namespace) -> tuple[int, int] | None:
    from mobdistill.models.registry import parse_resolution

    return parse_resolution(args.resolution) if args.resolution else None


def run(args: argparse.Namespace) -> int:
    from mobdistill.runtime.devices import open_device
    from mobdistill.runtime.profile import profile

    report = profile(model=args.model, artifact=args.artifact, device=open_device(args.device),
                     out_dir=args.out, num_threads=args.num_threads,
                     warmup_runs=args.warmup_runs, num_runs=args.num_runs, video=args.video,
                     resolution=resolution(args), queue_length=args.queue_length,
                     tiny=args.tiny, timeout_s=args.timeout, delegate_flags=delegate_flags(args))
    print(json.dumps(report.to_json(), indent=2) if args.json else report.table)
    return 0
