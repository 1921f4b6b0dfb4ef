"""`mobdistill sweep`: latency against memory queue length (export + profile per Q)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mobdistill.cli.options import engine_options, open_device
from mobdistill.cli.profile_cmd import add_shared_options, resolution


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="mobilevos", help="a stateful model (mobilevos)")
    parser.add_argument("--queue-lengths", default="1-20", help="list/ranges, e.g. 1,2,4-8")
    parser.add_argument("--out", type=Path, default=Path("out/sweep"), help="output folder")
    parser.add_argument("--rounds", type=int, default=1,
                        help="interleaved passes over all Q, runs pooled (default 1)")
    add_shared_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mobdistill.runtime.app_runner import Runner, StartMode, default_apk
    from mobdistill.runtime.sweep import parse_int_list, sweep

    options, queue_lengths = engine_options(args), parse_int_list(args.queue_lengths)
    runner = Runner(args.runner)
    with open_device(args) as device:
        result = sweep(model=args.model, queue_lengths=queue_lengths, device=device,
                       out_dir=args.out, options=options, rounds=args.rounds, video=args.video,
                       resolution=resolution(args), tiny=args.tiny, runner=runner,
                       apk=default_apk(args.apk) if runner is Runner.APP else None,
                       start=StartMode(args.app_start))
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(f"runner: {result.runner}")
        print(f"{'Q':>3}  {'p10 ms':>8}  {'p50 ms':>8}  {'p90 ms':>8}  delegate")
        for p in result.points:
            print(f"{p.queue_length:>3}  {p.p10_ms:8.3f}  {p.p50_ms:8.3f}  {p.p90_ms:8.3f}  "
                  f"{p.delegate_used}")
    return 0
