"""`mobdistill devices`: the host, attached USB phones and the given HOST:PORT phones, probed.

Exit code 3 when a device named with --device is not usable (unauthorized, offline, busy).
`add_adb_options` / `adb_options` are shared with the commands that take `--device`.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from mobdistill.runtime.adb_device import AdbOptions
from mobdistill.runtime.devices import DeviceList, list_devices

_DEFAULTS = AdbOptions()


def add_adb_options(parser: argparse.ArgumentParser) -> None:
    """--adb-key and --auth-timeout, for every command that reaches a phone."""
    parser.add_argument("--adb-key", type=Path, default=None,
                        help="ADB private key (default ~/.android/adbkey, created if missing)")
    parser.add_argument("--auth-timeout", type=float, default=_DEFAULTS.auth_timeout_s,
                        help="seconds to wait for 'Allow USB debugging?' on the phone")


def adb_options(args: argparse.Namespace) -> AdbOptions:
    return AdbOptions(adbkey=args.adb_key, auth_timeout_s=args.auth_timeout)


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", action="append", default=[], metavar="SPEC",
                        help="also probe this HOST:PORT or USB serial (repeatable); TCP phones "
                             "cannot be discovered, only probed")
    parser.add_argument("--no-usb", action="store_true", help="do not scan USB")
    add_adb_options(parser)
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
