"""The live device protocol (docs/protocol.md): how a device and `mobdistill serve` talk over one
TCP connection (optionally TLS). Both sides import this module; nothing here needs more than a
byte stream, so a Kotlin client over `java.net.Socket` + `DataInputStream` implements it as is.

Connection: each side first sends the 6-byte preface ``MDLV`` + u16 version (big-endian). Then
frames, each ``u32 length | u8 type | u32 header_length | header (UTF-8 JSON object) | body``,
big-endian, ``length`` counting everything after itself. Sizes are checked against per-type
limits *before* anything is allocated; a frame that breaks a limit is refused and the
connection is closed.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import socket
import struct
from dataclasses import dataclass, field
from typing import Any

MAGIC = b"MDLV"
VERSION = 1
PREFACE = MAGIC + struct.pack(">H", VERSION)
FRAME_HEAD = struct.Struct(">IBI")  # length (after itself), type, header length
MAX_HEADER_BYTES = 64 * 1024
MAX_CONTROL_BYTES = MAX_HEADER_BYTES + FRAME_HEAD.size
DEFAULT_MAX_CHUNK_BYTES = 8 * 1024 * 1024  # one uplink chunk (the server may announce less)
DEFAULT_MAX_FRAMES_PER_CHUNK = 512
NONCE_BYTES = 16
_DEVICE_LABEL = b"mobdistill-live/1 device"
_SERVER_LABEL = b"mobdistill-live/1 server"


class MessageType(enum.IntEnum):
    HELLO = 1  # device -> server: who I am, what I run, how far my model is
    CHALLENGE = 2  # server -> device: a nonce to answer with the device key
    AUTH = 3  # device -> server: HMAC over both nonces
    WELCOME = 4  # server -> device: server proof, rates, what resuming needs
    FRAMES = 5  # device -> server: one uplink chunk (H.264 or JPEG) with capture times
    RATE = 6  # server -> device: ASR sampling rate, ATR upload interval, hibernation
    UPDATE = 7  # server -> device: one MDUP v2 packet
    ACK = 8  # device -> server: applied or rejected, with timings and the swap frame
    HEARTBEAT = 9  # either way: keeps an idle (hibernating) connection inside read deadlines
    ERROR = 10  # either way: code + message, then the sender closes
    BYE = 11  # device -> server: the stream ended


CLIENT_TYPES = {MessageType.HELLO, MessageType.AUTH, MessageType.FRAMES, MessageType.ACK,
                MessageType.HEARTBEAT, MessageType.ERROR, MessageType.BYE}
SERVER_TYPES = {MessageType.CHALLENGE, MessageType.WELCOME, MessageType.RATE, MessageType.UPDATE,
                MessageType.HEARTBEAT, MessageType.ERROR}


class ProtocolError(Exception):
    """The peer broke the protocol (or the connection ended mid-frame). ``code`` is sent back in
    an ERROR frame when the connection still allows it."""

    def __init__(self, message: str, code: str = "protocol") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Limits:
    """Largest body each message type may carry; everything else is control-sized."""

    max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES
    max_update_bytes: int = 64 * 1024 * 1024

    def max_length(self, kind: MessageType) -> int:
        body = {MessageType.FRAMES: self.max_chunk_bytes,
                MessageType.UPDATE: self.max_update_bytes}.get(kind, 0)
        return FRAME_HEAD.size - 4 + MAX_HEADER_BYTES + body


@dataclass
class Message:
    kind: MessageType
    header: dict[str, Any] = field(default_factory=dict)
    body: bytes = b""


def encode(message: Message) -> bytes:
    header = json.dumps(message.header, separators=(",", ":")).encode()
    if len(header) > MAX_HEADER_BYTES:
        raise ProtocolError(f"{message.kind.name} header of {len(header)} B exceeds "
                            f"{MAX_HEADER_BYTES} B", "too_large")
    length = FRAME_HEAD.size - 4 + len(header) + len(message.body)
    return FRAME_HEAD.pack(length, int(message.kind), len(header)) + header + message.body


def parse_head(head: bytes, allowed: set[MessageType], limits: Limits) -> tuple[MessageType, int,
                                                                                int]:
    """(type, header length, body length) from the 9 head bytes, every bound checked."""
    length, raw_type, header_len = FRAME_HEAD.unpack(head)
    try:
        kind = MessageType(raw_type)
    except ValueError:
        raise ProtocolError(f"unknown message type {raw_type}", "bad_type") from None
    if kind not in allowed:
        raise ProtocolError(f"{kind.name} is not sent in this direction", "bad_type")
    if length > limits.max_length(kind):
        raise ProtocolError(f"{kind.name} of {length} B exceeds its limit "
                            f"{limits.max_length(kind)} B", "too_large")
    body_len = length - (FRAME_HEAD.size - 4) - header_len
    if header_len > MAX_HEADER_BYTES or body_len < 0:
        raise ProtocolError(f"{kind.name}: header length {header_len} does not fit the frame "
                            f"of {length} B", "malformed")
    return kind, header_len, body_len


def parse_header(kind: MessageType, raw: bytes) -> dict[str, Any]:
    try:
        header = json.loads(raw.decode("utf-8")) if raw else {}
    except (UnicodeDecodeError, ValueError) as err:
        raise ProtocolError(f"{kind.name}: header is not UTF-8 JSON ({err})", "malformed") from None
    if not isinstance(header, dict):
        raise ProtocolError(f"{kind.name}: header must be a JSON object", "malformed")
    return header


def check_preface(data: bytes) -> None:
    if data[:4] != MAGIC:
        raise ProtocolError("not a mobdistill live peer (bad preface)", "bad_preface")
    version = struct.unpack(">H", data[4:6])[0]
    if version != VERSION:
        raise ProtocolError(f"protocol version {version}, this side speaks {VERSION}",
                            "unsupported_version")


def field_of(header: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    """A required header field of the given JSON type (bool is not accepted as a number)."""
    value = header.get(name)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ProtocolError(f"header field {name!r} missing or not {kind}", "malformed")
    return value


# ----------------------------------------------------------------------------- authentication
def device_proof(key: bytes, device_id: bytes, client_nonce: bytes, server_nonce: bytes) -> bytes:
    """What the device sends in AUTH: proves it holds the device key, bound to this connection."""
    return hmac.new(key, _DEVICE_LABEL + device_id + client_nonce + server_nonce,
                    hashlib.sha256).digest()


def server_proof(key: bytes, device_id: bytes, client_nonce: bytes, server_nonce: bytes) -> bytes:
    """What the server sends in WELCOME: proves to the device that the server holds its key."""
    return hmac.new(key, _SERVER_LABEL + device_id + server_nonce + client_nonce,
                    hashlib.sha256).digest()


def hex_bytes(header: dict[str, Any], name: str, size: int) -> bytes:
    try:
        value = bytes.fromhex(field_of(header, name, str))
    except ValueError:
        raise ProtocolError(f"header field {name!r} is not hex", "malformed") from None
    if len(value) != size:
        raise ProtocolError(f"header field {name!r} must be {size} bytes", "malformed")
    return value


# ----------------------------------------------------------------------------- blocking I/O
class BlockingChannel:
    """Frames over a connected (TLS or plain) blocking socket, for clients. Each read has the
    socket's timeout as its deadline; writes are serialized by the caller."""

    def __init__(self, sock: socket.socket, limits: Limits = Limits()) -> None:
        self.sock, self.limits = sock, limits

    def handshake_preface(self) -> None:
        self.sock.sendall(PREFACE)
        check_preface(self.read_exactly(len(PREFACE)))

    def read_exactly(self, n: int) -> bytes:
        chunks, got = [], 0
        while got < n:
            chunk = self.sock.recv(min(n - got, 1 << 20))
            if not chunk:
                raise ProtocolError("the peer closed the connection", "closed")
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def receive(self, allowed: set[MessageType] = SERVER_TYPES) -> Message:
        kind, header_len, body_len = parse_head(self.read_exactly(FRAME_HEAD.size), allowed,
                                                self.limits)
        header = parse_header(kind, self.read_exactly(header_len))
        return Message(kind, header, self.read_exactly(body_len))

    def send(self, message: Message) -> None:
        self.sock.sendall(encode(message))
