"""`mobdistill serve`: the AMS server as a network service for live devices (docs/protocol.md).

The student, teacher and training flags are `mobdistill stream`'s, with the same defaults, so a
live run and a simulated run train the same starting point the same way. With ``--ray`` the
sessions train on Ray actors (docs/fleet.md); without it, in this process."""

from __future__ import annotations

import argparse
import functools
import json
import os
from pathlib import Path

from mobdistill.cli import stream_cmd
from mobdistill.errors import UsageError

_STREAM_DEFAULTS = {"model": "deeplab", "video": None, "scheme": "ams", "realtime": True,
                    "uplink": None, "link_mbps": None, "server_speedup": None, "max_frames": None}


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7447, help="TCP port (0: any free port)")
    parser.add_argument("--state-dir", type=Path,
                        help="devices.json (enrolled devices and keys) and persisted sessions")
    parser.add_argument("--enroll", metavar="NAME",
                        help="enrol a device: new id and key in --state-dir/devices.json, the "
                             "key written to --key-out (0600); then exit")
    parser.add_argument("--key-out", type=Path, help="where --enroll writes the device key")
    parser.add_argument("--tls-cert", type=Path, help="PEM certificate chain: serve over TLS")
    parser.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    parser.add_argument("--insecure-updates", action="store_true",
                        help="no device authentication and unauthenticated packets (experiments "
                             "only; devices must opt out too)")
    parser.add_argument("--workers", type=int, default=1,
                        help="training threads (1; without --ray)")
    parser.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                        help="train on Ray actors, one per slot of the cluster at ADDRESS "
                             "(e.g. auto, or HOST:6379); alone: a new local cluster")
    parser.add_argument("--ray-cpus", type=int,
                        help="CPU slots of the local cluster --ray starts (default: all)")
    parser.add_argument("--ray-actor-cpus", type=float, default=1.0,
                        help="CPUs one training actor reserves (1)")
    parser.add_argument("--ray-actor-gpus", type=float, default=0.0,
                        help="GPUs one training actor reserves (0; 1 = one actor per GPU)")
    parser.add_argument("--ray-max-actors", type=int, help="at most this many training actors")
    parser.add_argument("--no-atr", action="store_true",
                        help="fixed T_update: the Adaptive Training Rate never lengthens it "
                             "(AMS App. D; ASR still adapts the sampling rate)")
    parser.add_argument("--read-timeout", type=float, default=60.0,
                        help="drop a device silent for this many seconds (60)")
    parser.add_argument("--handshake-timeout", type=float, default=10.0,
                        help="drop a connection that has not authenticated within this (10 s)")
    parser.add_argument("--json", action="store_true", help="one JSON status line per event")
    parser.add_argument("--teacher", default="selfie", help="as `mobdistill stream`")
    parser.add_argument("--teacher-classes")
    parser.add_argument("--teacher-activation", choices=("none", "softmax", "sigmoid"))
    parser.add_argument("--resolution", help="HEIGHTxWIDTH of the student (96x192)")
    parser.add_argument("--tiny", action="store_true", help="ASPP width 16 (tests, smoke runs)")
    parser.add_argument("--pretrain-iterations", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--time-scale", type=float)
    parser.add_argument("--t-update", type=float)
    parser.add_argument("--t-horizon", type=float)
    parser.add_argument("--iterations", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--gamma", type=float)
    parser.add_argument("--value-coding", choices=("f16", "q8", "f32", "qdelta"))
    stream_cmd.add_update_coding_options(parser)
    parser.add_argument("--num-threads", type=int, default=2, help="torch threads (2)")
    parser.add_argument("--student-cache", type=Path,
                        help="folder of pretrained, exported starting points (default "
                             "$MOBDISTILL_CACHE/students, shared with `mobdistill stream`)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.enroll:
        return _enroll(args)
    from mobdistill.server.live import ServeOptions, serve

    stream_parser = argparse.ArgumentParser()
    stream_cmd.add_parser(stream_parser)
    # Stream flags serve does not take get serve's defaults, else the stream's own.
    for name, value in {**vars(stream_parser.parse_args([])), **_STREAM_DEFAULTS}.items():
        setattr(args, name, getattr(args, name, value))
    config = stream_cmd.config_from_args(args)
    if args.tls_cert and not args.tls_key or args.tls_key and not args.tls_cert:
        raise UsageError("--tls-cert and --tls-key go together")
    if not args.insecure_updates and args.state_dir is None:
        raise UsageError("--state-dir is required: it holds the enrolled devices' keys "
                         "(`mobdistill serve --state-dir D --enroll NAME --key-out KEY`)")
    settings = (config, args.num_threads, args.student_cache, not args.no_atr)
    # Here first: the starting point is prepared (and cached) before any actor needs it.
    factory, manifest_path = session_factory(*settings)
    build = functools.partial(actor_session_factory, *settings)
    print(json.dumps({"event": "model", "manifest": str(manifest_path),
                      "resolution": list(config.resolution)}) if args.json
          else f"serving the student of {manifest_path}", flush=True)
    options = ServeOptions(host=args.host, port=args.port, state_dir=args.state_dir,
                           insecure=args.insecure_updates, tls=_tls(args),
                           workers=args.workers, read_timeout_s=args.read_timeout,
                           handshake_timeout_s=args.handshake_timeout)
    return serve(_sessions(args, build, factory, config.resolution), options, args.json)


def _sessions(args: argparse.Namespace, build, factory, resolution: tuple[int, int]):
    """Where the sessions live: Ray actors with --ray, else this process."""
    from mobdistill.server.live import LocalSessions, StatusLog
    from mobdistill.server.session_host import SessionHost

    if not args.ray:
        return LocalSessions(SessionHost(factory, resolution, args.state_dir), args.workers)
    from mobdistill.server.fleet import Fleet, FleetOptions

    if args.ray_actor_cpus <= 0 or args.ray_actor_gpus < 0:
        raise UsageError("--ray-actor-cpus must be positive and --ray-actor-gpus not negative")
    options = FleetOptions(address=None if args.ray == "local" else args.ray,
                           local_cpus=args.ray_cpus, actor_cpus=args.ray_actor_cpus,
                           actor_gpus=args.ray_actor_gpus, max_actors=args.ray_max_actors)
    return Fleet(build, resolution, args.state_dir, options, StatusLog(args.json))


def _enroll(args: argparse.Namespace) -> int:
    from mobdistill.server.live_store import DeviceRegistry

    if args.state_dir is None or args.key_out is None:
        raise UsageError("--enroll needs --state-dir and --key-out")
    entry = DeviceRegistry(args.state_dir / "devices.json").enroll(args.enroll)
    fd = os.open(args.key_out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(entry.key)
    print(json.dumps({"device_id": entry.device_id.hex(), "name": entry.name,
                      "key_file": str(args.key_out)}))
    return 0


def _tls(args: argparse.Namespace):
    if not args.tls_cert:
        return None
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(args.tls_cert, args.tls_key)
    except (OSError, ssl.SSLError) as err:
        raise UsageError(f"--tls-cert/--tls-key: {err}") from None
    return context


def actor_session_factory(config, num_threads: int, cache: Path | None, atr: bool):
    """What a fleet's actor calls in its own process (pickled by reference: module level,
    plain values)."""
    return session_factory(config, num_threads, cache, atr)[0]


def session_factory(config, num_threads: int, cache: Path | None, atr: bool = True):
    """(device id, key) -> a fresh Session on the stream's starting point; the manifest."""
    import torch

    from mobdistill.experiments.simulate import scaled_rates, server_config
    from mobdistill.experiments.student import prepare_student
    from mobdistill.export.manifest import load as load_manifest
    from mobdistill.server.session import Session, UpdateCredentials
    from mobdistill.server.teachers import load_teacher

    torch.set_num_threads(num_threads)
    teacher = load_teacher(config.teacher, class_names=config.teacher_classes,
                           activation=config.teacher_activation)
    student, manifest_path = prepare_student(config, teacher, cache=cache)
    manifest = load_manifest(manifest_path)

    def factory(device_id: bytes, key: bytes | None) -> Session:
        rates = scaled_rates(config)
        if not atr:
            rates.max_interval_factor = 1.0  # hibernation may never lengthen T_update
        return Session(device_id.hex(), student, manifest, teacher, server_config(config),
                       credentials=UpdateCredentials(device_id, key), rates=rates)

    return factory, Path(manifest_path)
