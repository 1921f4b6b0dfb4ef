"""The sparse-update wire format (``MDUP`` version 1): pure pack/unpack, no I/O.

A packet carries new values for a few elements of a few float32 tensors of one deployed
``.tflite`` file, addressed in **deployed tensor space** (the manifest's ``tensor_index`` and the
flat index into the tensor's raw buffer), so the device only scatters. Layout, all little-endian
(the normative description is ``docs/wire-format.md``)::

    header   magic "MDUP" | version u8 | flags u8 | reserved u16 = 0 | base sha256 [32]
             | sequence u64 | tensor count u32 | stored payload length u32 | raw payload length u32
    payload  (zlib-deflated when flag COMPRESSED) = records | index section | value section
             record: varint tensor_index, varint numel, varint count, u8 index coding,
                     u8 value coding, [f32 scale, f32 offset when value coding is Q8]
    trailer  crc32 u32 of header + stored payload | [HMAC-SHA256 [32] of everything before it]

The CRC catches corruption and truncation cheaply (zlib has it on every platform); the optional
HMAC with a per-deployment key is what stops forgery — an unkeyed sha256 would add nothing an
attacker could not recompute.
"""

from __future__ import annotations

import enum
import gzip
import hmac
import hashlib
import struct
import zlib
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from mobdistill.errors import UpdateError

MAGIC = b"MDUP"
VERSION = 1
HEADER = struct.Struct("<4sBBH32sQIII")  # 60 bytes
CRC_BYTES = 4
HMAC_BYTES = 32
MAX_RAW_PAYLOAD_BYTES = 64 << 20  # refuse zip bombs: no model we stream is this large
MAX_TENSORS = 1 << 16

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


@dataclass
class TensorPatch:
    """New values for ``indices`` (flat, strictly increasing) of deployed tensor ``tensor_index``."""

    tensor_index: int
    numel: int
    indices: np.ndarray  # int64 [count]
    values: np.ndarray  # float32 [count]


@dataclass
class UpdatePacket:
    sequence: int
    mode: Mode
    base_sha256: bytes
    tensors: list[TensorPatch] = field(default_factory=list)
    version: int = VERSION
    authenticated: bool = False


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

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise UpdateError(f"truncated {self.what}: need {n} bytes at offset {self.pos}, "
                              f"have {len(self.data) - self.pos}; re-send the packet")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def varint(self) -> int:
        """LEB128, at most 10 bytes, value < 2^64 (the C++ decoder's rule)."""
        value = 0
        for shift in range(0, 70, 7):
            byte = self.take(1)[0]
            if shift == 63 and byte > 1:
                break
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
        raise UpdateError(f"malformed varint in {self.what} at offset {self.pos}")


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


def _encode_values(values: np.ndarray, coding: ValueCoding) -> tuple[bytes, bytes]:
    """Returns (record extra bytes, value section bytes)."""
    if coding == ValueCoding.F32:
        return b"", values.astype("<f4").tobytes()
    if coding == ValueCoding.F16:
        planes = values.astype("<f2").view(np.uint8).reshape(-1, 2)
        return b"", planes[:, 0].tobytes() + planes[:, 1].tobytes()
    scale, offset, q = _q8_params(values)
    return struct.pack("<ff", scale, offset), q.tobytes()


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
    mode: Mode = Mode.BASE_RELATIVE,
    value_coding: ValueCoding = ValueCoding.F16,
    hmac_key: bytes | None = None,
    compress: bool = True,
    search_deflate: bool = False,
) -> bytes:
    """Packs ``tensors`` (sorted by tensor index on the way) into one packet.

    ``search_deflate`` also tries other deflate strategies and keeps the smallest stream: any
    valid zlib stream inflates the same, so the packet stays version 1 for every decoder.
    """
    if len(base_sha256) != 32:
        raise UpdateError("base_sha256 must be the 32-byte digest of the deployed .tflite")
    if not 0 < sequence < 1 << 64:
        raise UpdateError(f"sequence {sequence} must be in [1, 2^64)")
    records, index_bytes, value_bytes = bytearray(), bytearray(), bytearray()
    patches = sorted(tensors, key=lambda p: p.tensor_index)
    if len({p.tensor_index for p in patches}) != len(patches):
        raise UpdateError("a tensor index appears twice; merge its patches first")
    for patch in patches:
        idx, val = _check_patch(patch)
        index_coding, idx_data = _encode_indices(idx, patch.numel)
        extra, val_data = _encode_values(val, value_coding)
        header = np.array([patch.tensor_index, patch.numel, idx.size], dtype=np.uint64)
        records += _varints(header) + bytes([index_coding, value_coding]) + extra
        index_bytes += idx_data
        value_bytes += val_data
    raw = bytes(records + index_bytes + value_bytes)
    stored = (_deflate_smallest(raw) if search_deflate else zlib.compress(raw, 9)) \
        if compress else raw
    flags = (FLAG_CUMULATIVE if mode == Mode.CUMULATIVE else 0) | (FLAG_COMPRESSED if compress else 0)
    flags |= FLAG_HMAC if hmac_key else 0
    head = HEADER.pack(MAGIC, VERSION, flags, 0, base_sha256, sequence, len(patches),
                       len(stored), len(raw))
    body = head + stored
    body += struct.pack("<I", zlib.crc32(body))
    if hmac_key:
        body += hmac.new(hmac_key, body, hashlib.sha256).digest()
    return body


# ----------------------------------------------------------------------------- decoder
def _check_envelope(data: bytes, expected_base_sha256: bytes | None,
                    hmac_key: bytes | None) -> tuple[tuple, bytes]:
    if len(data) < HEADER.size + CRC_BYTES:
        raise UpdateError(f"truncated packet: {len(data)} bytes is shorter than the "
                          f"{HEADER.size + CRC_BYTES}-byte header and checksum")
    fields = HEADER.unpack_from(data)
    magic, version, flags, reserved = fields[:4]
    if magic != MAGIC:
        raise UpdateError(f"bad magic {magic!r}: this is not a mobdistill update packet")
    if version != VERSION:
        raise UpdateError(f"wire version {version} is not supported (this decoder reads "
                          f"{VERSION}); update the app or re-encode the packet")
    if flags & ~KNOWN_FLAGS or reserved:
        raise UpdateError(f"unknown flags 0x{flags:02x}/reserved {reserved}: written by a newer "
                          "encoder; update the app")
    stored_len = fields[7]
    end = HEADER.size + stored_len + CRC_BYTES + (HMAC_BYTES if flags & FLAG_HMAC else 0)
    if len(data) != end:
        raise UpdateError(f"packet is {len(data)} bytes but its header says {end}: truncated "
                          "or padded; re-send it")
    crc_at = HEADER.size + stored_len
    (crc,) = struct.unpack_from("<I", data, crc_at)
    if zlib.crc32(data[:crc_at]) != crc:
        raise UpdateError("bad checksum: the packet was corrupted in transit; re-send it")
    _check_hmac(data, flags, crc_at + CRC_BYTES, hmac_key)
    if expected_base_sha256 is not None and fields[4] != expected_base_sha256:
        raise UpdateError(f"base-model mismatch: packet is for {fields[4].hex()[:16]}…, the "
                          f"device runs {expected_base_sha256.hex()[:16]}…; redeploy the base")
    return fields, data[HEADER.size:crc_at]


def _check_hmac(data: bytes, flags: int, mac_at: int, hmac_key: bytes | None) -> None:
    has_mac = bool(flags & FLAG_HMAC)
    if hmac_key and not has_mac:
        raise UpdateError("unauthenticated packet: this deployment requires an HMAC; "
                          "encode with the deployment key")
    if has_mac and not hmac_key:
        raise UpdateError("packet carries an HMAC but no deployment key was given; pass the key")
    if has_mac:
        want = hmac.new(hmac_key, data[:mac_at], hashlib.sha256).digest()
        if not hmac.compare_digest(want, data[mac_at:mac_at + HMAC_BYTES]):
            raise UpdateError("bad HMAC: the packet was not made with this deployment's key")


def _inflate(stored: bytes, flags: int, raw_len: int) -> bytes:
    if raw_len > MAX_RAW_PAYLOAD_BYTES:
        raise UpdateError(f"payload of {raw_len} bytes exceeds the {MAX_RAW_PAYLOAD_BYTES} limit")
    if not flags & FLAG_COMPRESSED:
        raw = stored
    else:
        inflater = zlib.decompressobj()
        try:
            raw = inflater.decompress(stored, raw_len + 1)
        except zlib.error as err:
            raise UpdateError(f"corrupt compressed payload: {err}") from None
        if not inflater.eof or inflater.unused_data or inflater.unconsumed_tail:
            raise UpdateError("compressed payload does not end where its header says")
    if len(raw) != raw_len:
        raise UpdateError(f"payload is {len(raw)} bytes, header says {raw_len}")
    return raw


def _read_record(reader: _Reader) -> tuple[int, int, int, IndexCoding, ValueCoding, bytes]:
    tensor_index, numel, count = reader.varint(), reader.varint(), reader.varint()
    codes = reader.take(2)
    try:
        index_coding, value_coding = IndexCoding(codes[0]), ValueCoding(codes[1])
    except ValueError:
        raise UpdateError(f"tensor {tensor_index}: unknown coding {codes.hex()}") from None
    if count > numel or numel >= 1 << 40 or tensor_index >= 1 << 32:
        raise UpdateError(f"tensor {tensor_index}: {count} updates for {numel} elements")
    if count > len(reader.data):
        raise UpdateError(f"truncated payload: tensor {tensor_index} claims {count} updates")
    extra = reader.take(8) if value_coding == ValueCoding.Q8 else b""
    return tensor_index, numel, count, index_coding, value_coding, extra


def _read_indices(reader: _Reader, coding: IndexCoding, numel: int, count: int,
                  tensor_index: int) -> np.ndarray:
    if coding == IndexCoding.DENSE:
        if count != numel:
            raise UpdateError(f"tensor {tensor_index}: dense coding with {count} of {numel}")
        return np.arange(numel, dtype=np.int64)
    if coding == IndexCoding.BITMAP:
        bits = np.unpackbits(np.frombuffer(reader.take((numel + 7) // 8), np.uint8),
                             bitorder="little")
        if bits[numel:].any() or int(bits.sum()) != count:
            raise UpdateError(f"tensor {tensor_index}: bitmap does not hold {count} indices")
        return np.flatnonzero(bits[:numel]).astype(np.int64)
    gaps = [reader.varint() for _ in range(count)]
    idx = np.cumsum(np.asarray(gaps, dtype=object) + 1) - 1 if gaps else np.zeros(0, object)
    if count and idx[-1] >= numel:
        raise UpdateError(f"tensor {tensor_index}: index {idx[-1]} out of range [0, {numel})")
    return idx.astype(np.int64)


def _read_values(reader: _Reader, coding: ValueCoding, count: int, extra: bytes,
                 tensor_index: int) -> np.ndarray:
    if coding == ValueCoding.F32:
        values = np.frombuffer(reader.take(4 * count), "<f4").astype(np.float32)
    elif coding == ValueCoding.F16:
        planes = np.frombuffer(reader.take(2 * count), np.uint8).reshape(2, count)
        values = np.ascontiguousarray(planes.T).view("<f2").ravel().astype(np.float32)
    else:
        scale, offset = struct.unpack("<ff", extra)
        if not (np.isfinite(scale) and np.isfinite(offset)):
            raise UpdateError(f"tensor {tensor_index}: non-finite quantization scale/offset")
        values = _dequantize_q8(np.frombuffer(reader.take(count), np.uint8), scale, offset)
    if not np.all(np.isfinite(values)):
        raise UpdateError(f"tensor {tensor_index}: non-finite values; the packet is unusable")
    return values


def decode_update(
    data: bytes,
    *,
    expected_base_sha256: bytes | None,
    hmac_key: bytes | None = None,
) -> UpdatePacket:
    """Unpacks and validates one packet. Raises `UpdateError` with the reason on any defect.

    Ranges are checked against each record's ``numel``; `apply_update` checks them again against
    the deployed model's tensor table. Sequence order is `SequenceGuard`'s job.
    """
    fields, stored = _check_envelope(bytes(data), expected_base_sha256, hmac_key)
    flags, base, sequence, n_tensors, raw_len = fields[2], fields[4], fields[5], fields[6], fields[8]
    if n_tensors > MAX_TENSORS:
        raise UpdateError(f"{n_tensors} tensors exceeds the limit of {MAX_TENSORS}")
    reader = _Reader(_inflate(stored, flags, raw_len), "payload")
    records = [_read_record(reader) for _ in range(n_tensors)]
    order = [r[0] for r in records]
    if any(b <= a for a, b in zip(order, order[1:])):
        raise UpdateError("tensor records must have strictly increasing tensor indices")
    index_lists = [_read_indices(reader, r[3], r[1], r[2], r[0]) for r in records]
    tensors = []
    for (tensor_index, numel, count, _, value_coding, extra), idx in zip(records, index_lists):
        values = _read_values(reader, value_coding, count, extra, tensor_index)
        tensors.append(TensorPatch(tensor_index, numel, idx, values))
    if reader.pos != len(reader.data):
        raise UpdateError(f"{len(reader.data) - reader.pos} trailing payload bytes")
    mode = Mode.CUMULATIVE if flags & FLAG_CUMULATIVE else Mode.BASE_RELATIVE
    return UpdatePacket(sequence, mode, base, tensors, VERSION, bool(flags & FLAG_HMAC))


class SequenceGuard:
    """Refuses replayed and out-of-order packets.

    Base-relative packets are self-contained, so gaps are fine: ``sequence > last``. Cumulative
    packets build on the previous one, so a gap means the device missed one: ``sequence == last + 1``.
    """

    def __init__(self, last_sequence: int = 0) -> None:
        self.last_sequence = last_sequence

    def check(self, packet: UpdatePacket) -> None:
        if packet.sequence <= self.last_sequence:
            raise UpdateError(f"replayed or out-of-order packet: sequence {packet.sequence} after "
                              f"{self.last_sequence}; drop it")
        if packet.mode == Mode.CUMULATIVE and packet.sequence != self.last_sequence + 1:
            raise UpdateError(f"cumulative packet {packet.sequence} after {self.last_sequence}: "
                              "an update was missed; request a base-relative resync")

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
    """Returns a patched copy of ``model_bytes``; checks every range before writing anything."""
    for patch in packet.tensors:
        loc = table.get(patch.tensor_index)
        if loc is None:
            raise UpdateError(f"tensor {patch.tensor_index} is not updatable in this model "
                              "(absent from the manifest's parameter_map)")
        if loc.dtype != "float32" or loc.buffer_size != 4 * patch.numel:
            raise UpdateError(f"tensor {patch.tensor_index}: packet has {patch.numel} float32 "
                              f"elements, model has {loc.buffer_size} bytes of {loc.dtype}")
        if loc.buffer_offset < 0 or loc.buffer_offset + loc.buffer_size > len(model_bytes):
            raise UpdateError(f"tensor {patch.tensor_index}: buffer outside the model file")
    out = np.frombuffer(bytearray(model_bytes), np.uint8)
    for patch in packet.tensors:
        loc = table[patch.tensor_index]
        view = out[loc.buffer_offset:loc.buffer_offset + loc.buffer_size].view("<f4")
        view[patch.indices] = patch.values
    return out.tobytes()


# ----------------------------------------------------------------------------- AMS baseline
def encode_ams_baseline(variables: Sequence[tuple[np.ndarray, np.ndarray]]) -> bytes:
    """The public AMS downlink format, for comparison: ``(mask, new values)`` per variable in
    graph order → packbits(mask) MSB first for each, then values[mask] as float16 for each,
    the whole gzip -9, no header."""
    masks = b"".join(np.packbits(np.asarray(m, bool).ravel()).tobytes() for m, _ in variables)
    values = b"".join(np.asarray(v).ravel()[np.asarray(m, bool).ravel()].astype("<f2").tobytes()
                      for m, v in variables)
    return gzip.compress(masks + values, compresslevel=9, mtime=0)
