"""`mobdistill report RUN_DIR... -o report.html`: one self-contained HTML page (plots inline,
nothing fetched at view time) from profile, sweep and stream runs, side by side.

Exit codes: 0 written, 2 a folder is not a run (nothing written).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR",
                        help="--out folders of mobdistill profile, sweep or stream")
    parser.add_argument("-o", "--output", type=Path, default=Path("report.html"),
                        help="the HTML file to write (default: report.html)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mobdistill.report import write_report

    runs = write_report(args.runs, args.output)
    print(f"wrote {args.output} ({len(runs)} run(s): {', '.join(r.label for r in runs)})")
    return 0
