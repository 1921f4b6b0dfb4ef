"""A device-side ADB peer on 127.0.0.1: what adbd does on a phone, for tests.

It speaks the real ADB wire protocol (24-byte little-endian headers, CNXN/AUTH/OPEN/OKAY/WRTE/CLSE)
so that `adb_shell` and Debian's real `adb` client can both talk to it over TCP, like
`adb connect HOST:PORT` to a phone with wireless debugging.

- Auth modes: "none" (no AUTH, like ro.adb.secure=0), "keys" (accepts a SIGNATURE made by one of
  `trusted_keys`; an unknown RSAPUBLICKEY leaves the "Allow USB debugging?" prompt unanswered),
  "auto" (the user taps Allow: any RSAPUBLICKEY is trusted from then on), "never" (every
  signature is rejected and the prompt is never answered: an unauthorized phone).
- Services: `shell:`/`exec:` run the command with /bin/sh inside a sandbox directory that stands
  in for the device filesystem (`/data/local/tmp`, `/sdcard`, `/data/app` and `/data/user/0` map
  into it, textually, in both the command and its output; `getprop` answers from `props`; `pm`,
  `am`, `run-as`, `dumpsys package`, `logcat` and `pidof` are the Android framework stand-ins of
  android_framework.py, with the benchmark run by the real engine core), and `sync:` with
  STAT/LIST/SEND/RECV/DATA/DONE/OKAY/FAIL/QUIT (legacy v1 file sync).
- One WRTE in flight per stream (the device waits for OKAY), as adbd does without delayed acks.
- Fault knobs (`Faults`): drop the connection after N pushed bytes, stop acknowledging a push
  after N bytes (a stalled transfer), stop answering altogether, and `revoke()` (the user revokes
  USB debugging authorizations: connections are kicked and re-auth never succeeds).

Everything is bounded: threads are daemons, sockets poll with short timeouts, `stop()` joins.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

A_VERSION_MIN = 0x01000000  # checksums on every payload
A_VERSION_SKIP_CHECKSUM = 0x01000001
AUTH_TOKEN, AUTH_SIGNATURE, AUTH_RSAPUBLICKEY = 1, 2, 3
PEER_MAXDATA = 256 * 1024
SYNC_DATA_MAX = 64 * 1024
POLL_S = 0.2

DEFAULT_PROPS = {
    "ro.product.cpu.abi": "x86_64",
    "ro.product.cpu.abilist": "x86_64,arm64-v8a",
    "ro.product.model": "Peer Phone 1",
    "ro.product.manufacturer": "mobdistill",
    "ro.product.name": "peer",
    "ro.product.device": "peer",
    "ro.build.version.release": "14",
    "ro.build.version.sdk": "34",
    "ro.soc.manufacturer": "Loopback",
    "ro.soc.model": "LB1000",
    "ro.board.platform": "loopback",
    "ro.hardware": "peer",
}

MAPPED_PREFIXES = ("/data/local/tmp", "/sdcard", "/data/app", "/data/user/0")
FRAMEWORK_TOOLS = ("pm", "am", "run-as", "dumpsys", "logcat", "pidof")  # android_framework.py

GETPROP_SH = """#!/bin/sh
if [ $# -eq 0 ]; then cat "$PEER_PROPS"; exit 0; fi
sed -n "s|^\\[$1\\]: \\[\\(.*\\)\\]\\$|\\1|p" "$PEER_PROPS"
"""
TOYBOX_SH = """#!/bin/sh
tool=$1; shift
exec "/usr/bin/$tool" "$@"
"""
FRAMEWORK_SH = """#!/bin/sh
exec "$PEER_PYTHON" -I -S "$PEER_FRAMEWORK" {tool} "$@"
"""
MISSING_SH = """#!/bin/sh
echo "/system/bin/sh: $(basename "$0"): inaccessible or not found" >&2
exit 127
"""


def _wire(cmd: bytes) -> int:
    return struct.unpack("<I", cmd)[0]


def pack_message(cmd: bytes, arg0: int, arg1: int, data: bytes = b"") -> bytes:
    """One ADB message: header (command, arg0, arg1, length, checksum, magic) + payload."""
    word = _wire(cmd)
    header = struct.pack(
        "<6I", word, arg0, arg1, len(data), sum(data) & 0xFFFFFFFF, word ^ 0xFFFFFFFF
    )
    return header + data


def parse_adb_public_key(blob: bytes) -> tuple[int, int]:
    """(modulus, exponent) from Android's RSAPublicKey struct, base64 + ' user@host'."""
    raw = base64.b64decode(blob.split(b"\0")[0].split()[0])
    words = struct.unpack_from("<I", raw, 0)[0]
    modulus = int.from_bytes(raw[8 : 8 + 4 * words], "little")
    exponent = struct.unpack_from("<I", raw, 8 + 8 * words)[0]
    return modulus, exponent


def verify_token_signature(public_key: bytes, token: bytes, signature: bytes) -> bool:
    """adb signs the 20-byte token as if it were a SHA-1 digest (PKCS#1 v1.5)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

    try:
        modulus, exponent = parse_adb_public_key(public_key)
        key = rsa.RSAPublicNumbers(exponent, modulus).public_key()
        key.verify(signature, token, padding.PKCS1v15(), utils.Prehashed(hashes.SHA1()))
    except (InvalidSignature, ValueError, struct.error):
        return False
    return True


@dataclass
class Faults:
    """Fault injection. The push knobs are one-shot: they reset when they fire."""

    drop_push_after_bytes: int | None = None
    stall_push_after_bytes: int | None = None
    keep_partial_on_drop: bool = False  # adbd unlinks a failed SEND; False mimics that
    stall: bool = False  # read and ignore everything (a wedged transport)
    fired: list[str] = field(default_factory=list)


class _Closed(Exception):
    """The stream or connection went away."""


class _Stream:
    """One logical stream (OPEN ... CLSE) of a connection, device side."""

    def __init__(self, conn: _Connection, local_id: int, remote_id: int) -> None:
        self.conn, self.local_id, self.remote_id = conn, local_id, remote_id
        self._inbox = bytearray()
        self._cond = threading.Condition()
        self._acked = threading.Event()
        self.closed = threading.Event()
        self.mute = False  # stall: stop acknowledging the host's WRTEs

    def deliver(self, data: bytes) -> None:
        with self._cond:
            self._inbox += data
            self._cond.notify_all()

    def ack(self) -> None:
        self._acked.set()

    def close_local(self) -> None:
        self.closed.set()
        with self._cond:
            self._cond.notify_all()
        self._acked.set()

    def read_exact(self, size: int) -> bytes:
        deadline = time.monotonic() + self.conn.peer.io_timeout_s
        with self._cond:
            while len(self._inbox) < size:
                if self.closed.is_set() or time.monotonic() > deadline:
                    raise _Closed()
                self._cond.wait(POLL_S)
            data = bytes(self._inbox[:size])
            del self._inbox[:size]
            return data

    def write(self, data: bytes) -> None:
        chunk = min(self.conn.max_payload, PEER_MAXDATA)
        for start in range(0, len(data), chunk):
            self._acked.clear()
            if self.closed.is_set():
                raise _Closed()
            self.conn.send(b"WRTE", self.local_id, self.remote_id, data[start : start + chunk])
            if not self._acked.wait(self.conn.peer.io_timeout_s) or self.closed.is_set():
                raise _Closed()

    def finish(self) -> None:
        """Device-initiated close (the service ended)."""
        if not self.closed.is_set():
            self.closed.set()
            self.conn.send(b"CLSE", self.local_id, self.remote_id)


class _Connection:
    """One host connection: handshake, packet dispatch, services on their own threads."""

    def __init__(self, peer: AdbPeer, sock: socket.socket) -> None:
        self.peer, self.sock = peer, sock
        self.sock.settimeout(POLL_S)
        self._send_lock = threading.Lock()
        self.streams: dict[int, _Stream] = {}
        self._next_id = 1
        self.online = False
        self.version = A_VERSION_MIN
        self.max_payload = 4096
        self._token = b""
        self.alive = True

    # -- wire ------------------------------------------------------------------------------
    def send(self, cmd: bytes, arg0: int, arg1: int, data: bytes = b"") -> None:
        with self._send_lock:
            try:
                self.sock.sendall(pack_message(cmd, arg0, arg1, data))
            except OSError as err:
                self.kill()
                raise _Closed() from err

    def _recv_exact(self, size: int) -> bytes:
        buf = bytearray()
        while len(buf) < size:
            if not self.alive or self.peer.stopping.is_set():
                raise _Closed()
            try:
                part = self.sock.recv(size - len(buf))
            except TimeoutError:
                continue
            except OSError as err:
                raise _Closed() from err
            if not part:
                raise _Closed()
            buf += part
        return bytes(buf)

    def _read_message(self) -> tuple[bytes, int, int, bytes]:
        word, arg0, arg1, length, check, magic = struct.unpack("<6I", self._recv_exact(24))
        cmd = struct.pack("<I", word)
        if magic != word ^ 0xFFFFFFFF or length > 4 * 1024 * 1024:
            raise _Closed()
        data = self._recv_exact(length) if length else b""
        if self.version == A_VERSION_MIN and self.online and check != sum(data) & 0xFFFFFFFF:
            raise _Closed()
        return cmd, arg0, arg1, data

    def kill(self) -> None:
        """Drop the connection abruptly (cable pulled, adbd restarted)."""
        self.alive = False
        for stream in list(self.streams.values()):
            stream.close_local()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    # -- main loop -------------------------------------------------------------------------
    def serve(self) -> None:
        try:
            while self.alive:
                cmd, arg0, arg1, data = self._read_message()
                if self.peer.faults.stall:
                    continue
                self._dispatch(cmd, arg0, arg1, data)
        except _Closed:
            pass
        finally:
            self.kill()
            self.peer._forget(self)

    def _dispatch(self, cmd: bytes, arg0: int, arg1: int, data: bytes) -> None:
        if cmd == b"CNXN":
            self._on_cnxn(arg0, arg1)
        elif cmd == b"AUTH":
            self._on_auth(arg0, data)
        elif not self.online:
            return  # adbd ignores everything before the handshake completes
        elif cmd == b"OPEN":
            self._on_open(arg0, data)
        elif cmd == b"WRTE":
            stream = self.streams.get(arg1)
            if stream is None:
                self.send(b"CLSE", 0, arg0)
            elif not stream.mute:
                stream.deliver(data)
                self.send(b"OKAY", stream.local_id, stream.remote_id)
        elif cmd == b"OKAY":
            stream = self.streams.get(arg1)
            if stream is not None:
                stream.ack()
        elif cmd == b"CLSE":
            stream = self.streams.pop(arg1, None)
            if stream is not None and not stream.closed.is_set():
                stream.close_local()
                self.send(b"CLSE", stream.local_id, stream.remote_id)

    def _on_cnxn(self, version: int, maxdata: int) -> None:
        self.version = min(version, A_VERSION_SKIP_CHECKSUM)
        self.max_payload = max(min(maxdata, PEER_MAXDATA), 4096)
        if self.peer.auth == "none":
            self._go_online()
        else:
            self._send_token()

    def _send_token(self) -> None:
        self._token = os.urandom(20)
        self.send(b"AUTH", AUTH_TOKEN, 0, self._token)

    def _on_auth(self, kind: int, data: bytes) -> None:
        mode = self.peer.auth
        if kind == AUTH_SIGNATURE:
            trusted = mode in ("keys", "auto") and any(
                verify_token_signature(key, self._token, data) for key in self.peer.trusted_keys
            )
            self._go_online() if trusted else self._send_token()
        elif kind == AUTH_RSAPUBLICKEY:
            self.peer.prompts.append(data.rstrip(b"\0"))
            if mode == "auto":
                self.peer.trust(data)
                self._go_online()
            # "keys" / "never": the prompt on the phone stays unanswered

    def _go_online(self) -> None:
        self.online = True
        props = self.peer.props
        banner = (
            f"device::ro.product.name={props['ro.product.name']};"
            f"ro.product.model={props['ro.product.model']};"
            f"ro.product.device={props['ro.product.device']};features=cmd\0"
        )
        self.send(b"CNXN", self.version, PEER_MAXDATA, banner.encode())

    def _on_open(self, remote_id: int, data: bytes) -> None:
        destination = data.rstrip(b"\0").decode(errors="replace")
        service = _service_for(destination)
        if service is None:
            self.send(b"CLSE", 0, remote_id)  # unknown service: adbd refuses the OPEN
            return
        local_id = self._next_id
        self._next_id += 1
        stream = _Stream(self, local_id, remote_id)
        self.streams[local_id] = stream
        self.send(b"OKAY", local_id, remote_id)
        runner = threading.Thread(
            target=self._run_service, args=(service, destination, stream), daemon=True
        )
        runner.start()

    def _run_service(self, service, destination: str, stream: _Stream) -> None:
        try:
            service(self.peer, stream, destination.split(":", 1)[1])
            stream.finish()
        except _Closed:
            pass
        finally:
            self.streams.pop(stream.local_id, None)


def _service_for(destination: str):
    name = destination.split(":", 1)[0]
    if name in ("shell", "exec") and ":" in destination:
        return _shell_service
    if name == "sync":
        return _sync_service
    return None


# -- shell ---------------------------------------------------------------------------------
def _shell_service(peer: AdbPeer, stream: _Stream, command: str) -> None:
    if not command.strip():
        stream.write(b"interactive shells are not supported by the test peer\n")
        return
    proc = subprocess.Popen(
        ["/bin/sh", "-c", peer.to_host_text(command)],
        cwd=peer.root,
        env=peer.shell_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    watcher = threading.Thread(target=_kill_on_close, args=(proc, stream), daemon=True)
    watcher.start()
    try:
        assert proc.stdout is not None
        for chunk in iter(lambda: os.read(proc.stdout.fileno(), 65536), b""):
            stream.write(peer.to_device_text(chunk))
    finally:
        proc.stdout.close()
        _kill_group(proc)
        proc.wait(timeout=5)


def _kill_on_close(proc: subprocess.Popen, stream: _Stream) -> None:
    while proc.poll() is None:
        if stream.closed.wait(POLL_S):
            _kill_group(proc)
            return


def _kill_group(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# -- sync ----------------------------------------------------------------------------------
def _sync_reply(kind: bytes, *words: int, data: bytes = b"") -> bytes:
    return kind + struct.pack(f"<{len(words)}I", *words) + data


def _sync_service(peer: AdbPeer, stream: _Stream, _: str) -> None:
    while True:
        kind, size = struct.unpack("<4sI", stream.read_exact(8))
        if kind == b"QUIT":
            return
        if kind not in (b"STAT", b"LIST", b"SEND", b"RECV") or size > 1024:
            stream.write(_sync_reply(b"FAIL", 20, data=b"unknown sync request"))
            return
        path = stream.read_exact(size).decode(errors="replace")
        handler = {b"STAT": _sync_stat, b"LIST": _sync_list, b"SEND": _sync_send,
                   b"RECV": _sync_recv}[kind]
        handler(peer, stream, path)


def _sync_fail(stream: _Stream, message: str) -> None:
    text = message.encode()
    stream.write(_sync_reply(b"FAIL", len(text), data=text))


def _sync_stat(peer: AdbPeer, stream: _Stream, path: str) -> None:
    host = peer.host_path(path)
    try:
        info = os.stat(host) if host else None
    except OSError:
        info = None
    if info is None:
        stream.write(_sync_reply(b"STAT", 0, 0, 0))
    else:
        size = info.st_size & 0xFFFFFFFF
        stream.write(_sync_reply(b"STAT", info.st_mode, size, int(info.st_mtime)))


def _sync_list(peer: AdbPeer, stream: _Stream, path: str) -> None:
    host = peer.host_path(path)
    out = bytearray()
    if host and host.is_dir():
        for entry in sorted(os.scandir(host), key=lambda e: e.name):
            info = entry.stat(follow_symlinks=False)
            name = entry.name.encode()
            out += _sync_reply(b"DENT", info.st_mode, info.st_size & 0xFFFFFFFF,
                               int(info.st_mtime), len(name), data=name)
    out += _sync_reply(b"DONE", 0, 0, 0, 0)
    stream.write(bytes(out))


def _sync_recv(peer: AdbPeer, stream: _Stream, path: str) -> None:
    host = peer.host_path(path)
    if host is None or not host.is_file():
        _sync_fail(stream, f"remote object '{path}' does not exist")
        return
    with open(host, "rb") as handle:
        for block in iter(lambda: handle.read(SYNC_DATA_MAX), b""):
            stream.write(_sync_reply(b"DATA", len(block), data=block))
    stream.write(_sync_reply(b"DONE", 0))


def _sync_send(peer: AdbPeer, stream: _Stream, spec: str) -> None:
    path, _, mode_text = spec.rpartition(",")
    host = peer.host_path(path)
    mode = int(mode_text or "0") & 0o777 or 0o644
    error = None if host is not None else f"couldn't create file: {path}: Read-only file system"
    handle = None
    if host is not None:
        try:
            host.parent.mkdir(parents=True, exist_ok=True)
            handle = open(host, "wb")
        except OSError as err:
            error = f"couldn't create file: {err.strerror}"
    received = 0
    try:
        while True:
            kind, size = struct.unpack("<4sI", stream.read_exact(8))
            if kind == b"DONE":
                break
            if kind != b"DATA" or size > SYNC_DATA_MAX:
                raise _Closed()
            data = stream.read_exact(size)
            received += size
            _push_faults(peer, stream, received)
            if handle is not None:
                handle.write(data)
    except _Closed:
        if handle is not None:
            handle.close()
            if not peer.faults.keep_partial_on_drop:
                host.unlink(missing_ok=True)  # adbd removes a file whose SEND failed
        raise
    if handle is not None:
        handle.close()
        os.chmod(host, mode)
        os.utime(host, (size, size))  # DONE carries the mtime in its size field
    if error:
        _sync_fail(stream, error)
    else:
        stream.write(_sync_reply(b"OKAY", 0))


def _push_faults(peer: AdbPeer, stream: _Stream, received: int) -> None:
    faults = peer.faults
    if faults.drop_push_after_bytes is not None and received >= faults.drop_push_after_bytes:
        faults.drop_push_after_bytes = None
        faults.fired.append(f"drop@{received}")
        stream.conn.kill()
        raise _Closed()
    if faults.stall_push_after_bytes is not None and received >= faults.stall_push_after_bytes:
        faults.stall_push_after_bytes = None
        faults.fired.append(f"stall@{received}")
        stream.mute = True  # keep the stream open, acknowledge nothing more


# -- the peer ------------------------------------------------------------------------------
class AdbPeer:
    """A fake phone on 127.0.0.1:port. Use as a context manager or call start()/stop()."""

    def __init__(
        self,
        root: Path,
        *,
        auth: str = "auto",
        trusted_keys: tuple[bytes, ...] = (),
        props: dict[str, str] | None = None,
        hide_tools: tuple[str, ...] = (),
        io_timeout_s: float = 10.0,
    ) -> None:
        if auth not in ("none", "keys", "auto", "never"):
            raise ValueError(f"auth must be none, keys, auto or never, not {auth!r}")
        self.root = Path(root).resolve()
        self.auth = auth
        self.trusted_keys: list[bytes] = [k.rstrip(b"\0") for k in trusted_keys]
        self.props = {**DEFAULT_PROPS, **(props or {})}
        self.io_timeout_s = io_timeout_s
        self.faults = Faults()
        self.prompts: list[bytes] = []
        self.stopping = threading.Event()
        self._conns: list[_Connection] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._listener: socket.socket | None = None
        self._port = 0
        self._setup_sandbox(hide_tools)

    # -- filesystem ------------------------------------------------------------------------
    def _setup_sandbox(self, hide_tools: tuple[str, ...]) -> None:
        for prefix in MAPPED_PREFIXES:
            (self.root / prefix.lstrip("/")).mkdir(parents=True, exist_ok=True)
        bin_dir = self.root / "system" / "bin"
        bin_dir.mkdir(parents=True, exist_ok=True)
        scripts = {"getprop": GETPROP_SH, "toybox": TOYBOX_SH}
        scripts.update({tool: FRAMEWORK_SH.format(tool=tool) for tool in FRAMEWORK_TOOLS})
        scripts.update({tool: MISSING_SH for tool in hide_tools})
        for name, text in scripts.items():
            (bin_dir / name).write_text(text)
            (bin_dir / name).chmod(0o755)
        self._write_props()

    def _write_props(self) -> None:
        lines = "".join(f"[{k}]: [{v}]\n" for k, v in sorted(self.props.items()))
        (self.root / "props.txt").write_text(lines)

    def shell_env(self) -> dict[str, str]:
        return {
            "PATH": f"{self.root / 'system' / 'bin'}:/usr/bin:/bin",
            "PEER_PROPS": str(self.root / "props.txt"),
            "HOME": str(self.root / "data" / "local" / "tmp"),
            "TMPDIR": str(self.root / "data" / "local" / "tmp"),
            "LANG": "C.UTF-8",
            "PEER_ROOT": str(self.root),
            "PEER_PYTHON": sys.executable,
            "PEER_FRAMEWORK": str(Path(__file__).with_name("android_framework.py")),
        }

    def host_path(self, device_path: str) -> Path | None:
        """The sandbox file standing in for a device path, or None outside the mapped dirs."""
        clean = os.path.normpath("/" + device_path.lstrip("/"))
        for prefix in MAPPED_PREFIXES:
            if clean == prefix or clean.startswith(prefix + "/"):
                return self.root / clean.lstrip("/")
        return None

    def to_host_text(self, text: str) -> str:
        for prefix in MAPPED_PREFIXES:
            text = text.replace(prefix, str(self.root) + prefix)
        return text

    def to_device_text(self, data: bytes) -> bytes:
        root = str(self.root).encode()
        return data.replace(root + b"/", b"/").replace(root, b"/")

    # -- control ---------------------------------------------------------------------------
    @property
    def port(self) -> int:
        assert self._port, "call start() first"
        return self._port

    @property
    def serial(self) -> str:
        return f"127.0.0.1:{self.port}"

    def trust(self, public_key: bytes) -> None:
        self.trusted_keys.append(public_key.rstrip(b"\0"))

    def revoke(self) -> None:
        """Developer options > Revoke USB debugging authorizations: kick everyone, trust none."""
        self.auth = "never"
        self.trusted_keys.clear()
        self.disconnect_all()

    def disconnect_all(self) -> None:
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            conn.kill()

    def start(self) -> AdbPeer:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(POLL_S)
        self._port = self._listener.getsockname()[1]
        self._spawn(self._accept_loop)
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.disconnect_all()
        if self._listener is not None:
            self._listener.close()
        for thread in self._threads:
            thread.join(timeout=2)

    def __enter__(self) -> AdbPeer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self.stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn = _Connection(self, sock)
            with self._lock:
                self._conns.append(conn)
            self._spawn(conn.serve)

    def _forget(self, conn: _Connection) -> None:
        with self._lock:
            if conn in self._conns:
                self._conns.remove(conn)

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._conns)


def sandbox_file_mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def which_adb() -> str | None:
    return shutil.which("adb")
