"""`mobdistill stream`: the AMS paper's five schemes on real clips; the server is
simulated in video time, the device is the real engine (docs/streaming.md)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from mobdistill.cli.options import add_device_options, open_device
from mobdistill.errors import UsageError

STREAM_MODELS = ("deeplab", "jitnet")  # stateless students the engine can update


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="deeplab", choices=STREAM_MODELS,
                        help="student: deeplab (AMS's) or jitnet (JITNet's, m=0.5)")
    parser.add_argument("--video", help="clip names or paths, comma-separated (default: "
                        "carphone_pristine.mp4,bikes.mp4,carphone_distorted.mp4)")
    parser.add_argument("--teacher", default="selfie",
                        help="built-in teacher (selfie), a .tflite or .onnx file, or "
                             "file.py:factory (a function returning a mobdistill Teacher)")
    parser.add_argument("--teacher-classes",
                        help="class names of a file teacher's outputs, comma-separated, "
                             "background first (default: background,person)")
    parser.add_argument("--teacher-activation", choices=("none", "softmax", "sigmoid"),
                        help="applied to a file teacher's output (default: none for .tflite, "
                             "softmax for .onnx)")
    parser.add_argument("--scheme", default="ams",
                        choices=("none", "one-time", "remote-tracking", "jit", "ams"),
                        help="none: the pretrained student; one-time: the whole model "
                             "fine-tuned once on the first 60 s x --time-scale; "
                             "remote-tracking: teacher labels of samples tracked with optical "
                             "flow on the device (no student); jit; ams (default)")
    parser.add_argument("--jit-threshold", type=float,
                        help="JIT's target mIoU (0.8; the paper swept 0.55-0.85)")
    parser.add_argument("--jit-box-weight", type=float,
                        help="JIT's pixel loss weight inside the teacher's boxes dilated 15 %% "
                             "(JITNet's 5; default 1: plain cross-entropy)")
    parser.add_argument("--colocated", action="store_true",
                        help="JIT with the teacher beside the student (JITNet's setting): no "
                             "link, each update applies from its own frame on")
    parser.add_argument("--gamma", type=float,
                        help="fraction of parameters per update, AMS and JIT (0.05)")
    parser.add_argument("--t-update", type=float, help="seconds between updates, also the "
                        "ASR/ATR interval δt (default 10 s x --time-scale)")
    parser.add_argument("--t-horizon", type=float, help="training horizon in seconds "
                        "(default 240 s x --time-scale)")
    parser.add_argument("--time-scale", type=float,
                        help="AMS's clock -> stream clock (0.2); JIT's δ counts real frames")
    parser.add_argument("--resolution", help="HEIGHTxWIDTH of the student (96x192)")
    parser.add_argument("--tiny", action="store_true",
                        help="ASPP width 16 / JITNet m=0.0625 (tests, smoke runs)")
    parser.add_argument("--iterations", type=int,
                        help="K Adam iterations per update (the paper's 20; fewer only to go "
                             "faster, e.g. smoke runs)")
    parser.add_argument("--batch-size", type=int, help="frames per training mini-batch")
    parser.add_argument("--lr", type=float, help="the server's Adam learning rate (the paper's "
                        "1e-3)")
    parser.add_argument("--value-coding", choices=("f16", "q8", "f32", "qdelta"))
    add_update_coding_options(parser)
    parser.add_argument("--uplink", choices=("h264", "jpeg"), help="uplink frame coding")
    parser.add_argument("--link-mbps", type=float,
                        help="cap the downlink at this rate (default: no cap, as the papers "
                             "measured); late packets are reported")
    parser.add_argument("--server-speedup", type=float,
                        help="server training speed relative to this host's CPU")
    parser.add_argument("--max-frames", type=int, help="frames per clip (default: all)")
    parser.add_argument("--pretrain-iterations", type=int,
                        help="Adam steps of the starting student (`mobdistill pretrain`, 1500)")
    parser.add_argument("--pretrain-clips", help="its clips, comma-separated (default: every "
                        "pretraining clip, docs/clips.md)")
    parser.add_argument("--seed", type=int, help="starting point and server sampling (0)")
    parser.add_argument("--realtime", action="store_true", help="pace frames at the video rate")
    parser.add_argument("--update-blocking", action="store_true",
                        help="apply each packet before its arrival frame runs (deterministic "
                             "model versions per frame, for experiments)")
    parser.add_argument("--insecure-updates", action="store_true",
                        help="send unauthenticated packets and let the engine accept them "
                             "(default: a fresh per-run key and device id)")
    parser.add_argument("--live", action="store_true",
                        help="AMS against a live `mobdistill serve` process, the host client "
                             "playing the clips in real time through the engine's facade "
                             "(docs/protocol.md); same JSON plus a `live` section")
    parser.add_argument("--runner", choices=("engine", "app"), default="engine",
                        help="engine: the mobdistill-engine binary replays the packets on their "
                             "frames (default); app: inside the harness app on --device, packets "
                             "delivered into its update folder while it runs (use --realtime, "
                             "so they land at their frames; docs/android.md)")
    parser.add_argument("--apk", type=Path, help="harness APK for --runner app (default: the "
                        "Gradle debug build if built); installed when missing or different")
    add_device_options(parser)
    live_app = parser.add_argument_group(
        "--live --runner app", "the harness app on --device plays the clips through its Kotlin "
        "AmsClient against a running `mobdistill serve` (docs/android.md; unverified here)")
    live_app.add_argument("--server", help="HOST:PORT of `mobdistill serve` as the phone "
                          "reaches it (a LAN address, or 127.0.0.1:PORT after `adb reverse`)")
    live_app.add_argument("--artifact", type=Path, help="the manifest the server deploys (its "
                          "`model` status line)")
    live_app.add_argument("--device-id", help="32 hex digits from `mobdistill serve --enroll`")
    live_app.add_argument("--key-file", type=Path, help="the key `--enroll` wrote (--key-out)")
    parser.add_argument("--out", type=Path, default=Path("out/stream"), help="packets, logs, JSON")
    parser.add_argument("--json", action="store_true", help="print the result JSON to stdout")
    parser.set_defaults(func=run)


_MAP = {"gamma": "gamma", "t_update": "t_update_s", "t_horizon": "t_horizon_s",
        "time_scale": "time_scale", "iterations": "iterations", "batch_size": "batch_size",
        "lr": "lr",
        "value_coding": "value_coding", "selection": "selection", "delta_scope": "delta_scope",
        "uplink": "uplink_codec", "link_mbps": "link_mbps",
        "server_speedup": "server_speedup", "max_frames": "max_frames_per_clip",
        "pretrain_iterations": "pretrain_iterations", "seed": "seed",
        "jit_threshold": "jit_threshold", "jit_box_weight": "jit_box_weight",
        "teacher_activation": "teacher_activation"}


# server/structured.SELECTIONS, spelled out so that building the parser does not import torch
SELECTIONS = ("paper", "code", "random", "rows", "ams-rows")


def add_update_coding_options(parser: argparse.ArgumentParser) -> None:
    """What an AMS update trains and sends beyond γ (shared with `mobdistill serve`)."""
    parser.add_argument("--selection", choices=SELECTIONS,
                        help="which parameters a phase trains: paper (AMS's top-γ coordinates, "
                             "default), code, random, rows (whole output channels: indices "
                             "cost almost nothing), ams-rows (rows covering AMS's choice)")
    parser.add_argument("--delta-scope", choices=("all", "phase"),
                        help="with --value-coding qdelta: send every residual (all, default) "
                             "or only the phase's trained coordinates' (phase); with "
                             "--selection rows and --gamma 0.08 the smallest measured updates "
                             "(benchmarks/README.md)")


def config_from_args(args: argparse.Namespace):
    from mobdistill.experiments.config import StreamConfig
    from mobdistill.models.registry import parse_resolution

    kw = {dest: getattr(args, src) for src, dest in _MAP.items() if getattr(args, src) is not None}
    if args.video:
        kw["videos"] = tuple(v.strip() for v in args.video.split(",") if v.strip())
    if args.pretrain_clips:
        kw["pretrain_clips"] = tuple(v.strip() for v in args.pretrain_clips.split(",")
                                     if v.strip())
    if args.teacher_classes:
        kw["teacher_classes"] = tuple(c.strip() for c in args.teacher_classes.split(","))
    if args.resolution:
        kw["resolution"] = parse_resolution(args.resolution)
    if args.tiny:
        kw["aspp_channels" if args.model == "deeplab" else "width_multiplier"] = (
            16 if args.model == "deeplab" else 0.0625)
    return StreamConfig(scheme=args.scheme, teacher=args.teacher, model=args.model,
                        realtime=args.realtime, update_blocking=args.update_blocking,
                        colocated=args.colocated, insecure_updates=args.insecure_updates, **kw)


def run(args: argparse.Namespace) -> int:
    from mobdistill.experiments.stream import run_stream

    extra = {}
    if args.live and args.runner == "app":
        return _live_in_app(args)
    if args.live:
        from mobdistill.experiments.live import run_live

        if args.scheme != "ams":
            raise UsageError("--live runs AMS only (--scheme ams)")
        result, extra["live"] = run_live(config_from_args(args), out_dir=args.out)
    else:
        with open_device(args) as device:
            result = run_stream(config_from_args(args), out_dir=args.out,
                                device=_target(args, device))
    if args.json:
        print(json.dumps({**asdict(result), **extra}, indent=1))
    else:
        down = result.downlink
        print(f"{result.scheme}: mIoU vs teacher {result.miou_with_background['mean']:.4f} "
              f"with background, {_fmt(result.miou_foreground['mean'])} foreground only, over "
              f"{result.frames} frames; uplink {result.uplink['kbit_s']} kbit/s, downlink "
              f"{down['kbit_s']} kbit/s ({down['kbit_s_paper_clock']} on the paper's clock), "
              f"{down['packets_applied']} updates applied by the engine"
              + (f", {down['packets_late']} late" if down["packets_late"] else "")
              + f"; logs in {result.out_dir}")
    return 0


def _live_in_app(args: argparse.Namespace) -> int:
    from mobdistill.export.manifest import Manifest
    from mobdistill.runtime.app_live import LiveServer, clip_frames, run_live_app
    from mobdistill.runtime.app_runner import default_apk
    from mobdistill.runtime.engine import EngineOptions

    if not (args.server and args.artifact and args.device_id
            and (args.key_file or args.insecure_updates)):
        raise UsageError("--live --runner app needs --server, --artifact, --device-id and "
                         "--key-file (or --insecure-updates)")
    config = config_from_args(args)
    manifest = Manifest.load(args.artifact, check_files=False)
    frames, count, fps = clip_frames(config.videos, manifest.resolution,
                                     config.max_frames_per_clip, args.out / "frames.rgb")
    options = EngineOptions(num_threads=config.num_threads, num_runs=count, run_delay_s=1 / fps,
                            timeout_s=count / fps + 300)
    server = LiveServer(args.server, args.device_id, args.key_file)
    with open_device(args) as device:
        run = run_live_app(device, manifest.path, frames, server, options,
                           out_dir=args.out / "device", apk=default_apk(args.apk))
    applied = sum(u["status"] == "applied" for u in run.status["updates"])
    print(json.dumps(run.status, indent=1) if args.json else
          f"live in the app: {len(run.frames)} frames, {applied} updates applied, state "
          f"{run.status['state']}; logs in {args.out / 'device'}")
    return 0


def _target(args: argparse.Namespace, device):
    """The device, or the harness app on it (--runner app)."""
    if args.runner != "app":
        return device
    from mobdistill.runtime.app_runner import AppTarget, default_apk

    return AppTarget(device, default_apk(args.apk))


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
