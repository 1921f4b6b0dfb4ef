"""`mobdistill doctor`: a device report to attach to a bug (device, ABI, Android version, SoC,
governors, thermal zones, harness app, and with --artifact: versions, delegates, 10-frame
profiles with the engine binary and the harness app)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mobdistill.cli.options import add_device_options, open_device


def add_parser(parser: argparse.ArgumentParser) -> None:
    add_device_options(parser)
    parser.add_argument("--artifact", type=Path, default=None,
                        help="a small exported *.manifest.json for the delegate and profile runs")
    parser.add_argument("--apk", type=Path, default=None,
                        help="harness APK to install for the app profile (default: the Gradle "
                             "debug build of this checkout, if built)")
    parser.add_argument("--engine", type=Path, default=None,
                        help="a mobdistill-engine build (default as for `profile`)")
    parser.add_argument("--out", type=Path, default=Path("out/doctor"),
                        help="folder for the runs' logs")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mobdistill.runtime.app_runner import default_apk
    from mobdistill.runtime.doctor import doctor, format_report
    from mobdistill.runtime.engine import EngineOptions

    with open_device(args) as device:
        report = doctor(device, manifest=args.artifact, apk=default_apk(args.apk),
                        options=EngineOptions(engine_binary=args.engine), out_dir=args.out)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0
