"""MobileVOS latency vs memory queue length (the MobileVOS paper's Fig. 4) with the engine.

Exports MobileVOS at its default 480x864 for each Q (TFLite, verified on real frames), runs the
engine's `step` on real bikes.mp4 frames, and commits JSON/CSV/PNG under benchmarks/results/.
Artifacts stay in --work (outside the repository).

    .venv/bin/python benchmarks/queue_sweep.py [--queue-lengths 1-20] [--num_threads 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from provenance import provenance

from mobdistill.runtime.engine import EngineOptions
from mobdistill.runtime.sweep import parse_int_list, sweep

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queue-lengths", default="1-20")
    parser.add_argument("--num_threads", type=int, default=2)
    parser.add_argument("--num_runs", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/mobdistill-bench/sweep"))
    args = parser.parse_args()
    options = EngineOptions(num_threads=args.num_threads, warmup_runs=2, num_runs=args.num_runs)
    result = sweep(model="mobilevos", queue_lengths=parse_int_list(args.queue_lengths),
                   out_dir=args.work, options=options, rounds=args.rounds)
    RESULTS.mkdir(exist_ok=True)
    for source in (result.csv_path, result.png_path):
        shutil.copyfile(source, RESULTS / f"mobilevos_queue_sweep{Path(source).suffix}")
    settings = {"queue_lengths": args.queue_lengths, "num_threads": args.num_threads,
                "warmup_runs": 2, "num_runs": args.num_runs, "rounds": args.rounds,
                "video": "bikes.mp4"}
    (RESULTS / "mobilevos_queue_sweep.json").write_text(
        json.dumps({**provenance(settings), **result.to_json()}, indent=2) + "\n")
    for point in result.points:
        print(f"Q={point.queue_length:2d}  p50 {point.p50_ms:7.2f} ms  "
              f"p10-p90 {point.p10_ms:.2f}-{point.p90_ms:.2f}")


if __name__ == "__main__":
    main()
