"""The `mobdistill` command. Each subcommand is a module here with `add_parser` and `run`.

Only `main()` sets exit codes: 0 ok, 1 check failed, 2 usage, 3 device/engine.
Command modules are imported only when their command runs (keeps `--help` fast).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings

from mobdistill.errors import MobdistillError

# name -> (module, one-line help). Keep alphabetical.
COMMANDS: dict[str, tuple[str, str]] = {
    "delta": ("mobdistill.cli.delta_cmd", "Delta Distillation: train deeplab-delta's students"),
    "devices": ("mobdistill.cli.devices_cmd", "list the host and ADB phones, probed (--json)"),
    "doctor": ("mobdistill.cli.doctor_cmd", "a device report for bug reports (--json)"),
    "export": ("mobdistill.cli.export_cmd", "export a student to TFLite and ONNX, verified"),
    "info": ("mobdistill.cli.info_cmd", "print parameters and FLOPs of a student"),
    "pretrain": ("mobdistill.cli.pretrain_cmd", "distill the teacher into the starting student"),
    "profile": ("mobdistill.cli.profile_cmd", "run a student in the engine, report latency"),
    "report": ("mobdistill.cli.report_cmd", "one HTML page from profile, sweep and stream runs"),
    "serve": ("mobdistill.cli.serve_cmd", "the AMS server for live devices (docs/protocol.md)"),
    "stream": ("mobdistill.cli.stream_cmd", "AMS / JIT streaming on real clips: engine + mIoU"),
    "sweep": ("mobdistill.cli.sweep_cmd", "latency vs memory queue length (per Q)"),
    "update": ("mobdistill.cli.update_cmd", "verify sparse-update packets against an artifact"),
    "vos": ("mobdistill.cli.vos_cmd", "MobileVOS distillation training and J&F via the engine"),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mobdistill",
        description="Export, verify, profile and stream video-distilled segmentation students.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    wanted = next((a for a in argv if a in COMMANDS), None)
    for name, (module_name, help_text) in COMMANDS.items():
        if wanted is None or name == wanted:
            module = importlib.import_module(module_name)
            module.add_parser(sub.add_parser(name, help=help_text, description=help_text))
        else:
            sub.add_parser(name, help=help_text)
    return parser


# Native libraries (TensorFlow-style C++ logging in the converters, absl) read these when they
# load, so they are set before any command module imports them; a user's own setting wins.
_QUIET_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "2",  # C++ INFO/WARNING lines of TensorFlow-style logging
    "GLOG_minloglevel": "2",
    "TF_ENABLE_ONEDNN_OPTS": "0",  # the converter's constant folding: no oneDNN notice (absl)
    "TORCH_LOGS": "-torch",  # torch's own logging handlers at ERROR
    "LITERT_TORCH_SHOW_PROGRESS": "n",  # the converter's own [START]/[ DONE] task tree
    "JAX_PLATFORMS": "cpu",  # no probing for TPU/GPU backends (and no INFO line about it)
}
# Python loggers of third-party packages that talk at INFO/WARNING on every export.
_NOISY_LOGGERS = ("torch", "torchao", "jax", "absl", "litert_torch", "onnxscript", "onnx_ir")


def quiet_third_party(verbose: bool) -> None:
    """Keep stderr to mobdistill's own progress and errors unless --verbose."""
    if verbose:
        return
    for name, value in _QUIET_ENV.items():
        os.environ.setdefault(name, value)
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    for category in (FutureWarning, DeprecationWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    verbose = "-v" in argv or "--verbose" in argv
    quiet_third_party(verbose)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    # Third-party INFO (e.g. "Use JAX lowering" on the root logger) only with --verbose.
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("mobdistill").setLevel(logging.DEBUG if verbose else logging.INFO)
    try:
        return int(args.func(args))
    except MobdistillError as err:
        print(f"mobdistill {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("mobdistill: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
