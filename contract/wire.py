"""The sparse-update wire format (``MDUP`` version 2): pure pack/unpack, no I/O.

A packet carries new values for a few elements of a few float32 tensors of one deployed
``.tflite`` file, addressed in **deployed tensor space** (the manifest's ``tensor_index`` and the
flat index into the tensor's raw buffer), so the device only scatters. It is bound to one device
(a 16-byte id) and, with the per-device key, authenticated. Layout, all little-endian (the
normative description, with the threat model, is ``docs/wire-format.md``)::

    header   magic "MDUP" | version u8 = 2 | flags u8 | reserved u16 = 0 | base sha256 [32]
             | device id [16] | sequence u64 | tensor count u32 | stored payload length u32
             | raw payload length u32
    payload  (zlib-deflated when flag COMPRESSED) = records | index section | value section
             record: varint tensor_index, varint numel, varint count, u8 index coding,
                     u8 value coding, varint param bytes, varint index bytes, varint value bytes,
                     [param bytes]
    trailer  crc32 u32 of header + stored payload | [HMAC-SHA256 [32] of everything before it]

Every record states how many bytes its index and value data take, so a decoder bounds the whole
packet before it allocates anything, and a new coding extends version 2 (old decoders answer
``unsupported``) instead of needing version 3.
"""

from __future__ import annotations

import enum
import gzip
import hashlib
import hmac
import os
import struct
import zlib
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np

from mobdistill.errors import UpdateError

MAGIC = b"MDUP"
VERSION = 2
DEVICE_ID_BYTES = 16
HEADER = struct.Struct("<4sBBH32s16sQIII")  # 76 bytes
CRC_BYTES = 4
HMAC_BYTES = 32
MAX_TENSORS = 1 << 16
MAX_NUMEL = 1 << 40
MAX_VARINT_BYTES = 10
# A record header is at most 6 varints (10 bytes each) and 2 coding bytes; Q8 adds 8 bytes.
MAX_RECORD_OVERHEAD = 6 * MAX_VARINT_BYTES + 2 + 8

FLAG_CUMULATIVE = 0x01
FLAG_HMAC = 0x02
FLAG_COMPRESSED = 0x04
KNOWN_FLAGS = FLAG_CUMULATIVE | FLAG_HMAC | FLAG_COMPRESSED


class Mode(enum.IntEnum):
    """What the values replace: the pristine base model, or the previously patched model."""

    BASE_RELATIVE = 0
    CUMULATIVE = 1


class IndexCoding(enum.IntEnum):
    DELTA_VARINT = 0  # sorted indices, first absolute then (gap - 1), LEB128
    BITMAP = 1  # ceil(numel / 8) bytes, bit j of byte b = element 8b + j (LSB first)
    DENSE = 2  # every element, no index bytes


class ValueCoding(enum.IntEnum):
    F32 = 0
    F16 = 1  # IEEE half, byte-planed: all low bytes, then all high bytes
    Q8 = 2  # value = offset + scale * q, q in 0..255, per tensor (float32 arithmetic)
    # Additive: element += step * q, q a signed byte, per-tensor f32 step. Few levels are used
    # (the server quantizes deltas with error feedback); deflate entropy-codes the bytes.
    QDELTA = 3


VALUE_BYTES = {ValueCoding.F32: 4, ValueCoding.F16: 2, ValueCoding.Q8: 1, ValueCoding.QDELTA: 1}
PARAM_BYTES = {ValueCoding.F32: 0, ValueCoding.F16: 0, ValueCoding.Q8: 8, ValueCoding.QDELTA: 4}
# Element types a packet can patch (the manifest's parameter_map dtype) and their widths.
ELEMENT_BYTES = {"float32": 4, "float16": 2}


@dataclass(frozen=True)
class DecodeLimits:
    """What one packet may make a decoder hold, derived from the deployed model: no more elements
    than the model has, no larger payload than a dense float32 packet of every tensor."""

    max_elements: int
    max_raw_bytes: int

    @classmethod
    def for_numels(cls, numels: Iterable[int]) -> "DecodeLimits":
        numels = [int(n) for n in numels]
        raw = sum(MAX_RECORD_OVERHEAD + (n + 7) // 8 + 4 * n for n in numels)
        return cls(max_elements=sum(numels), max_raw_bytes=raw)

    @classmethod
    def for_table(cls, table: Mapping[int, "TensorLocation"]) -> "DecodeLimits":
        """From a tensor table (the manifest's parameter_map): float32 and float16 tensors."""
        return cls.for_numels(loc.buffer_size // ELEMENT_BYTES[loc.dtype]
                              for loc in table.values() if loc.dtype in ELEMENT_BYTES)

    def max_packet_bytes(self) -> int:
        """The largest packet on the wire these limits accept (C++ ``MaxPacketBytes``): deflate
        may expand incompressible data slightly. Transports refuse larger messages unread."""
        return (HEADER.size + self.max_raw_bytes + self.max_raw_bytes // 1024 + 64 + CRC_BYTES
                + HMAC_BYTES)


# For host tools that decode without a model at hand (the device always derives its limits).
HOST_LIMITS = DecodeLimits(max_elements=1 << 24, max_raw_bytes=64 << 20)


@dataclass
class TensorPatch:
    """New values for ``indices`` (flat, strictly increasing) of deployed tensor
    ``tensor_index`` — or, when ``additive``, amounts added to what the element holds.

    ``step`` is set for QDELTA patches only: ``values`` are then exactly ``float32(step * q)``
    for signed bytes ``q`` (what `delta_levels` returns and the device adds)."""

    tensor_index: int
    numel: int
    indices: np.ndarray  # int64 [count]
    values: np.ndarray  # float32 [count]
    additive: bool = False
    step: float | None = None


@dataclass
class UpdatePacket:
    sequence: int
    mode: Mode
    base_sha256: bytes
    tensors: list[TensorPatch] = field(default_factory=list)
    version: int = VERSION
    authenticated: bool = False
    device_id: bytes = bytes(DEVICE_ID_BYTES)


def new_device_id() -> bytes:
    """A fresh random 16-byte device/session id."""
    return os.urandom(DEVICE_ID_BYTES)


def new_key() -> bytes:
    """A fresh random 32-byte HMAC-SHA256 key (one per device)."""
    return os.urandom(32)


# ----------------------------------------------------------------------------- varints
def _varints(values: np.ndarray) -> bytes:
    out = bytearray()
    for v in values.tolist():
        while v >= 0x80:
            out.append((v & 0x7F) | 0x80)
            v >>= 7
        out.append(v)
    return bytes(out)


class _Reader:
    """Bounds-checked cursor; every overrun is a truncation error."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data, self.pos, self.what = data, 0, what

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int) -> bytes:
        if n < 0 or n > self.remaining():
            raise UpdateError(f"truncated {self.what}: need {n} bytes at offset {self.pos}, "
                              f"have {self.remaining()}; re-send the packet", "truncated")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def varint(self) -> int:
        """LEB128, at most 10 bytes, value < 2^64: the 10th byte must be 0 or 1 (the C++ rule)."""
        value = 0
        for i in range(MAX_VARINT_BYTES):
            byte = self.take(1)[0]
            if i == MAX_VARINT_BYTES - 1 and byte > 1:
                break
            value |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                return value
        raise UpdateError(f"malformed varint in {self.what} at offset {self.pos}", "malformed")


def _decode_varint_section(section: bytes, count: int, tensor_index: int) -> np.ndarray:
    """Exactly ``count`` LEB128 varints filling ``section``, vectorised (counts can be millions)."""
    b = np.frombuffer(section, np.uint8)
    ends = np.flatnonzero(b < 0x80)
    if ends.size != count or (count and ends[-1] != b.size - 1):
        raise UpdateError(f"tensor {tensor_index}: index bytes do not hold exactly {count} "
                          "varints", "malformed")
    if count == 0:
        return np.zeros(0, np.uint64)
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    if lengths.max() > MAX_VARINT_BYTES or np.any(b[ends[lengths == MAX_VARINT_BYTES]] > 1):
        raise UpdateError(f"tensor {tensor_index}: malformed varint in its indices", "malformed")
    position = np.arange(b.size) - np.repeat(starts, lengths)
    parts = (b & 0x7F).astype(np.uint64) << (7 * position).astype(np.uint64)
    return np.add.reduceat(parts, starts)


# ----------------------------------------------------------------------------- codings
def quantize_values(values: np.ndarray, coding: ValueCoding) -> np.ndarray:
    """The float32 values the device will hold after decoding ``values`` with ``coding``."""
    values = np.asarray(values, dtype=np.float32)
    if coding == ValueCoding.F32:
        return values.copy()
    if coding == ValueCoding.F16:
        return values.astype(np.float16).astype(np.float32)
    scale, offset, q = _q8_params(values)
    return _dequantize_q8(q, scale, offset)


def _q8_params(values: np.ndarray) -> tuple[np.float32, np.float32, np.ndarray]:
    lo = np.float32(values.min()) if values.size else np.float32(0)
    hi = np.float32(values.max()) if values.size else np.float32(0)
    scale = np.float32((np.float64(hi) - np.float64(lo)) / 255.0)
    if scale == 0:
        return np.float32(0), lo, np.zeros(values.shape, np.uint8)
    q = np.rint((values.astype(np.float64) - lo) / np.float64(scale))
    return scale, lo, np.clip(q, 0, 255).astype(np.uint8)


def _dequantize_q8(q: np.ndarray, scale: np.float32, offset: np.float32) -> np.ndarray:
    product = (np.float32(scale) * q.astype(np.float32)).astype(np.float32)
    return (np.float32(offset) + product).astype(np.float32)


def _encode_indices(indices: np.ndarray, numel: int) -> tuple[IndexCoding, bytes]:
    if indices.size == numel:
        return IndexCoding.DENSE, b""
    gaps = np.diff(indices, prepend=-1) - 1
    delta = _varints(gaps.astype(np.uint64))
    if len(delta) <= (numel + 7) // 8:
        return IndexCoding.DELTA_VARINT, delta
    mask = np.zeros(numel, dtype=bool)
    mask[indices] = True
    return IndexCoding.BITMAP, np.packbits(mask, bitorder="little").tobytes()


def dequantize_delta(q: np.ndarray, step: float) -> np.ndarray:
    """What the device adds for levels ``q`` (signed bytes) and ``step``: float32(step * q)."""
    with np.errstate(over="ignore"):  # an overflowing product is inf and refused as non_finite
        return (np.float32(step) * np.asarray(q).astype(np.float32)).astype(np.float32)


def delta_levels(patch: TensorPatch) -> np.ndarray:
    """The signed-byte levels of a QDELTA patch; its values must be exactly step * q."""
    if not patch.additive or patch.step is None or not np.isfinite(patch.step) \
            or patch.step <= 0:
        raise UpdateError(f"tensor {patch.tensor_index}: QDELTA needs an additive patch with a "
                          "positive finite step (server.error_feedback makes them)")
    values = np.asarray(patch.values, np.float32)
    q = np.rint(values.astype(np.float64) / np.float64(np.float32(patch.step)))
    if q.size and np.abs(q).max() > 127:
        raise UpdateError(f"tensor {patch.tensor_index}: QDELTA levels exceed ±127; raise the "
                          "step")
    q = q.astype(np.int8)
    if not np.array_equal(dequantize_delta(q, patch.step), values):
        raise UpdateError(f"tensor {patch.tensor_index}: QDELTA values are not multiples of "
                          "the step (use wire.dequantize_delta)")
    return q


def _encode_values(patch: TensorPatch, values: np.ndarray,
                   coding: ValueCoding) -> tuple[bytes, bytes]:
    """Returns (coding parameter bytes, value section bytes)."""
    if coding == ValueCoding.QDELTA:
        levels = delta_levels(patch)  # checks the step first
        return struct.pack("<f", patch.step), levels.tobytes()
    if patch.additive:
        raise UpdateError(f"tensor {patch.tensor_index}: additive patches travel as QDELTA only")
    if coding == ValueCoding.F32:
        return b"", values.astype("<f4").tobytes()
    if coding == ValueCoding.F16:
        planes = values.astype("<f2").view(np.uint8).reshape(-1, 2)
        return b"", planes[:, 0].tobytes() + planes[:, 1].tobytes()
    scale, offset, q = _q8_params(values)
    return struct.pack("<ff", scale, offset), q.tobytes()


def record_header(tensor_index: int, numel: int, count: int, index_coding: int,
                  value_coding: int, params: bytes, index_bytes: int, value_bytes: int) -> bytes:
    """One record as it appears in the payload (also used by tests to build hostile packets)."""
    head = _varints(np.array([tensor_index, numel, count], dtype=np.uint64))
    lengths = _varints(np.array([len(params), index_bytes, value_bytes], dtype=np.uint64))
    return head + bytes([index_coding, value_coding]) + lengths + params


def seal(header_fields: Sequence, stored: bytes, hmac_key: bytes | None) -> bytes:
    """Header + stored payload + CRC (+ HMAC): the envelope around a payload."""
    body = HEADER.pack(*header_fields) + stored
    body += struct.pack("<I", zlib.crc32(body))
    if hmac_key:
        body += hmac.new(hmac_key, body, hashlib.sha256).digest()
    return body


# ----------------------------------------------------------------------------- encoder
DEFLATE_CANDIDATES = ((8, zlib.Z_DEFAULT_STRATEGY), (9, zlib.Z_DEFAULT_STRATEGY),
                      (8, zlib.Z_FILTERED), (9, zlib.Z_FILTERED))  # (memLevel, strategy)


def _deflate_smallest(raw: bytes) -> bytes:
    """Level 9 with each (memLevel, strategy) candidate; the smallest zlib stream wins."""
    best = zlib.compress(raw, 9)
    for mem_level, strategy in DEFLATE_CANDIDATES:
        packer = zlib.compressobj(9, zlib.DEFLATED, 15, mem_level, strategy)
        candidate = packer.compress(raw) + packer.flush()
        if len(candidate) < len(best):
            best = candidate
    return best


def _check_patch(patch: TensorPatch) -> tuple[np.ndarray, np.ndarray]:
    idx = np.asarray(patch.indices, dtype=np.int64).ravel()
    val = np.asarray(patch.values, dtype=np.float32).ravel()
    if idx.shape != val.shape:
        raise UpdateError(f"tensor {patch.tensor_index}: {idx.size} indices but {val.size} values")
    if idx.size and (idx[0] < 0 or idx[-1] >= patch.numel or np.any(np.diff(idx) <= 0)):
        raise UpdateError(f"tensor {patch.tensor_index}: indices must be strictly increasing "
                          f"and inside [0, {patch.numel}); sort and deduplicate them")
    if not np.all(np.isfinite(val)):
        raise UpdateError(f"tensor {patch.tensor_index}: non-finite values; fix the training step")
    return idx, val


def encode_update(
    tensors: Iterable[TensorPatch],
    *,
    base_sha256: bytes,
    sequence: int,
    device_id: bytes,
    hmac_key: bytes | None,
    mode: Mode = Mode.CUMULATIVE,
    value_coding: ValueCoding = ValueCoding.F16,
    compress: bool = True,
    search_deflate: bool = False,
) -> bytes:
    """Packs ``tensors`` (sorted by tensor index on the way) into one packet for ``device_id``,
    authenticated with ``hmac_key`` (``None`` makes a packet only an insecure decoder accepts).
    ``value_coding`` QDELTA takes additive patches with a step (`delta_levels`); the others
    take replacement values.

    ``search_deflate`` also tries other deflate strategies and keeps the smallest stream: any
    valid zlib stream inflates the same, so every decoder reads it.
    """
    if len(base_sha256) != 32:
        raise UpdateError("base_sha256 must be the 32-byte digest of the deployed .tflite")
    if len(device_id) != DEVICE_ID_BYTES:
        raise UpdateError(f"device_id must be {DEVICE_ID_BYTES} bytes (wire.new_device_id())")
    if not 0 < sequence < 1 << 64:
        raise UpdateError(f"sequence {sequence} must be in [1, 2^64)")
    records, index_bytes, value_bytes = bytearray(), bytearray(), bytearray()
    patches = sorted(tensors, key=lambda p: p.tensor_index)
    if len({p.tensor_index for p in patches}) != len(patches):
        raise UpdateError("a tensor index appears twice; merge its patches first")
    for patch in patches:
        idx, val = _check_patch(patch)
        index_coding, idx_data = _encode_indices(idx, patch.numel)
        params, val_data = _encode_values(patch, val, value_coding)
        records += record_header(patch.tensor_index, patch.numel, idx.size, index_coding,
                                 value_coding, params, len(idx_data), len(val_data))
        index_bytes += idx_data
        value_bytes += val_data
    raw = bytes(records + index_bytes + value_bytes)
    stored = (_deflate_smallest(raw) if search_deflate else zlib.compress(raw, 9)) \
        if compress else raw
    flags = (FLAG_CUMULATIVE if mode == Mode.CUMULATIVE else 0) \
        | (FLAG_COMPRESSED if compress else 0) | (FLAG_HMAC if hmac_key else 0)
    return seal((MAGIC, VERSION, flags, 0, base_sha256, device_id, sequence, len(patches),
                 len(stored), len(raw)), stored, hmac_key)


# ----------------------------------------------------------------------------- decoder
def _check_envelope(data: bytes, expected_base_sha256: bytes | None, expected_device_id: bytes,
                    hmac_key: bytes | None, insecure: bool) -> tuple[tuple, bytes]:
    if len(data) < HEADER.size + CRC_BYTES:
        raise UpdateError(f"truncated packet: {len(data)} bytes is shorter than the "
                          f"{HEADER.size + CRC_BYTES}-byte header and checksum", "truncated")
    fields = HEADER.unpack_from(data)
    magic, version, flags, reserved = fields[:4]
    if magic != MAGIC:
        raise UpdateError(f"bad magic {magic!r}: this is not a mobdistill update packet",
                          "bad_magic")
    if version != VERSION:
        raise UpdateError(f"wire version {version} is not supported (this decoder reads "
                          f"{VERSION}); update the app or re-encode the packet", "bad_version")
    if flags & ~KNOWN_FLAGS or reserved:
        raise UpdateError(f"unknown flags 0x{flags:02x}/reserved {reserved}: written by a newer "
                          "encoder; update the app", "bad_version")
    stored_len = fields[8]
    end = HEADER.size + stored_len + CRC_BYTES + (HMAC_BYTES if flags & FLAG_HMAC else 0)
    if len(data) != end:
        raise UpdateError(f"packet is {len(data)} bytes but its header says {end}: truncated "
                          "or padded; re-send it", "truncated")
    crc_at = HEADER.size + stored_len
    (crc,) = struct.unpack_from("<I", data, crc_at)
    if zlib.crc32(data[:crc_at]) != crc:
        raise UpdateError("bad checksum: the packet was corrupted in transit; re-send it",
                          "bad_checksum")
    _check_hmac(data, flags, crc_at + CRC_BYTES, hmac_key, insecure)
    if fields[5] != expected_device_id:
        raise UpdateError(f"wrong device: packet is for device {fields[5].hex()}, this is "
                          f"{expected_device_id.hex()}", "wrong_device")
    if expected_base_sha256 is not None and fields[4] != expected_base_sha256:
        raise UpdateError(f"base-model mismatch: packet is for {fields[4].hex()[:16]}…, the "
                          f"device runs {expected_base_sha256.hex()[:16]}…; redeploy the base",
                          "base_mismatch")
    return fields, data[HEADER.size:crc_at]


def _check_hmac(data: bytes, flags: int, mac_at: int, hmac_key: bytes | None,
                insecure: bool) -> None:
    has_mac = bool(flags & FLAG_HMAC)
    if not hmac_key and not insecure:
        raise UpdateError("no HMAC key configured: refusing the packet (pass the device key, or "
                          "insecure=True to accept unauthenticated packets)", "bad_hmac")
    if hmac_key and not has_mac:
        raise UpdateError("unauthenticated packet: this deployment requires an HMAC; "
                          "encode with the device key", "bad_hmac")
    if has_mac and not hmac_key:
        raise UpdateError("packet carries an HMAC but no key was given; pass the key",
                          "bad_hmac")
    if has_mac and hmac_key:
        want = hmac.new(hmac_key, data[:mac_at], hashlib.sha256).digest()
        if not hmac.compare_digest(want, data[mac_at:mac_at + HMAC_BYTES]):
            raise UpdateError("bad HMAC: the packet was not made with this device's key",
                              "bad_hmac")


def _inflate(stored: bytes, flags: int, raw_len: int, limits: DecodeLimits) -> bytes:
    if raw_len > limits.max_raw_bytes:
        raise UpdateError(f"payload of {raw_len} bytes exceeds the {limits.max_raw_bytes}-byte "
                          "limit this model allows", "too_large")
    if not flags & FLAG_COMPRESSED:
        if len(stored) != raw_len:
            raise UpdateError(f"payload is {len(stored)} bytes, header says {raw_len}",
                              "malformed")
        return stored
    inflater = zlib.decompressobj()
    try:  # never more than raw_len + 1 bytes of output, however well the stream compresses
        raw = inflater.decompress(stored, raw_len + 1)
    except zlib.error as err:
        raise UpdateError(f"corrupt compressed payload: {err}", "malformed") from None
    if len(raw) != raw_len or not inflater.eof or inflater.unused_data or inflater.unconsumed_tail:
        raise UpdateError("compressed payload does not end where its header says", "malformed")
    return raw


@dataclass(frozen=True)
class _Record:
    tensor_index: int
    numel: int
    count: int
    index_coding: IndexCoding
    value_coding: ValueCoding
    params: bytes
    index_bytes: int
    value_bytes: int


def _index_bytes_fit(coding: IndexCoding, numel: int, count: int, n: int) -> bool:
    if coding == IndexCoding.DENSE:
        return count == numel and n == 0
    if coding == IndexCoding.BITMAP:
        return n == (numel + 7) // 8
    return count <= n <= MAX_VARINT_BYTES * count


def _read_record(reader: _Reader, limits: DecodeLimits, declared: int, elements: int) -> _Record:
    """One record header, checked against itself, the payload and the limits; ``declared`` and
    ``elements`` are the index+value bytes and values of the records before it."""
    tensor_index, numel, count = reader.varint(), reader.varint(), reader.varint()
    codes = reader.take(2)
    param_len, index_len, value_len = reader.varint(), reader.varint(), reader.varint()
    params = reader.take(param_len)
    name = f"tensor {tensor_index}"
    known_index = codes[0] in IndexCoding._value2member_map_
    if not known_index or codes[1] not in ValueCoding._value2member_map_:
        raise UpdateError(f"{name}: unknown coding {codes.hex()} (index, value): made by a newer "
                          "encoder; update the app", "unsupported")
    index_coding, value_coding = IndexCoding(codes[0]), ValueCoding(codes[1])
    if count > numel or numel >= MAX_NUMEL or tensor_index >= 1 << 32:
        raise UpdateError(f"{name}: {count} updates for {numel} elements", "malformed")
    if numel > limits.max_elements or elements + count > limits.max_elements:
        raise UpdateError(f"{name}: {numel} elements / {elements + count} updates exceed the "
                          f"{limits.max_elements} this model has", "too_large")
    if param_len != PARAM_BYTES[value_coding]:
        raise UpdateError(f"{name}: {param_len} coding-parameter bytes for {value_coding.name}",
                          "malformed")
    if not _index_bytes_fit(index_coding, numel, count, index_len) \
            or value_len != VALUE_BYTES[value_coding] * count:
        raise UpdateError(f"{name}: {index_len} index / {value_len} value bytes do not fit "
                          f"{count} updates of {numel} in {index_coding.name}/{value_coding.name}",
                          "malformed")
    if declared + index_len + value_len > reader.remaining():
        raise UpdateError(f"truncated payload: {name} claims {index_len + value_len} bytes, "
                          f"{reader.remaining() - declared} are left", "truncated")
    if value_coding in (ValueCoding.Q8, ValueCoding.QDELTA) \
            and not np.all(np.isfinite(np.frombuffer(params, "<f4"))):
        raise UpdateError(f"{name}: non-finite quantization scale/offset/step", "non_finite")
    return _Record(tensor_index, numel, count, index_coding, value_coding, params, index_len,
                   value_len)


def _read_indices(section: bytes, r: _Record) -> np.ndarray:
    if r.index_coding == IndexCoding.DENSE:
        return np.arange(r.numel, dtype=np.int64)
    if r.index_coding == IndexCoding.BITMAP:
        bits = np.unpackbits(np.frombuffer(section, np.uint8), bitorder="little")
        if bits[r.numel:].any() or int(np.count_nonzero(bits)) != r.count:
            raise UpdateError(f"tensor {r.tensor_index}: bitmap does not hold {r.count} indices",
                              "malformed")
        return np.flatnonzero(bits).astype(np.int64)
    gaps = _decode_varint_section(section, r.count, r.tensor_index)
    if np.any(gaps >= np.uint64(r.numel)):
        raise UpdateError(f"tensor {r.tensor_index}: index out of range [0, {r.numel})",
                          "out_of_range")
    idx = np.cumsum(gaps + np.uint64(1), dtype=np.uint64) - np.uint64(1)
    if r.count and (idx[-1] >= r.numel or np.any(np.diff(idx.astype(np.int64)) <= 0)):
        raise UpdateError(f"tensor {r.tensor_index}: index out of range [0, {r.numel})",
                          "out_of_range")
    return idx.astype(np.int64)


def _step(r: _Record) -> float:
    return float(struct.unpack("<f", r.params)[0])


def _read_values(section: bytes, r: _Record) -> np.ndarray:
    if r.value_coding == ValueCoding.F32:
        values = np.frombuffer(section, "<f4").astype(np.float32)
    elif r.value_coding == ValueCoding.F16:
        planes = np.frombuffer(section, np.uint8).reshape(2, r.count)
        values = np.ascontiguousarray(planes.T).view("<f2").ravel().astype(np.float32)
    elif r.value_coding == ValueCoding.Q8:
        scale, offset = struct.unpack("<ff", r.params)
        values = _dequantize_q8(np.frombuffer(section, np.uint8), scale, offset)
    else:
        values = dequantize_delta(np.frombuffer(section, np.int8), _step(r))
    if not np.all(np.isfinite(values)):
        raise UpdateError(f"tensor {r.tensor_index}: non-finite values; the packet is unusable",
                          "non_finite")
    return values


def decode_update(
    data: bytes,
    *,
    expected_base_sha256: bytes | None,
    expected_device_id: bytes,
    hmac_key: bytes | None,
    limits: DecodeLimits | None = None,
    insecure: bool = False,
) -> UpdatePacket:
    """Unpacks and validates one packet. Raises `UpdateError` (with ``.status``) on any defect.

    Without ``hmac_key`` every packet is refused unless ``insecure=True`` (then only packets
    without an HMAC pass). ``limits`` (`DecodeLimits.for_table` of the deployed model) bound what
    the packet may make the decoder hold; ``None`` means `HOST_LIMITS`. Ranges are checked
    against each record's ``numel``; `apply_update` checks them again against the deployed
    model's tensor table. Sequence order is `SequenceGuard`'s job.
    """
    if len(expected_device_id) != DEVICE_ID_BYTES:
        raise UpdateError(f"expected_device_id must be {DEVICE_ID_BYTES} bytes")
    limits = limits or HOST_LIMITS
    fields, stored = _check_envelope(bytes(data), expected_base_sha256, expected_device_id,
                                     hmac_key, insecure)
    flags, base, device_id, sequence = fields[2], fields[4], fields[5], fields[6]
    n_tensors, raw_len = fields[7], fields[9]
    if n_tensors > MAX_TENSORS:
        raise UpdateError(f"{n_tensors} tensors exceeds the limit of {MAX_TENSORS}", "malformed")
    reader = _Reader(_inflate(stored, flags, raw_len, limits), "payload")
    records: list[_Record] = []
    declared = elements = 0
    for _ in range(n_tensors):
        record = _read_record(reader, limits, declared, elements)
        records.append(record)
        declared += record.index_bytes + record.value_bytes
        elements += record.count
    order = [r.tensor_index for r in records]
    if any(b <= a for a, b in zip(order, order[1:])):
        raise UpdateError("tensor records must have strictly increasing tensor indices",
                          "malformed")
    if declared != reader.remaining():
        raise UpdateError(f"{reader.remaining() - declared} trailing payload bytes", "malformed")
    index_lists = [_read_indices(reader.take(r.index_bytes), r) for r in records]
    tensors = [TensorPatch(r.tensor_index, r.numel, idx,
                           _read_values(reader.take(r.value_bytes), r),
                           additive=r.value_coding == ValueCoding.QDELTA,
                           step=_step(r) if r.value_coding == ValueCoding.QDELTA else None)
               for r, idx in zip(records, index_lists)]
    mode = Mode.CUMULATIVE if flags & FLAG_CUMULATIVE else Mode.BASE_RELATIVE
    return UpdatePacket(sequence, mode, base, tensors, VERSION, bool(flags & FLAG_HMAC), device_id)


class SequenceGuard:
    """Refuses replayed and out-of-order packets.

    Base-relative packets are self-contained, so gaps are fine: ``sequence > last``. Cumulative
    packets build on the previous one, so a gap means the device missed one:
    ``sequence == last + 1``.
    """

    def __init__(self, last_sequence: int = 0) -> None:
        self.last_sequence = last_sequence

    def check(self, packet: UpdatePacket) -> None:
        if packet.sequence <= self.last_sequence:
            raise UpdateError(f"replayed or out-of-order packet: sequence {packet.sequence} after "
                              f"{self.last_sequence}; drop it", "replay")
        if packet.mode == Mode.CUMULATIVE and packet.sequence != self.last_sequence + 1:
            raise UpdateError(f"cumulative packet {packet.sequence} after {self.last_sequence}: "
                              "an update was missed; request a base-relative resync", "replay")

    def accept(self, packet: UpdatePacket) -> None:
        self.check(packet)
        self.last_sequence = packet.sequence


# ----------------------------------------------------------------------------- applier
@dataclass(frozen=True)
class TensorLocation:
    buffer_offset: int
    buffer_size: int
    dtype: str = "float32"


def apply_update(model_bytes: bytes, table: dict[int, TensorLocation],
                 packet: UpdatePacket) -> bytes:
    """Returns a patched copy of ``model_bytes``; checks every range, and that every new element
    is finite in the tensor's own type, before writing anything.

    float32 elements take the values (or element + value, for additive patches, in float32);
    float16 elements take ``half(value)`` (or ``half(float(element) + value)``), rounded to
    nearest even."""
    out = np.frombuffer(bytearray(model_bytes), np.uint8)
    writes = []
    for patch in packet.tensors:
        loc = table.get(patch.tensor_index)
        if loc is None:
            raise UpdateError(f"tensor {patch.tensor_index} is not updatable in this model "
                              "(absent from the manifest's parameter_map)", "out_of_range")
        if loc.dtype not in ELEMENT_BYTES:
            raise UpdateError(f"tensor {patch.tensor_index}: the model holds {loc.dtype}, "
                              "updates patch float32 and float16 only", "unsupported")
        width = ELEMENT_BYTES[loc.dtype]
        if loc.buffer_size != width * patch.numel:
            raise UpdateError(f"tensor {patch.tensor_index}: packet has {patch.numel} "
                              f"elements, model has {loc.buffer_size} bytes of {loc.dtype}",
                              "out_of_range")
        if loc.buffer_offset < 0 or loc.buffer_offset + loc.buffer_size > len(model_bytes):
            raise UpdateError(f"tensor {patch.tensor_index}: buffer outside the model file",
                              "out_of_range")
        view = out[loc.buffer_offset:loc.buffer_offset + loc.buffer_size].view(
            "<f4" if width == 4 else "<f2")
        new = patched_elements(view, patch)
        if not np.all(np.isfinite(new)):
            raise UpdateError(f"tensor {patch.tensor_index}: the update makes elements "
                              f"non-finite in {loc.dtype}", "non_finite")
        writes.append((view, patch.indices, new))
    for view, indices, new in writes:
        view[indices] = new
    return out.tobytes()


def patched_elements(tensor: np.ndarray, patch: TensorPatch) -> np.ndarray:
    """The elements at ``patch.indices`` of ``tensor`` (float32 or float16, the tensor's whole
    content) after the patch, in the tensor's own type: float32 arithmetic, then one rounding
    to the element type. The server's error feedback mirrors the device with this function."""
    values = np.asarray(patch.values, np.float32)
    if patch.additive:
        values = (tensor[patch.indices].astype(np.float32) + values).astype(np.float32)
    with np.errstate(over="ignore"):  # float16 overflow becomes inf and is refused
        return values.astype(tensor.dtype)


# ----------------------------------------------------------------------------- AMS baseline
def encode_ams_baseline(variables: Sequence[tuple[np.ndarray, np.ndarray]]) -> bytes:
    """The public AMS downlink format, for comparison: ``(mask, new values)`` per variable in
    graph order → packbits(mask) MSB first for each, then values[mask] as float16 for each,
    the whole gzip -9, no header."""
    masks = b"".join(np.packbits(np.asarray(m, bool).ravel()).tobytes() for m, _ in variables)
    values = b"".join(np.asarray(v).ravel()[np.asarray(m, bool).ravel()].astype("<f2").tobytes()
                      for m, v in variables)
    return gzip.compress(masks + values, compresslevel=9, mtime=0)


def ams_variables(patches: Sequence[TensorPatch], numels: Mapping[int, int]
                  ) -> list[tuple[np.ndarray, np.ndarray]]:
    """The AMS format's ``(mask, new values)`` for every tensor of ``numels`` (tensor index →
    elements) in graph (tensor index) order; a tensor without a patch has an empty mask."""
    by_index = {p.tensor_index: p for p in patches}
    variables = []
    for index in sorted(numels):
        mask, values = np.zeros(numels[index], bool), np.zeros(numels[index], np.float32)
        if index in by_index:
            mask[by_index[index].indices] = True
            values[by_index[index].indices] = by_index[index].values
        variables.append((mask, values))
    return variables
