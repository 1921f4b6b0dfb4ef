"""`mobdistill info`: parameters and FLOPs of a student, checked against the papers' figures.

Exit code 1 when an applicable reference figure is out of tolerance.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from mobdistill.cli.options import add_model_options, select_model
from mobdistill.models.complexity import ModelInfo, ReferenceCheck, describe


def add_parser(parser: argparse.ArgumentParser) -> None:
    add_model_options(parser)
    parser.add_argument("--json", action="store_true", help="print a JSON object to stdout")
    parser.set_defaults(func=run)


def _format_check(check: ReferenceCheck) -> str:
    h, w = check.resolution
    text = (
        f"  {check.label} @ {h}x{w}: params {check.params:,} vs {check.params_target:,}"
        f" ±{check.params_rel_tol:.1%}"
    )
    if check.flops is not None and check.flops_target is not None:
        text += f"; GFLOPs {check.flops / 1e9:.2f} vs {check.flops_target / 1e9:.2f}"
        text += f" ±{check.flops_rel_tol:.0%}"
    if check.flops is not None and check.macs_target is not None:
        text += f"; GMACs {check.flops / 2e9:.3f} vs {check.macs_target / 1e9:.2f}"
        text += f" ±{check.macs_rel_tol:.0%}"
    return text + ("  PASS" if check.passed else "  FAIL")


def format_info(info: ModelInfo) -> str:
    """Human-readable rendering of a `ModelInfo`."""
    h, w = info.resolution
    lines = [
        f"model {info.model} at {h}x{w}  config {info.config}",
        f"params: {info.params_total:,} total, {info.params_trainable:,} trainable",
    ]
    for name, flops in info.flops.items():
        lines.append(f"{name}: {flops / 1e9:.2f} GFLOPs ({info.gmacs[name]:.3f} GMACs)")
    if info.schedule:
        s = {k: v / 1e9 if k.endswith("flops") else v for k, v in info.schedule.items()}
        lines.append(f"keyframe schedule T={s['period']:.0f}: average {s['average_flops']:.2f} "
                     f"GFLOPs per frame (keyframe {s['keyframe_flops']:.2f}, delta "
                     f"{s['delta_flops']:.2f}), {s['reduction']:.2f}x fewer than keyframes only")
    if info.references:
        lines.append("references:")
        lines += [_format_check(check) for check in info.references]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    selection = select_model(args)
    info = describe(selection.entry, selection.config, selection.resolution)
    if args.json:
        print(json.dumps(asdict(info), indent=2))
    else:
        print(format_info(info))
    return 0 if info.passed else 1
