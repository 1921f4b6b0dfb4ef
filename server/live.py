"""`mobdistill serve`: the AMS server as a network service (docs/protocol.md).

An asyncio front end owns the connections; decoding and labelling uplink chunks run in one
ingest thread (the teacher is used from it only), training phases in a pool of trainer threads
fed round-robin over the devices that are due (AMS §3: one trainer serves several devices in
turn). Network I/O never waits on either. Per connection: handshake and read deadlines, a
bounded uplink queue (a full queue stops reading from that device: TCP back-pressure), a
bounded outgoing queue with a write deadline (a device that does not read is dropped and
catches up when it returns). One device's fault never touches another's connection.
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
from typing import Any, Callable

from mobdistill.contract import protocol
from mobdistill.contract.protocol import Limits, Message, MessageType, ProtocolError
from mobdistill.server.live_session import LiveSession, ResumePacket
from mobdistill.server.live_store import DeviceRegistry, session_path
from mobdistill.server.session import Session, UpdateResult

log = logging.getLogger(__name__)
SessionFactory = Callable[[bytes, bytes | None], Session]  # (device id, key or None) -> Session


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


class RoundRobinTrainer:
    """Due devices are trained in turn, starting after the one served last; at most one phase
    per device at a time, up to ``workers`` devices at once."""

    def __init__(self, pool: ThreadPoolExecutor, workers: int,
                 deliver: Callable[[LiveSession, UpdateResult, float, float], None],
                 ) -> None:
        self.pool, self.deliver = pool, deliver
        self.order: list[bytes] = []
        self.pending: dict[bytes, tuple[LiveSession, float]] = {}
        self.busy: set[bytes] = set()
        self.last_served = -1
        self.wakeup = asyncio.Event()
        self.tasks = [asyncio.ensure_future(self._work()) for _ in range(workers)]

    def request(self, live: LiveSession, device_time_s: float) -> None:
        if live.device_id not in self.order:
            self.order.append(live.device_id)
        self.pending[live.device_id] = (live, device_time_s)
        self.wakeup.set()

    def _next(self) -> bytes | None:
        n = len(self.order)
        for k in range(1, n + 1):
            candidate = self.order[(self.last_served + k) % n]
            if candidate in self.pending and candidate not in self.busy:
                self.last_served = (self.last_served + k) % n
                return candidate
        return None

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            device = self._next()
            if device is None:
                self.wakeup.clear()
                await self.wakeup.wait()
                continue
            live, when = self.pending.pop(device)
            self.busy.add(device)
            try:
                outcome = await loop.run_in_executor(self.pool, live.train, when)
            except Exception:  # a failed phase must not stop the trainer for other devices
                log.exception("training device %s failed", device.hex())
                outcome = None
            finally:
                self.busy.discard(device)
                self.wakeup.set()
            if outcome is not None:
                self.deliver(live, outcome[0], when, outcome[1])

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


class LiveServer:
    def __init__(self, factory: SessionFactory, resolution: tuple[int, int],
                 options: ServeOptions, status: StatusLog) -> None:
        self.factory, self.resolution, self.options, self.status = (factory, resolution, options,
                                                                   status)
        state = options.state_dir
        self.registry = DeviceRegistry(state / "devices.json") if state else None
        self.sessions: dict[bytes, LiveSession] = {}
        self.connections: dict[bytes, Connection] = {}
        self.ingest_pool = ThreadPoolExecutor(1, thread_name_prefix="ingest")
        self.train_pool = ThreadPoolExecutor(options.workers, thread_name_prefix="train")
        self.stopping = asyncio.Event()

    # ------------------------------------------------------------------------- lifecycle
    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.stopping.set)
        self.trainer = RoundRobinTrainer(self.train_pool, self.options.workers, self._deliver)
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
        # Running phases finish (and persist) before the process exits.
        self.train_pool.shutdown(wait=True)
        self.ingest_pool.shutdown(wait=True, cancel_futures=True)
        self.status("stopped")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = Connection(reader, writer, self.options)
        device: bytes | None = None
        try:
            live, resume = await asyncio.wait_for(self._handshake(connection),
                                                  self.options.handshake_timeout_s)
            device = live.device_id
            previous = self.connections.pop(device, None)
            if previous is not None:  # the device reconnected: the old stream is dead
                previous.close()
            self.connections[device] = connection
            await self._stream(connection, live, resume)
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
    async def _handshake(self, c: Connection) -> tuple[LiveSession, ResumePacket | None]:
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
        live = await self._session(device, key)
        expected_model = live.session.space.base_sha256.hex()
        if protocol.field_of(hello.header, "base_sha256", str) != expected_model:
            raise ProtocolError("the device runs another model than this server trains "
                                "(base sha256 differs)", "wrong_model")
        model_sequence = protocol.field_of(hello.header, "model_sequence", int)
        last_sequence = protocol.field_of(hello.header, "last_sequence", int)
        live.align_clock(float(protocol.field_of(hello.header, "time_s", (int, float))))
        loop = asyncio.get_running_loop()
        resume = await loop.run_in_executor(self.train_pool, live.resume, model_sequence,
                                            last_sequence)
        welcome = {"session": device.hex(), "server_sequence": live.sequence,
                   "resume": resume.action if resume else "in_step",
                   "heartbeat_s": self.options.heartbeat_s,
                   "max_chunk_bytes": self.options.max_chunk_bytes, **live.rates()}
        if key is not None:
            welcome["server_proof"] = protocol.server_proof(key, device, client_nonce,
                                                            server_nonce).hex()
        c.writer.write(protocol.encode(Message(MessageType.WELCOME, welcome)))
        self.status("connected", device=device.hex(), peer=c.peer, resume=welcome["resume"],
                    model_sequence=model_sequence, server_sequence=live.sequence)
        return live, resume

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

    async def _session(self, device: bytes, key: bytes | None) -> LiveSession:
        if device not in self.sessions:
            state = session_path(self.options.state_dir, device) if self.options.state_dir else None
            loop = asyncio.get_running_loop()
            self.sessions[device] = await loop.run_in_executor(
                self.train_pool, lambda: LiveSession(self.factory(device, key), state))
            self.status("session", device=device.hex(), sequence=self.sessions[device].sequence,
                        restored=self.sessions[device].sequence > 0)
        return self.sessions[device]

    # ------------------------------------------------------------------------- streaming
    async def _stream(self, c: Connection, live: LiveSession, resume: ResumePacket | None) -> None:
        writer_task = asyncio.ensure_future(c.write_loop())
        chunks: asyncio.Queue[Message] = asyncio.Queue(self.options.uplink_queue)
        ingest_task = asyncio.ensure_future(self._ingest_loop(c, live, chunks))
        if resume is not None:
            self._send_update(c, live, resume.sequence, resume.packet, kind=resume.action,
                              mode=resume.mode, values=resume.values)
        try:
            while True:
                message = await self._next_message(c, writer_task, ingest_task)
                if message.kind == MessageType.FRAMES:
                    await chunks.put(message)  # waits when full: the device is throttled
                elif message.kind == MessageType.ACK:
                    self._on_ack(c, live, message.header)
                elif message.kind == MessageType.BYE:
                    self.status("bye", device=live.device_id.hex(), sequence=live.sequence)
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

    async def _ingest_loop(self, c: Connection, live: LiveSession,
                           chunks: asyncio.Queue[Message]) -> None:
        loop = asyncio.get_running_loop()
        sent_rates = live.rates()
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
            due = await loop.run_in_executor(
                self.ingest_pool, live.ingest, protocol.field_of(h, "codec", str), message.body,
                [float(t) for t in times], sizes, upload_time, self.resolution)
            self.status("frames", device=live.device_id.hex(), frames=len(times),
                        bytes=len(message.body), upload_time_s=upload_time, due=due)
            if due:
                self.trainer.request(live, upload_time)
            if (rates := live.rates()) != sent_rates:
                sent_rates = rates
                c.send(Message(MessageType.RATE, rates))

    def _deliver(self, live: LiveSession, result: UpdateResult, boundary_s: float,
                 train_wall_s: float) -> None:
        connection = self.connections.get(live.device_id)
        self.status("trained", device=live.device_id.hex(), sequence=result.sequence,
                    values=result.num_changed, bytes=len(result.packet),
                    loss_before=round(result.loss_before, 5),
                    loss_after=round(result.loss_after, 5), train_wall_s=round(train_wall_s, 4),
                    connected=connection is not None)
        if connection is not None:
            self._send_update(connection, live, result.sequence, result.packet, kind="update",
                              mode="cumulative", values=result.num_changed,
                              loss_before=result.loss_before, loss_after=result.loss_after,
                              boundary_s=boundary_s, train_wall_s=train_wall_s)

    def _send_update(self, c: Connection, live: LiveSession, sequence: int, packet: bytes,
                     **fields: Any) -> None:
        c.send(Message(MessageType.UPDATE, {"sequence": sequence, **fields}, packet))

    def _on_ack(self, c: Connection, live: LiveSession, header: dict[str, Any]) -> None:
        sequence = protocol.field_of(header, "sequence", int)
        status = protocol.field_of(header, "status", str)
        self.status("ack", device=live.device_id.hex(), sequence=sequence, status=status,
                    reason=header.get("reason"), apply_us=header.get("apply_us"),
                    swapped_frame=header.get("swapped_frame"))
        if status == "rejected" and header.get("reason") in ("replay", "resync_needed"):
            # The device's engine is not where the server thinks: bring it back with a resync.
            last = protocol.field_of(header, "last_sequence", int)
            asyncio.ensure_future(self._resync(c, live, last))

    async def _resync(self, c: Connection, live: LiveSession, last_sequence: int) -> None:
        loop = asyncio.get_running_loop()
        resume = await loop.run_in_executor(self.train_pool, live.resync, last_sequence)
        self._send_update(c, live, resume.sequence, resume.packet, kind=resume.action,
                          mode=resume.mode, values=resume.values)


def serve(factory: SessionFactory, resolution: tuple[int, int], options: ServeOptions,
          as_json: bool) -> int:
    """Runs until SIGINT/SIGTERM; the caller checked that a secure server has a state folder."""
    asyncio.run(LiveServer(factory, resolution, options, StatusLog(as_json)).run())
    return 0
