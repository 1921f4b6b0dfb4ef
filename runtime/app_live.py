"""The harness app's live mode from the host (`mobdistill stream --live --runner app`): the app
plays a clip's frames through the library's Kotlin AmsClient against a running
`mobdistill serve`, which trains on what the phone uploads and streams updates back.

The host pushes the model, the frames (packed RGB at the model's size) and the device key into
the app (checked like every push, the key 0600), starts the app's live mode with the extras that
android/harness LiveRequest.kt reads (`ams_server` plus engine flags), waits for its status file,
and fetches the per-frame log, masks and status back. The phone must reach the server: a LAN
address, or `adb reverse tcp:PORT tcp:PORT` and 127.0.0.1:PORT.

Unverified here: nothing on this host runs the Android framework, so this path has not run end
to end; the extras are checked against LiveRequest.kt on a desktop JVM (tests/adb).
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mobdistill.errors import DeviceError, EngineError, UsageError
from mobdistill.export.manifest import Manifest
from mobdistill.files import sha256_file
from mobdistill.runtime.app_runner import AppEnded, HarnessApp, engine_extras
from mobdistill.runtime.device import Device
from mobdistill.runtime.engine import EngineOptions

log = logging.getLogger(__name__)

# The engine flags the live loop uses (LiveRequest.kt refuses the others): warmup runs, op
# profiling and sensors belong to the benchmark.
LIVE_FLAGS = ("num_threads", "num_runs", "run_delay", "use_xnnpack", "use_gpu", "use_nnapi",
              "update_device_id", "insecure_updates", "update_key_file", "update_state_file")


@dataclass(frozen=True)
class LiveServer:
    """Where the phone reaches `mobdistill serve`, and as which enrolled device."""

    address: str  # HOST:PORT as the phone sees it
    device_id: str  # 32 hex digits (`mobdistill serve --enroll`)
    key_file: Path | None  # the enrolled key; None only against --insecure-updates
    tls: bool = False


def live_extras(tag: str, manifest: str, frames: str, server: LiveServer, options: EngineOptions,
                key_in_app: str | None) -> dict[str, str]:
    """The extras of one live run, as LiveRequest.kt reads them."""
    live = EngineOptions(
        num_threads=options.num_threads, num_runs=options.num_runs, delegate=options.delegate,
        run_delay_s=options.run_delay_s, update_device_id=server.device_id,
        insecure_updates=server.key_file is None, update_key_file=server.key_file,
        update_state_file=options.update_state_file)
    flags = engine_extras(live.to_flags({"update_key_file": key_in_app or ""}))
    extras = {"ams_server": server.address, "tag": tag, "manifest": manifest, "frames": frames}
    extras.update({k: v for k, v in flags.items() if k in LIVE_FLAGS})
    if server.tls:
        extras["ams_tls"] = "true"
    return extras


@dataclass
class LiveAppRun:
    """What the app's live run wrote, fetched to `out_dir`."""

    status: dict[str, Any]  # AmsClient's status at the end (updates, counters, last error)
    frames: list[dict[str, Any]]  # per frame: frame, invoke_us, model_sequence
    jsonl_path: Path
    masks_path: Path
    status_path: Path


def run_live_app(device: Device, manifest_path: Path, frames_path: Path, server: LiveServer,
                 options: EngineOptions, *, out_dir: Path, apk: Path | None = None) -> LiveAppRun:
    """One live run in the harness app; EngineError with the app's message when it fails."""
    if options.run_delay_s <= 0:
        raise UsageError("the live mode plays frames in real time: give the frame interval "
                         "(run_delay_s, e.g. 1/30 s)")
    manifest = Manifest.load(Path(manifest_path), check_files=False)
    app = HarnessApp(device)
    app.ensure_installed(apk)
    tag = f"live-{secrets.token_hex(4)}"
    folder = f"models/{sha256_file(manifest.path)[:16]}"
    models = app.push_all({f"{folder}/{manifest.path.name}": manifest.path,
                           f"{folder}/{manifest.tflite_path.name}": manifest.tflite_path})
    files = app.files_dir()
    remote = {"live.jsonl": f"{files}/{tag}.live.jsonl", "masks": f"{files}/{tag}.masks",
              "live.json": f"{files}/{tag}.live.json"}
    pushed: list[str] = []
    try:
        pushed.append(app.push(Path(frames_path), f"{tag}.rgb"))
        if server.key_file is not None:
            pushed.append(app.push(server.key_file, f"keys/{tag}.key", private=True))
        extras = live_extras(tag, models[f"{folder}/{manifest.path.name}"], pushed[0], server,
                             options, pushed[1] if server.key_file is not None else None)
        app.start_activity(extras)
        started = time.monotonic()
        error = app.wait_for_summary(remote["live.json"], timeout_s=options.timeout_s)
        log.info("the app's live run took %.1f s", time.monotonic() - started)
    except AppEnded as ended:
        app.force_stop()
        error = str(ended)
    finally:
        if pushed:
            app.remove(*pushed)
    if error:
        raise EngineError(f"the harness's live run on {device.serial} failed: {error}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    local = {k: out / f"app.{k}" for k in remote}
    app.fetch_all({remote[k]: local[k] for k in remote})
    try:
        app.remove(*remote.values())
    except DeviceError as err:
        log.warning("could not remove the live run's files from the app: %s", err)
    return LiveAppRun(json.loads(local["live.json"].read_text()),
                      [json.loads(line) for line in local["live.jsonl"].read_text().splitlines()],
                      local["live.jsonl"], local["masks"], local["live.json"])


def clip_frames(videos: tuple[str, ...], resolution: tuple[int, int], max_frames: int | None,
                out: Path) -> tuple[Path, int, float]:
    """The clips back to back at the model's size in one frames file: (path, frames, fps of
    the first clip, the pace the app plays them at)."""
    from mobdistill.runtime.frames import decode_to_raw
    from mobdistill.video import clip_path, video_fps

    out.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with open(out, "wb") as joined:
        for i, video in enumerate(videos):
            part = out.with_name(f".{out.name}.{i}")
            decoded = decode_to_raw(video, part, resolution=resolution, max_frames=max_frames)
            joined.write(part.read_bytes())
            part.unlink()
            count += decoded.count
    return out, count, video_fps(clip_path(videos[0]))
