"""`mobdistill update verify`: check sparse-update packets against an exported artifact with the
C++ decoder the engine links (or the Python reference). Exit 1 when any packet is refused."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from mobdistill.errors import UsageError


def add_parser(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="update_command", metavar="ACTION", required=True)
    verify = sub.add_parser("verify", help="decode and apply packets to a copy of the artifact")
    verify.add_argument("--artifact", type=Path, required=True, help="the .manifest.json")
    verify.add_argument("--update", type=Path, action="append", required=True,
                        help="a packet file (repeatable)")
    verify.add_argument("--device-id", required=True,
                        help="the device id packets must carry (32 hex digits)")
    key = verify.add_mutually_exclusive_group()
    key.add_argument("--hmac-key-file", type=Path, help="the device's HMAC key (raw bytes)")
    key.add_argument("--insecure", action="store_true",
                     help="accept packets without an HMAC (without a key they are refused)")
    verify.add_argument("--last-sequence", type=int, default=0, help="last applied sequence")
    verify.add_argument("--engine", choices=("cpp", "python"), default="cpp")
    verify.add_argument("--json", action="store_true", help="print a JSON object to stdout")
    verify.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mobdistill.runtime.update_verify import verify_update

    try:
        device_id = bytes.fromhex(args.device_id)
    except ValueError:
        device_id = b""
    if len(device_id) != 16:
        raise UsageError(f"--device-id {args.device_id!r} must be 32 hex digits (16 bytes)")
    key = args.hmac_key_file.read_bytes() if args.hmac_key_file else None
    if args.insecure:
        print("WARNING: --insecure: accepting unauthenticated packets", file=sys.stderr)
    result = verify_update(args.artifact, args.update, device_id=device_id, hmac_key=key,
                           insecure=args.insecure, last_sequence=args.last_sequence,
                           engine=args.engine)
    if args.json:
        print(json.dumps(asdict(result), indent=1))
    else:
        for p in result.packets:
            detail = f"seq {p.sequence}, {p.values} values in {p.tensors} tensors" \
                if p.status == "ok" else p.message
            print(f"{p.file}: {p.status} ({detail})")
    return 0 if result.passed else 1
