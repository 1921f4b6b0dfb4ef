"""The wire format: round trips, codings, and every rejection the decoder promises."""

from __future__ import annotations

import hashlib
import struct
import zlib

import numpy as np
import pytest

from mobdistill.contract import wire
from mobdistill.contract.wire import (
    IndexCoding,
    Mode,
    SequenceGuard,
    TensorLocation,
    TensorPatch,
    ValueCoding,
)
from mobdistill.errors import UpdateError

BASE = hashlib.sha256(b"base model").digest()
KEY = b"per-device key"
DEVICE = bytes(range(16))


def _patches(rng: np.random.Generator) -> list[TensorPatch]:
    out = []
    for tensor_index, numel, count in [(3, 1000, 50), (7, 64, 64), (9, 5000, 4000), (12, 10, 0)]:
        idx = np.sort(rng.choice(numel, count, replace=False))
        out.append(TensorPatch(tensor_index, numel, idx, rng.normal(0, 0.1, count)))
    return out


@pytest.mark.parametrize("coding", list(ValueCoding))
@pytest.mark.parametrize("compress", [True, False])
def test_round_trip(coding: ValueCoding, compress: bool) -> None:
    patches = _patches(np.random.default_rng(0))
    data = wire.encode_update(patches, base_sha256=BASE, sequence=5, device_id=DEVICE,
                              value_coding=coding, hmac_key=KEY, compress=compress)
    packet = wire.decode_update(data, expected_base_sha256=BASE, expected_device_id=DEVICE,
                                hmac_key=KEY)
    assert (packet.sequence, packet.mode, packet.authenticated) == (5, Mode.CUMULATIVE, True)
    assert packet.device_id == DEVICE and packet.version == 2
    assert [p.tensor_index for p in packet.tensors] == [3, 7, 9, 12]
    for want, got in zip(patches, packet.tensors):
        np.testing.assert_array_equal(got.indices, want.indices)
        np.testing.assert_array_equal(got.values, wire.quantize_values(want.values, coding))
        assert got.values.dtype == np.float32


def test_index_coding_is_chosen_by_size() -> None:
    sparse = np.array([1, 500, 999])
    assert wire._encode_indices(sparse, 1000)[0] == IndexCoding.DELTA_VARINT
    assert wire._encode_indices(np.arange(0, 1000, 2), 1000)[0] == IndexCoding.BITMAP
    assert wire._encode_indices(np.arange(1000), 1000)[0] == IndexCoding.DENSE


def test_q8_error_is_half_a_step() -> None:
    values = np.random.default_rng(1).normal(0, 1, 1000).astype(np.float32)
    got = wire.quantize_values(values, ValueCoding.Q8)
    step = (values.max() - values.min()) / 255
    assert np.max(np.abs(got - values)) <= 0.5 * step * 1.001


def _packet(**kw) -> bytes:
    args = dict(base_sha256=BASE, sequence=3, device_id=DEVICE, hmac_key=KEY,
                mode=Mode.BASE_RELATIVE)
    args.update(kw)
    return wire.encode_update(_patches(np.random.default_rng(2)), **args)


def _decode(data: bytes, **kw):
    args = dict(expected_base_sha256=BASE, expected_device_id=DEVICE, hmac_key=KEY)
    args.update(kw)
    return wire.decode_update(data, **args)


def _with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def _status(data: bytes, **kw) -> str:
    with pytest.raises(UpdateError) as caught:
        _decode(data, **kw)
    return caught.value.status


@pytest.mark.parametrize("mutate, status", [
    (lambda d: b"XXXX" + d[4:], "bad_magic"),
    (lambda d: d[:4] + b"\x01" + d[5:], "bad_version"),  # version 1 is refused too
    (lambda d: d[:4] + b"\x03" + d[5:], "bad_version"),
    (lambda d: d[:-1], "truncated"),
    (lambda d: d[:30], "truncated"),
    (lambda d: d + b"\0", "truncated"),
    (lambda d: d[:100] + bytes([d[100] ^ 1]) + d[101:], "bad_checksum"),
])
def test_rejects_damaged_envelope(mutate, status: str) -> None:
    assert _status(mutate(_packet())) == status


def test_rejects_base_mismatch_and_wrong_device() -> None:
    assert _status(_packet(), expected_base_sha256=hashlib.sha256(b"other").digest()) \
        == "base_mismatch"
    assert _status(_packet(device_id=bytes(16))) == "wrong_device"
    with pytest.raises(UpdateError, match="16 bytes"):
        _decode(_packet(), expected_device_id=b"short")


def test_hmac_rules_keys_on_by_default() -> None:
    signed = _packet()
    assert _decode(signed).authenticated
    assert _status(signed, hmac_key=b"wrong key") == "bad_hmac"
    unsigned = _packet(hmac_key=None)
    assert _status(unsigned) == "bad_hmac"  # a keyed decoder wants an HMAC
    assert _status(unsigned, hmac_key=None) == "bad_hmac"  # no key: refused unless insecure
    assert not _decode(unsigned, hmac_key=None, insecure=True).authenticated
    assert _status(signed, hmac_key=None, insecure=True) == "bad_hmac"  # cannot check it
    forged = bytearray(signed)
    forged[-1] ^= 0xFF
    assert _status(bytes(forged)) == "bad_hmac"
    device_swapped = bytearray(signed)  # the device id is under the MAC
    device_swapped[40:56] = bytes(16)
    assert _status(_reseal(bytes(device_swapped[:-36])) + bytes(device_swapped[-32:]),
                   expected_device_id=bytes(16)) == "bad_hmac"


def _reseal(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def _raw_packet(payload: bytes, n_tensors: int = 1, **kw) -> bytes:
    fields = (wire.MAGIC, 2, wire.FLAG_HMAC, 0, BASE, DEVICE, 1, n_tensors, len(payload),
              kw.get("raw_len", len(payload)))
    return wire.seal(fields, payload, KEY)


def _f32_record(numel: int = 10, count: int = 1, index_bytes: int = 1, value_bytes: int = 4):
    return wire.record_header(1, numel, count, IndexCoding.DELTA_VARINT, ValueCoding.F32, b"",
                              index_bytes, value_bytes)


def test_rejects_out_of_range_index_and_non_finite() -> None:
    one = struct.pack("<f", 1.0)
    assert _status(_raw_packet(_f32_record() + bytes([10]) + one)) == "out_of_range"
    nan = _f32_record() + bytes([2]) + struct.pack("<f", float("nan"))
    assert _status(_raw_packet(nan)) == "non_finite"
    assert _status(_raw_packet(nan[:-2])) == "truncated"
    with pytest.raises(UpdateError, match="non-finite"):
        wire.encode_update([TensorPatch(1, 4, np.array([0]), np.array([np.inf]))],
                           base_sha256=BASE, sequence=1, device_id=DEVICE, hmac_key=KEY)


@pytest.mark.parametrize("payload, status", [
    (_f32_record(value_bytes=8) + bytes([2]) + bytes(8), "malformed"),  # values disagree
    (_f32_record(index_bytes=11) + bytes(15), "malformed"),  # > 10 bytes for one varint
    (_f32_record(count=3, index_bytes=3, value_bytes=12) + bytes(3), "truncated"),  # lies
    (_f32_record() + bytes([0x80, 0]) + bytes(4), "malformed"),  # 2 index bytes in a 1-byte slot
    (_f32_record(index_bytes=2) + bytes([0x80, 0x80]) + bytes(4), "malformed"),  # no terminator
    (_f32_record(index_bytes=2) + bytes([1, 1]) + bytes(4), "malformed"),  # two varints, count 1
    (wire.record_header(1, 10, 1, 9, 0, b"", 1, 4) + bytes(5), "unsupported"),
    (wire.record_header(1, 10, 1, 0, 9, b"", 1, 4) + bytes(5), "unsupported"),
    (wire.record_header(1, 10, 1, 0, 2, b"", 1, 1) + bytes(2), "malformed"),  # Q8 needs params
    (wire.record_header(1, 16, 1, IndexCoding.BITMAP, ValueCoding.F32, b"", 2, 4)
     + b"\x03\x00" + bytes(4), "malformed"),  # two bits set, count 1
    (bytes([1]) + b"\xff" * 9 + b"\x81", "malformed"),  # 10-byte varint ending in 0x81
    (bytes([1]) + b"\xff" * 9 + b"\x01", "truncated"),  # a legal 10-byte varint, then nothing
])
def test_record_bounds(payload: bytes, status: str) -> None:
    assert _status(_raw_packet(payload)) == status


def test_limits_follow_the_model() -> None:
    table = {1: TensorLocation(0, 40), 2: TensorLocation(40, 4000), 3: TensorLocation(0, 8, "int8")}
    limits = wire.DecodeLimits.for_table(table)
    assert limits.max_elements == 1010
    assert 4 * 1010 < limits.max_raw_bytes < 5 * 1010 + 200
    dense = wire.encode_update([TensorPatch(2, 1000, np.arange(1000), np.ones(1000)),
                                TensorPatch(1, 10, np.arange(10), np.ones(10))],
                               base_sha256=BASE, sequence=1, device_id=DEVICE, hmac_key=KEY,
                               value_coding=ValueCoding.F32, compress=False)
    assert len(_decode(dense, limits=limits).tensors) == 2  # the largest legal packet passes
    small = wire.DecodeLimits(max_elements=1009, max_raw_bytes=limits.max_raw_bytes)
    assert _status(dense, limits=small) == "too_large"
    tight = wire.DecodeLimits(max_elements=1010, max_raw_bytes=4000)
    assert _status(dense, limits=tight) == "too_large"


def test_sequence_guard() -> None:
    guard = SequenceGuard()
    base = _decode(_packet(sequence=4))
    guard.accept(base)
    with pytest.raises(UpdateError, match="replayed"):
        guard.accept(base)
    guard.accept(_decode(_packet(sequence=9)))  # gaps are fine for base-relative packets
    with pytest.raises(UpdateError, match="missed"):
        guard.accept(_decode(_packet(sequence=11, mode=Mode.CUMULATIVE)))
    guard.accept(_decode(_packet(sequence=10, mode=Mode.CUMULATIVE)))
    assert guard.last_sequence == 10


def test_apply_update_scatters_into_a_copy() -> None:
    model = bytes(16) + np.arange(10, dtype="<f4").tobytes() + bytes(8)
    packet = _decode(wire.encode_update(
        [TensorPatch(4, 10, np.array([0, 9]), np.array([-1.0, -2.0]))],
        base_sha256=BASE, sequence=1, device_id=DEVICE, hmac_key=KEY,
        value_coding=ValueCoding.F32))
    table = {4: TensorLocation(16, 40)}
    patched = wire.apply_update(model, table, packet)
    assert len(patched) == len(model) and model[16:20] == bytes(4)
    np.testing.assert_array_equal(np.frombuffer(patched[16:56], "<f4"),
                                  [-1, 1, 2, 3, 4, 5, 6, 7, 8, -2])
    with pytest.raises(UpdateError, match="not updatable"):
        wire.apply_update(model, {}, packet)
    with pytest.raises(UpdateError, match="outside the model"):
        wire.apply_update(model, {4: TensorLocation(40, 40)}, packet)
    with pytest.raises(UpdateError, match="bytes of float32"):
        wire.apply_update(model, {4: TensorLocation(16, 36)}, packet)
    with pytest.raises(UpdateError, match="holds int8") as caught:
        wire.apply_update(model, {4: TensorLocation(16, 40, "int8")}, packet)
    assert caught.value.status == "unsupported"


def test_ams_baseline_matches_its_definition() -> None:
    import gzip
    mask = np.array([True, False, False, True, True, False, False, False, True])
    values = np.arange(9, dtype=np.float32)
    raw = gzip.decompress(wire.encode_ams_baseline([(mask, values)]))
    assert raw[:2] == bytes([0b10011000, 0b10000000])
    np.testing.assert_array_equal(np.frombuffer(raw[2:], "<f2"), [0, 3, 4, 8])
