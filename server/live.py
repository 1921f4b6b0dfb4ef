"""`mobdistill serve`: the AMS server as a network service (docs/protocol.md).

An asyncio front end owns the connections; the sessions live elsewhere (`Sessions`): in this
process (`LocalSessions`: decoding and labelling uplink chunks in one ingest thread, training
phases in a pool of trainer threads) or on the Ray actors of a fleet (`server/fleet.py`, `serve
--ray`). Due devices are trained round-robin (AMS §3 and App. E: one trainer serves several
devices in turn), at most one phase per trainer slot. Network I/O never waits on either. Per
connection: handshake and read deadlines, a bounded uplink queue (a full queue stops reading
from that device: TCP back-pressure), a bounded outgoing queue with a write deadline (a device
that does not read is dropped and catches up when it returns). One device's fault never
touches another's connection.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import signal
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Hashable, Protocol, TypeVar

from mobdistill.contract import protocol
from mobdistill.contract.protocol import Limits, Message, MessageType, ProtocolError
from mobdistill.server.live_session import PhaseOutcome, ResumePacket
from mobdistill.server.live_store import DeviceRegistry
from mobdistill.server.session_host import Ingested, SessionHost, SessionInfo

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 0
    state_dir: Path | None = None
    insecure: bool = False  # no device authentication, unauthenticated packets
    tls: ssl.SSLContext | None = None
    workers: int = 1
    handshake_timeout_s: float = 10.0
    read_timeout_s: float = 60.0
    write_timeout_s: float = 10.0
    heartbeat_s: float = 5.0
    uplink_queue: int = 2
    outgoing_queue: int = 8
    max_chunk_bytes: int = protocol.DEFAULT_MAX_CHUNK_BYTES


class StatusLog:
    """One line per event: JSON on stdout with --json, else a readable log line."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def __call__(self, event: str, **fields: Any) -> None:
        if self.as_json:
            print(json.dumps({"event": event, "time": round(time.time(), 3), **fields}),
                  flush=True)
        else:
            log.info("%s %s", event, " ".join(f"{k}={v}" for k, v in fields.items()))


class Connection:
    """One device's stream: framed reads with deadlines, a bounded outgoing queue."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 options: ServeOptions) -> None:
        self.reader, self.writer, self.options = reader, writer, options
        self.limits = Limits(max_chunk_bytes=options.max_chunk_bytes)
        self.outgoing: asyncio.Queue[Message] = asyncio.Queue(options.outgoing_queue)
        self.closed = asyncio.Event()
        self.peer = str(writer.get_extra_info("peername"))

    async def receive(self, timeout_s: float) -> Message:
        async def read() -> Message:
            head = await self.reader.readexactly(protocol.FRAME_HEAD.size)
            kind, header_len, body_len = protocol.parse_head(head, protocol.CLIENT_TYPES,
                                                             self.limits)
            header = protocol.parse_header(kind, await self.reader.readexactly(header_len))
            return Message(kind, header, await self.reader.readexactly(body_len))

        try:
            return await asyncio.wait_for(read(), timeout_s)
        except asyncio.TimeoutError:
            raise ProtocolError(f"nothing from the device for {timeout_s:g} s", "timeout") from None
        except asyncio.IncompleteReadError:
            raise ProtocolError("the device closed the connection", "closed") from None

    def send(self, message: Message) -> None:
        """Queues a message; a device that lets its queue fill is too slow and is dropped."""
        try:
            self.outgoing.put_nowait(message)
        except asyncio.QueueFull:
            self.close()

    async def write_loop(self) -> None:
        while not self.closed.is_set():
            message = await self.outgoing.get()
            self.writer.write(protocol.encode(message))
            await asyncio.wait_for(self.writer.drain(), self.options.write_timeout_s)

    def close(self) -> None:
        self.closed.set()
        self.writer.close()


class Sessions(Protocol):
    """Where the devices' sessions live and train; every call names the device."""

    workers: int  # how many phases may run at once (the trainer's concurrency)

    def slot(self, device: bytes) -> Hashable: ...  # one phase per slot at a time
    async def start(self, on_resume: Callable[[bytes, ResumePacket], None]) -> None: ...
    async def open(self, device: bytes, key: bytes | None) -> SessionInfo: ...
    async def hello(self, device: bytes, device_time_s: float, model_sequence: int,
                    last_sequence: int) -> tuple[ResumePacket | None, dict[str, Any], int]: ...
    async def ingest(self, device: bytes, codec: str, body: bytes, times_s: list[float],
                     jpeg_sizes: list[int] | None, upload_time_s: float) -> Ingested: ...
    async def train(self, device: bytes, device_time_s: float) -> PhaseOutcome | None: ...
    async def resync(self, device: bytes, last_sequence: int) -> ResumePacket: ...
    async def close(self) -> None: ...


class LocalSessions:
    """All sessions in this process: one ingest thread (the teacher is used from it only),
    ``workers`` training threads; a slot is a device (any thread trains any device)."""

    def __init__(self, host: SessionHost, workers: int) -> None:
        self.host, self.workers = host, workers
        self.ingest_pool = ThreadPoolExecutor(1, thread_name_prefix="ingest")
        self.train_pool = ThreadPoolExecutor(workers, thread_name_prefix="train")

    def slot(self, device: bytes) -> Hashable:
        return device

    async def _run(self, pool: ThreadPoolExecutor, call: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, call, *args)

    async def start(self, on_resume: Callable[[bytes, ResumePacket], None]) -> None:
        """Nothing to start: sessions never move in one process."""

    async def open(self, device: bytes, key: bytes | None) -> SessionInfo:
        return await self._run(self.train_pool, self.host.open, device, key)

    async def hello(self, device: bytes, device_time_s: float, model_sequence: int,
                    last_sequence: int) -> tuple[ResumePacket | None, dict[str, Any], int]:
        return await self._run(self.train_pool, self.host.hello, device, device_time_s,
                               model_sequence, last_sequence)

    async def ingest(self, device: bytes, codec: str, body: bytes, times_s: list[float],
                     jpeg_sizes: list[int] | None, upload_time_s: float) -> Ingested:
        return await self._run(self.ingest_pool, self.host.ingest, device, codec, body,
                               times_s, jpeg_sizes, upload_time_s)

    async def train(self, device: bytes, device_time_s: float) -> PhaseOutcome | None:
        return await self._run(self.train_pool, self.host.train, device, device_time_s)

    async def resync(self, device: bytes, last_sequence: int) -> ResumePacket:
        return await self._run(self.train_pool, self.host.resync, device, last_sequence)

    async def close(self) -> None:
        # Running phases finish (and persist) before the process exits.
        self.train_pool.shutdown(wait=True)
        self.ingest_pool.shutdown(wait=True, cancel_futures=True)


class RoundRobinTrainer:
    """Due devices are trained in turn, starting after the one served last; at most one phase
    per slot (a device, or a fleet's actor) at a time, up to ``workers`` phases at once."""

    def __init__(self, run: Callable[[bytes, float], Awaitable[PhaseOutcome | None]],
                 workers: int, deliver: Callable[[bytes, PhaseOutcome, float], None],
                 slot: Callable[[bytes], Hashable] = lambda device: device) -> None:
        self.run, self.deliver, self.slot = run, deliver, slot
        self.order: list[bytes] = []
        self.pending: dict[bytes, float] = {}
        self.busy: set[Hashable] = set()
        self.last_served = -1
        self.wakeup = asyncio.Event()
        self.tasks = [asyncio.ensure_future(self._work()) for _ in range(workers)]

    def request(self, device: bytes, device_time_s: float) -> None:
        if device not in self.order:
            self.order.append(device)
        self.pending[device] = device_time_s
        self.wakeup.set()

    def _next(self) -> bytes | None:
        n = len(self.order)
        for k in range(1, n + 1):
            candidate = self.order[(self.last_served + k) % n]
            if candidate in self.pending and self.slot(candidate) not in self.busy:
                self.last_served = (self.last_served + k) % n
                return candidate
        return None

    async def _work(self) -> None:
        while True:
            device = self._next()
            if device is None:
                self.wakeup.clear()
                await self.wakeup.wait()
                continue
            when = self.pending.pop(device)
            slot = self.slot(device)
            self.busy.add(slot)
            try:
                outcome = await self.run(device, when)
            except Exception:  # a failed phase must not stop the trainer for other devices
                log.exception("training device %s failed", device.hex())
                outcome = None
            finally:
                self.busy.discard(slot)
                self.wakeup.set()
            if outcome is not None:
                self.deliver(device, outcome, when)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


class LiveServer:
    def __init__(self, sessions: Sessions, options: ServeOptions, status: StatusLog) -> None:
        self.sessions, self.options, self.status = sessions, options, status
        state = options.state_dir
        self.registry = DeviceRegistry(state / "devices.json") if state else None
        self.opened: set[bytes] = set()
        self.connections: dict[bytes, Connection] = {}
        self.stopping = asyncio.Event()

    # ------------------------------------------------------------------------- lifecycle
    async def run(self) -> None:
        # The fleet starts Ray first: its signal handlers must not replace the ones below.
        await self.sessions.start(self._moved)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.stopping.set)
        self.trainer = RoundRobinTrainer(self.sessions.train, self.sessions.workers,
                                         self._deliver, self.sessions.slot)
        server = await asyncio.start_server(self._serve, self.options.host, self.options.port,
                                            ssl=self.options.tls, limit=64 * 1024)
        host, port = server.sockets[0].getsockname()[:2]
        self.status("listening", host=host, port=port, tls=self.options.tls is not None,
                    insecure=self.options.insecure, pid=os.getpid())
        async with server:
            await self.stopping.wait()
            server.close()
            for connection in list(self.connections.values()):
                connection.close()
            await self.trainer.stop()
        await self.sessions.close()
        self.status("stopped")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = Connection(reader, writer, self.options)
        device: bytes | None = None
        try:
            known, resume, rates = await asyncio.wait_for(self._handshake(connection),
                                                          self.options.handshake_timeout_s)
            device = known
            previous = self.connections.pop(known, None)
            if previous is not None:  # the device reconnected: the old stream is dead
                previous.close()
            self.connections[known] = connection
            await self._stream(connection, known, resume, rates)
        except asyncio.TimeoutError:
            self._drop(connection, device, "timeout", "handshake deadline passed")
        except ProtocolError as err:
            self._drop(connection, device, err.code, str(err))
        except (ConnectionError, ssl.SSLError, OSError) as err:
            self._drop(connection, device, "connection", str(err))
        finally:
            if device is not None and self.connections.get(device) is connection:
                del self.connections[device]
            connection.close()

    def _drop(self, connection: Connection, device: bytes | None, code: str, message: str) -> None:
        if code != "closed":
            try:
                connection.writer.write(protocol.encode(Message(
                    MessageType.ERROR, {"code": code, "message": message})))
            except (ConnectionError, RuntimeError):
                pass
        self.status("dropped", device=device.hex() if device else None, peer=connection.peer,
                    code=code, message=message)

    # ------------------------------------------------------------------------- handshake
    async def _handshake(self, c: Connection,
                         ) -> tuple[bytes, ResumePacket | None, dict[str, Any]]:
        try:
            preface = await c.reader.readexactly(len(protocol.PREFACE))
        except asyncio.IncompleteReadError:
            raise ProtocolError("closed before the preface", "closed") from None
        protocol.check_preface(preface)
        c.writer.write(protocol.PREFACE)
        hello = await c.receive(self.options.handshake_timeout_s)
        if hello.kind != MessageType.HELLO:
            raise ProtocolError(f"expected HELLO, got {hello.kind.name}", "bad_type")
        device = protocol.hex_bytes(hello.header, "device_id", 16)
        client_nonce = protocol.hex_bytes(hello.header, "nonce", protocol.NONCE_BYTES)
        server_nonce = os.urandom(protocol.NONCE_BYTES)
        key = await self._authenticate(c, device, client_nonce, server_nonce)
        info = await self._session(device, key)
        if protocol.field_of(hello.header, "base_sha256", str) != info.base_sha256.hex():
            raise ProtocolError("the device runs another model than this server trains "
                                "(base sha256 differs)", "wrong_model")
        model_sequence = protocol.field_of(hello.header, "model_sequence", int)
        last_sequence = protocol.field_of(hello.header, "last_sequence", int)
        device_time = float(protocol.field_of(hello.header, "time_s", (int, float)))
        resume, rates, sequence = await self.sessions.hello(device, device_time, model_sequence,
                                                            last_sequence)
        welcome = {"session": device.hex(), "server_sequence": sequence,
                   "resume": resume.action if resume else "in_step",
                   "heartbeat_s": self.options.heartbeat_s,
                   "max_chunk_bytes": self.options.max_chunk_bytes, **rates}
        if key is not None:
            welcome["server_proof"] = protocol.server_proof(key, device, client_nonce,
                                                            server_nonce).hex()
        c.writer.write(protocol.encode(Message(MessageType.WELCOME, welcome)))
        self.status("connected", device=device.hex(), peer=c.peer, resume=welcome["resume"],
                    model_sequence=model_sequence, server_sequence=sequence)
        return device, resume, rates

    async def _authenticate(self, c: Connection, device: bytes, client_nonce: bytes,
                            server_nonce: bytes) -> bytes | None:
        """Challenge-response with the device key; unknown devices get a challenge too (and
        fail at AUTH), so a probe cannot tell which ids are enrolled."""
        if self.options.insecure:
            c.writer.write(protocol.encode(Message(MessageType.CHALLENGE, {"auth": "none"})))
            return None
        c.writer.write(protocol.encode(Message(MessageType.CHALLENGE,
                                               {"auth": "hmac-sha256",
                                                "nonce": server_nonce.hex()})))
        auth = await c.receive(self.options.handshake_timeout_s)
        if auth.kind != MessageType.AUTH:
            raise ProtocolError(f"expected AUTH, got {auth.kind.name}", "bad_type")
        proof = protocol.hex_bytes(auth.header, "proof", 32)
        key = self.registry.key(device) if self.registry else None
        expected = protocol.device_proof(key or os.urandom(32), device, client_nonce, server_nonce)
        if key is None or not hmac.compare_digest(proof, expected):
            raise ProtocolError("authentication failed: unknown device or wrong key",
                                "auth_failed")
        return key

    async def _session(self, device: bytes, key: bytes | None) -> SessionInfo:
        info = await self.sessions.open(device, key)
        if device not in self.opened:
            self.opened.add(device)
            self.status("session", device=device.hex(), sequence=info.sequence,
                        restored=info.restored)
        return info

    # ------------------------------------------------------------------------- streaming
    async def _stream(self, c: Connection, device: bytes, resume: ResumePacket | None,
                      rates: dict[str, Any]) -> None:
        writer_task = asyncio.ensure_future(c.write_loop())
        chunks: asyncio.Queue[Message] = asyncio.Queue(self.options.uplink_queue)
        ingest_task = asyncio.ensure_future(self._ingest_loop(c, device, chunks, rates))
        if resume is not None:
            self._send_resume(c, resume)
        try:
            while True:
                message = await self._next_message(c, writer_task, ingest_task)
                if message.kind == MessageType.FRAMES:
                    await chunks.put(message)  # waits when full: the device is throttled
                elif message.kind == MessageType.ACK:
                    self._on_ack(c, device, message.header)
                elif message.kind == MessageType.BYE:
                    self.status("bye", device=device.hex())
                    return
                elif message.kind == MessageType.HEARTBEAT:
                    c.send(Message(MessageType.HEARTBEAT, {}))  # keeps the device's reads alive
                else:
                    raise ProtocolError(f"unexpected {message.kind.name}", "bad_type")
        finally:
            writer_task.cancel()
            ingest_task.cancel()

    async def _next_message(self, c: Connection, *tasks: asyncio.Future) -> Message:
        receive = asyncio.ensure_future(c.receive(self.options.read_timeout_s))
        receive.add_done_callback(lambda f: f.cancelled() or f.exception())  # seen, not lost
        closed = asyncio.ensure_future(c.closed.wait())
        done, _ = await asyncio.wait([receive, closed, *tasks],
                                     return_when=asyncio.FIRST_COMPLETED)
        closed.cancel()
        if receive in done:
            return receive.result()
        receive.cancel()
        for task in tasks:
            if task in done and task.exception() is not None:
                error = task.exception()
                if isinstance(error, ProtocolError):
                    raise error
                raise ProtocolError(f"the device is too slow or gone: {error!r}", "slow")
        raise ProtocolError("the device is too slow: its outgoing queue filled", "slow")

    async def _ingest_loop(self, c: Connection, device: bytes, chunks: asyncio.Queue[Message],
                           sent_rates: dict[str, Any]) -> None:
        while True:
            message = await chunks.get()
            h = message.header
            times = protocol.field_of(h, "times_s", list)
            if len(times) > protocol.DEFAULT_MAX_FRAMES_PER_CHUNK or not all(
                    isinstance(t, (int, float)) and not isinstance(t, bool) for t in times):
                raise ProtocolError("times_s must be up to 512 numbers", "malformed")
            sizes = h.get("jpeg_sizes")
            if sizes is not None and not (isinstance(sizes, list) and all(
                    isinstance(s, int) and not isinstance(s, bool) for s in sizes)):
                raise ProtocolError("jpeg_sizes must be integers", "malformed")
            upload_time = float(protocol.field_of(h, "upload_time_s", (int, float)))
            ingested = await self.sessions.ingest(device, protocol.field_of(h, "codec", str),
                                                  message.body, [float(t) for t in times], sizes,
                                                  upload_time)
            self.status("frames", device=device.hex(), frames=len(times),
                        bytes=len(message.body), upload_time_s=upload_time, due=ingested.due)
            if ingested.due:
                self.trainer.request(device, upload_time)
            if ingested.rates != sent_rates:
                sent_rates = ingested.rates
                c.send(Message(MessageType.RATE, sent_rates))

    def _deliver(self, device: bytes, outcome: PhaseOutcome, boundary_s: float) -> None:
        connection = self.connections.get(device)
        self.status("trained", device=device.hex(), sequence=outcome.sequence,
                    values=outcome.values, bytes=len(outcome.packet),
                    loss_before=round(outcome.loss_before, 5),
                    loss_after=round(outcome.loss_after, 5),
                    train_wall_s=round(outcome.train_wall_s, 4),
                    slot=str(self.sessions.slot(device)), connected=connection is not None)
        if connection is not None:
            connection.send(Message(MessageType.UPDATE, {
                "sequence": outcome.sequence, "kind": "update", "mode": "cumulative",
                "values": outcome.values, "loss_before": outcome.loss_before,
                "loss_after": outcome.loss_after, "boundary_s": boundary_s,
                "train_wall_s": outcome.train_wall_s}, outcome.packet))

    @staticmethod
    def _send_resume(c: Connection, resume: ResumePacket) -> None:
        c.send(Message(MessageType.UPDATE, {"sequence": resume.sequence, "kind": resume.action,
                                            "mode": resume.mode, "values": resume.values},
                       resume.packet))

    def _moved(self, device: bytes, resume: ResumePacket) -> None:
        """A session that moved trainers is not where the device's model is: bring it back."""
        connection = self.connections.get(device)
        if connection is not None:
            self._send_resume(connection, resume)

    def _on_ack(self, c: Connection, device: bytes, header: dict[str, Any]) -> None:
        sequence = protocol.field_of(header, "sequence", int)
        status = protocol.field_of(header, "status", str)
        self.status("ack", device=device.hex(), sequence=sequence, status=status,
                    reason=header.get("reason"), apply_us=header.get("apply_us"),
                    swapped_frame=header.get("swapped_frame"))
        if status == "rejected" and header.get("reason") in ("replay", "resync_needed"):
            # The device's engine is not where the server thinks: bring it back with a resync.
            last = protocol.field_of(header, "last_sequence", int)
            asyncio.ensure_future(self._resync(c, device, last))

    async def _resync(self, c: Connection, device: bytes, last_sequence: int) -> None:
        self._send_resume(c, await self.sessions.resync(device, last_sequence))


def serve(sessions: Sessions, options: ServeOptions, as_json: bool) -> int:
    """Runs until SIGINT/SIGTERM; the caller checked that a secure server has a state folder."""
    asyncio.run(LiveServer(sessions, options, StatusLog(as_json)).run())
    return 0
