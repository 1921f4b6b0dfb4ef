"""`mobdistill devices`: the host, attached USB phones and the given HOST:PORT phones, probed.

Exit code 3 when a device named with --device is not usable (unauthorized, offline, busy).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from mobdistill.cli.options import adb_options, add_device_options
from mobdistill.runtime.devices import DeviceList, list_devices


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", action="append", default=[], metavar="SPEC",
                        help="also probe this HOST:PORT or USB serial (repeatable); TCP phones "
                             "cannot be discovered, only probed")
    parser.add_argument("--no-usb", action="store_true", help="do not scan USB")
    add_device_options(parser, device=False)
    parser.add_argument("--json", action="store_true", help="print a JSON object to stdout")
    parser.set_defaults(func=run)


def format_devices(listing: DeviceList) -> str:
    lines = []
    for row in listing.devices:
        what = ", ".join(f"{k}={row.details[k]}" for k in ("model", "os", "soc", "abi")
                         if k in row.details)
        lines.append(f"{row.serial}\t{row.state}\t{row.transport}\t{what or row.error}")
    lines += [f"note: {note}" for note in listing.notes]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    listing = list_devices(args.device, options=adb_options(args), include_usb=not args.no_usb)
    print(json.dumps(asdict(listing), indent=2) if args.json else format_devices(listing))
    asked = set(args.device)
    bad = [row for row in listing.devices if row.serial in asked and row.state != "device"]
    return 3 if bad else 0
