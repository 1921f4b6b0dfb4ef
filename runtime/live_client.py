"""The live host client: a device for `mobdistill serve` (docs/protocol.md).

The frame thread reads real clips at their frame rate and segments every frame through the
engine's C facade (`runtime.facade`), samples frames at the server's rate and hands each
upload interval's frames to the uplink thread (H.264 or JPEG, bounded queue: a chunk that
cannot be sent is dropped and counted, never queued without bound). The network thread keeps
the connection (reconnecting with back-off; the hello says how far the model is, so the server
can bring it back in step) and passes update packets to the apply thread, which calls
`md_engine_apply_update` off the frame thread. Acks go back with the engine's timings and the
frame the new model first ran on. Run: ``python -m mobdistill.runtime.live_client --help``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import socket
import ssl
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mobdistill.contract import protocol, uplink
from mobdistill.contract.protocol import BlockingChannel, Message, MessageType, ProtocolError
from mobdistill.errors import MobdistillError, UsageError
from mobdistill.runtime.facade import FacadeEngine

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClientConfig:
    host: str
    port: int
    manifest: Path
    videos: tuple[str, ...]
    device_id: bytes
    key: bytes | None  # None: --insecure-updates (no authentication either way)
    out: Path
    max_frames_per_clip: int | None = None
    codec: str = "h264"
    uplink_kbps: float = uplink.DEFAULT_BITRATE_KBPS
    tls_ca: Path | None = None  # verify the server's certificate against this CA file
    state_file: Path | None = None  # the engine's --update_state_file
    num_threads: int = 1
    connect_timeout_s: float = 5.0
    retry_s: float = 0.3


@dataclass
class UpdateRow:
    """One packet as the device saw it (the stream's update row, on the device clock)."""

    sequence: int
    kind: str  # update | catch_up | resync
    mode: str
    bytes: int
    values: int | None
    boundary_s: float | None
    arrival_s: float
    arrival_frame: int
    loss_before: float | None = None
    loss_after: float | None = None
    train_wall_s: float | None = None
    engine: dict[str, Any] | None = None


MAX_ERRORS_KEPT = 32  # client.json keeps the latest connection errors, not every retry's


@dataclass
class Counters:
    uplink_bytes: int = 0
    uplink_frames: int = 0
    uplink_chunks: int = 0
    chunks_dropped: int = 0
    downlink_bytes: int = 0
    connections: int = 0
    connection_errors: int = 0  # every failed connect and every lost connection
    # The latest distinct ones (a dead server refuses every retry alike: one row per outage):
    # {"time_s", "code", "message", "repeats"}.
    errors: list[dict[str, Any]] = field(default_factory=list)
    rates: list[dict[str, Any]] = field(default_factory=list)


def load_clips(videos: tuple[str, ...], size: tuple[int, int],
               max_frames: int | None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Clips back to back at the model's size: (frames, capture times, clip of each frame)."""
    from mobdistill.video import read_frames, video_fps

    frames, times, clips, t0 = [], [], [], 0.0
    for clip in videos:
        f = read_frames(clip, max_frames, size=size)
        period = 1.0 / video_fps(clip)
        frames.append(f)
        times += [t0 + k * period for k in range(len(f))]
        clips += [Path(clip).name] * len(f)
        t0 += len(f) * period
    return np.concatenate(frames), np.asarray(times), clips


def base_sha256(manifest: Path) -> str:
    data = json.loads(manifest.read_text())
    return next(a["sha256"] for a in data["artifacts"] if a["format"] == "tflite")


def engine_high_water(state_file: Path | None) -> int:
    """The sequence the engine's state file says it accepted last (it refuses anything ≤)."""
    if state_file is None or not state_file.is_file():
        return 0
    return int(json.loads(state_file.read_text()).get("last_sequence", 0))


class LiveClient:
    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        self.engine = FacadeEngine(config.manifest, update_key=config.key,
                                   device_id=config.device_id,
                                   insecure_updates=config.key is None,
                                   state_file=config.state_file, num_threads=config.num_threads)
        self.base_sha256 = base_sha256(config.manifest)
        self.counters = Counters()
        self.updates: list[UpdateRow] = []
        self.stop = threading.Event()
        self.channel: BlockingChannel | None = None
        self.send_lock = threading.Lock()
        self.state_lock = threading.Lock()
        self.model_sequence = 0  # what the running (or prepared) model holds
        self.last_sequence = engine_high_water(config.state_file)
        self.sample_fps, self.upload_interval_s, self.heartbeat_s = 1.0, 2.0, 5.0
        self.frame_index = 0
        self.t_start = time.monotonic() + 3600.0  # the stream clock starts at the first frame
        self.uploads: queue.Queue = queue.Queue(2)
        self.packets: queue.Queue = queue.Queue(8)
        self.pending_swap: list[tuple[UpdateRow, dict[str, Any]]] = []
        self.connected = threading.Event()

    # ------------------------------------------------------------------------- clock
    def now_s(self) -> float:
        return time.monotonic() - self.t_start

    # ------------------------------------------------------------------------- network
    def _connect(self) -> BlockingChannel:
        c = self.config
        sock = socket.create_connection((c.host, c.port), timeout=c.connect_timeout_s)
        if c.tls_ca is not None:
            context = ssl.create_default_context(cafile=str(c.tls_ca))
            sock = context.wrap_socket(sock, server_hostname=c.host)
        channel = BlockingChannel(sock)
        channel.handshake_preface()
        nonce = os.urandom(protocol.NONCE_BYTES)
        with self.state_lock:
            hello = {"device_id": c.device_id.hex(), "nonce": nonce.hex(),
                     "base_sha256": self.base_sha256, "model_sequence": self.model_sequence,
                     "last_sequence": self.last_sequence, "time_s": max(0.0, self.now_s()),
                     "capabilities": {"codecs": list(uplink.CODECS),
                                      "modes": ["cumulative", "base_relative"]}}
        channel.send(Message(MessageType.HELLO, hello))
        challenge = channel.receive()
        self._check_kind(challenge, MessageType.CHALLENGE)
        if challenge.header.get("auth") == "none":
            if c.key is not None:
                raise ProtocolError("the server offers no authentication and this device has a "
                                    "key: refusing (use --insecure-updates on both sides)",
                                    "auth_failed")
        elif c.key is None:
            raise ProtocolError("the server wants authentication and this device has no key",
                                "auth_failed")
        else:
            server_nonce = protocol.hex_bytes(challenge.header, "nonce", protocol.NONCE_BYTES)
            proof = protocol.device_proof(c.key, c.device_id, nonce, server_nonce)
            channel.send(Message(MessageType.AUTH, {"proof": proof.hex()}))
        welcome = channel.receive()
        self._check_kind(welcome, MessageType.WELCOME)
        if c.key is not None:
            expected = protocol.server_proof(c.key, c.device_id, nonce, server_nonce)
            if protocol.hex_bytes(welcome.header, "server_proof", 32) != expected:
                raise ProtocolError("the server does not hold this device's key", "auth_failed")
        self._set_rates(welcome.header)
        self.heartbeat_s = float(welcome.header.get("heartbeat_s", 5.0))
        sock.settimeout(4 * self.heartbeat_s)  # the server answers every heartbeat
        log.info("connected: resume %s, server sequence %s", welcome.header.get("resume"),
                 welcome.header.get("server_sequence"))
        return channel

    def _note_error(self, err: Exception, connected: bool) -> None:
        """Counts a failed or lost connection; logs and records it unless it repeats the last
        one (the masks go on from the running model meanwhile)."""
        code = (err.code if isinstance(err, ProtocolError)
                else "malformed" if isinstance(err, ValueError) else "connection")
        where = f"{self.config.host}:{self.config.port}"
        message = (f"lost the connection to {where}: {err}" if connected
                   else f"cannot reach {where}: {err}")
        self.counters.connection_errors += 1
        errors = self.counters.errors
        if errors and not connected and errors[-1]["code"] == code \
                and errors[-1]["message"] == message:
            errors[-1]["repeats"] += 1
            return
        log.warning("%s [%s]; retrying every %g s, masks from model %d meanwhile", message, code,
                    self.config.retry_s, self.model_sequence)
        errors.append({"time_s": round(max(0.0, self.now_s()), 3), "code": code,
                       "message": message, "repeats": 0})
        del errors[:-MAX_ERRORS_KEPT]

    @staticmethod
    def _check_kind(message: Message, kind: MessageType) -> None:
        if message.kind == MessageType.ERROR:
            raise ProtocolError(f"server: {message.header.get('message')}",
                                str(message.header.get("code")))
        if message.kind != kind:
            raise ProtocolError(f"expected {kind.name}, got {message.kind.name}", "bad_type")

    def _set_rates(self, header: dict[str, Any]) -> None:
        self.sample_fps = float(protocol.field_of(header, "sample_fps", (int, float)))
        self.upload_interval_s = float(protocol.field_of(header, "upload_interval_s",
                                                         (int, float)))
        self.counters.rates.append({"time_s": round(max(0.0, self.now_s()), 3), "sample_fps":
                                    self.sample_fps, "upload_interval_s": self.upload_interval_s,
                                    "hibernating": bool(header.get("hibernating"))})

    def network_loop(self) -> None:
        while not self.stop.is_set():
            channel = None
            try:
                channel = self._connect()
                self.counters.connections += 1
                self.channel = channel
                self.connected.set()
                while not self.stop.is_set():
                    self._dispatch(channel.receive())
            except (OSError, ProtocolError, ValueError) as err:
                if not self.stop.is_set():
                    self._note_error(err, connected=channel is not None)
            finally:
                self.connected.clear()
                self.channel = None
                if channel is not None:
                    channel.sock.close()
            self.stop.wait(self.config.retry_s)

    def _dispatch(self, message: Message) -> None:
        if message.kind == MessageType.UPDATE:
            h = message.header
            row = UpdateRow(protocol.field_of(h, "sequence", int), str(h.get("kind", "update")),
                            str(h.get("mode", "cumulative")), len(message.body), h.get("values"),
                            h.get("boundary_s"), round(self.now_s(), 4), self.frame_index,
                            h.get("loss_before"), h.get("loss_after"), h.get("train_wall_s"))
            self.counters.downlink_bytes += len(message.body)
            packets = self.config.out / "packets"
            packets.mkdir(parents=True, exist_ok=True)
            (packets / f"update-{row.sequence:04d}.mdup").write_bytes(message.body)
            try:
                self.packets.put_nowait((row, message.body))
            except queue.Full:
                raise ProtocolError("update packets arrive faster than the engine applies them",
                                    "slow") from None
        elif message.kind == MessageType.RATE:
            self._set_rates(message.header)
        elif message.kind == MessageType.ERROR:
            raise ProtocolError(f"server: {message.header.get('message')}",
                                str(message.header.get("code")))

    def send(self, message: Message) -> bool:
        """Sends when connected; False (and nothing queued) when not."""
        channel = self.channel
        if channel is None:
            return False
        try:
            with self.send_lock:
                channel.send(message)
            return True
        except OSError as err:
            log.warning("send failed (%s)", err)
            channel.sock.close()
            return False

    # ------------------------------------------------------------------------- uplink
    def uplink_loop(self) -> None:
        last_sent = time.monotonic()
        while not self.stop.is_set():
            try:
                frames, times, upload_time = self.uploads.get(timeout=0.2)
            except queue.Empty:
                if time.monotonic() - last_sent > self.heartbeat_s:
                    self.send(Message(MessageType.HEARTBEAT, {}))
                    last_sent = time.monotonic()
                continue
            message = self._chunk(frames, times, upload_time)
            if self.send(message):
                self.counters.uplink_bytes += len(message.body)
                self.counters.uplink_frames += len(frames)
                self.counters.uplink_chunks += 1
            else:
                self.counters.chunks_dropped += 1
            last_sent = time.monotonic()

    def _chunk(self, frames: list[np.ndarray], times: list[float], upload_time: float) -> Message:
        header: dict[str, Any] = {"codec": self.config.codec, "times_s": times,
                                  "upload_time_s": upload_time}
        if self.config.codec == "jpeg":
            blobs = [uplink.encode_jpeg(f) for f in frames]
            header["jpeg_sizes"] = [len(b) for b in blobs]
            return Message(MessageType.FRAMES, header, b"".join(blobs))
        body = uplink.encode_h264(frames, times, bitrate_kbps=self.config.uplink_kbps)
        return Message(MessageType.FRAMES, header, body)

    # ------------------------------------------------------------------------- updates
    def apply_loop(self) -> None:
        while not self.stop.is_set():
            try:
                row, packet = self.packets.get(timeout=0.2)
            except queue.Empty:
                continue
            result = self.engine.apply_update(packet)
            record = result.record
            if result.applied:
                with self.state_lock:
                    self.model_sequence = self.last_sequence = row.sequence
                    self.pending_swap.append((row, record))
            else:
                self._finish(row, record, None)

    def _finish(self, row: UpdateRow, record: dict[str, Any], swapped: int | None) -> None:
        stages = [record.get(k) for k in ("decode_us", "patch_us", "build_us", "warm_us")]
        row.engine = {"status": record.get("status"), "reason": record.get("reason") or None,
                      "received_frame": row.arrival_frame, "swapped_frame": swapped,
                      "decode_us": stages[0], "patch_us": stages[1], "build_us": stages[2],
                      "warm_us": stages[3]}
        self.updates.append(row)
        self.send(Message(MessageType.ACK, {
            "sequence": row.sequence, "status": record.get("status"),
            "reason": record.get("reason") or None,
            "apply_us": sum(s for s in stages if isinstance(s, (int, float)) and s >= 0),
            "received_frame": row.arrival_frame, "swapped_frame": swapped,
            "last_sequence": self.last_sequence}))

    # ------------------------------------------------------------------------- frames
    def run(self) -> dict[str, Any]:
        c = self.config
        h, w = self.engine.info.height, self.engine.info.width
        frames, times, clips = load_clips(c.videos, (h, w), c.max_frames_per_clip)
        threads = [threading.Thread(target=f, name=f.__name__, daemon=True)
                   for f in (self.network_loop, self.uplink_loop, self.apply_loop)]
        for t in threads:
            t.start()
        self.connected.wait(c.connect_timeout_s)  # start with the server's rates if it is up
        c.out.mkdir(parents=True, exist_ok=True)
        model_version = 0
        sampled: list[int] = []
        next_sample, upload_at = 0.0, self.upload_interval_s
        self.t_start = time.monotonic()
        with open(c.out / "masks.bin", "wb") as masks, open(c.out / "frames.jsonl", "w") as log_f:
            for k, (frame, t) in enumerate(zip(frames, times)):
                delay = t - self.now_s()
                if delay > 0:
                    time.sleep(delay)
                self.frame_index = k
                if t >= upload_at - 1e-9:
                    self._queue_upload(frames, times, sampled, upload_at)
                    sampled = []
                    upload_at += self.upload_interval_s
                while next_sample <= t + 1e-9:
                    sampled.append(k)
                    next_sample += 1.0 / self.sample_fps
                mask, invoke_us = self.engine.segment(frame)
                model_version = self._note_swaps(k, model_version)
                masks.write(mask.tobytes())
                log_f.write(json.dumps({"frame": k, "time_s": round(float(t), 4),
                                        "clip": clips[k], "model_version": model_version,
                                        "invoke_us": invoke_us}) + "\n")
        duration = float(times[-1] + (times[1] - times[0] if len(times) > 1 else 0))
        self.stop.set()
        self.send(Message(MessageType.BYE, {}))
        channel = self.channel
        if channel is not None:
            try:
                channel.sock.shutdown(socket.SHUT_RDWR)  # wakes the network thread's read
            except OSError:
                pass
        for t in threads:
            t.join(timeout=10)
        for row, record in self.pending_swap:  # prepared after the last frame: never swapped
            row.engine = {"status": "prepared_not_swapped", "reason": None}
            self.updates.append(row)
        summary = {"frames": len(frames), "duration_s": round(duration, 4),
                   "wall_s": round(self.now_s(), 3), "counters": asdict(self.counters),
                   "updates": [asdict(u) for u in sorted(self.updates,
                                                         key=lambda u: u.sequence)],
                   "engine_stats": self.engine.stats()}
        (c.out / "client.json").write_text(json.dumps(summary, indent=1) + "\n")
        self.engine.close()
        return summary

    def _queue_upload(self, frames: np.ndarray, times: np.ndarray, picks: list[int],
                      upload_at: float) -> None:
        if not picks:
            return
        item = ([frames[i] for i in picks], [round(float(times[i]), 4) for i in picks],
                round(upload_at, 4))
        try:
            self.uploads.put_nowait(item)
        except queue.Full:  # the link is slower than the camera: drop, never hoard frames
            self.counters.chunks_dropped += 1

    def _note_swaps(self, frame: int, model_version: int) -> int:
        """After a prepared update, the first frame the engine's model version moves on is the
        swap frame; its ack goes out then."""
        with self.state_lock:
            if not self.pending_swap:
                return model_version
            version = int(self.engine.stats()["model_version"])
            if version == model_version:
                return model_version
            done, self.pending_swap = self.pending_swap, []
        for row, record in done:
            self._finish(row, record, frame)
        return version


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mobdistill.runtime.live_client",
                                     description="A live device for `mobdistill serve`.")
    parser.add_argument("--server", required=True, help="HOST:PORT")
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--video", required=True, help="clip paths, comma-separated")
    parser.add_argument("--max-frames", type=int)
    parser.add_argument("--device-id", required=True, help="32 hex digits")
    parser.add_argument("--key-file", type=Path, help="the device key (raw bytes, 0600)")
    parser.add_argument("--insecure-updates", action="store_true")
    parser.add_argument("--tls-ca", type=Path, help="CA certificate: connect with TLS")
    parser.add_argument("--state-file", type=Path, help="the engine's update state file")
    parser.add_argument("--uplink", choices=uplink.CODECS, default="h264")
    parser.add_argument("--uplink-kbps", type=float, default=uplink.DEFAULT_BITRATE_KBPS)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    if (args.key_file is None) == (not args.insecure_updates):
        print("live_client: give --key-file, or --insecure-updates to opt out", file=sys.stderr)
        return 2
    host, _, port = args.server.rpartition(":")
    try:
        config = ClientConfig(host, int(port), args.manifest,
                              tuple(v for v in args.video.split(",") if v),
                              bytes.fromhex(args.device_id),
                              args.key_file.read_bytes() if args.key_file else None, args.out,
                              max_frames_per_clip=args.max_frames, codec=args.uplink,
                              uplink_kbps=args.uplink_kbps, tls_ca=args.tls_ca,
                              state_file=args.state_file)
        if len(config.device_id) != 16:
            raise UsageError("--device-id must be 32 hex digits")
        LiveClient(config).run()
    except MobdistillError as err:
        print(f"live_client: error: {err}", file=sys.stderr)
        return err.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
