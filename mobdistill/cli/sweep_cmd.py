"""`mobdistill sweep`: latency against memory queue length (export + profile per Q)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mobdistill.cli.profile_cmd import add_engine_options, delegate_flags, resolution


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="mobilevos", help="a stateful model (mobilevos)")
    parser.add_argument("--queue-lengths", default="1-20", help="list/ranges, e.g. 1,2,4-8")
    parser.add_argument("--out", type=Path, default=Path("out/sweep"), help="output folder")
    parser.add_argument("--rounds", type=int, default=1,
                        help="interleaved passes over all Q, runs pooled (default 1)")
    add_engine_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mobdistill.runtime.devices import open_device
    from mobdistill.runtime.sweep import parse_int_list, sweep

    result = sweep(model=args.model, queue_lengths=parse_int_list(args.queue_lengths),
                   device=open_device(args.device), out_dir=args.out,
                   num_threads=args.num_threads, warmup_runs=args.warmup_runs,
                   num_runs=args.num_runs, rounds=args.rounds, video=args.video,
                   resolution=resolution(args),
                   tiny=args.tiny, timeout_s=args.timeout, delegate_flags=delegate_flags(args))
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(f"{'Q':>3}  {'p10 ms':>8}  {'p50 ms':>8}  {'p90 ms':>8}  delegate")
        for p in result.points:
            print(f"{p.queue_length:>3}  {p.p10_ms:8.3f}  {p.p50_ms:8.3f}  {p.p90_ms:8.3f}  "
                  f"{p.delegate_used}")
    return 0
