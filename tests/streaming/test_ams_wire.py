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


REPLACING = [c for c in ValueCoding if c != ValueCoding.QDELTA]


@pytest.mark.parametrize("coding", REPLACING)
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


def test_ams_variables_cover_every_tensor_in_graph_order() -> None:
    patch = TensorPatch(7, 4, np.array([1, 3]), np.array([0.5, -2.0], np.float32))
    variables = wire.ams_variables([patch], {7: 4, 2: 3})
    assert [m.tolist() for m, _ in variables] == [[False] * 3, [False, True, False, True]]
    np.testing.assert_array_equal(variables[1][1], [0, 0.5, 0, -2.0])


def _delta(tensor_index: int, numel: int, indices, levels, step: float) -> TensorPatch:
    return TensorPatch(tensor_index, numel, np.asarray(indices),
                       wire.dequantize_delta(np.asarray(levels), step), additive=True, step=step)


@pytest.mark.parametrize("compress", [True, False])
def test_qdelta_round_trip_adds_to_what_the_element_holds(compress: bool) -> None:
    patches = [_delta(4, 10, [0, 3, 9], [1, -127, 127], 0.25), _delta(6, 8, [2], [-1], 1e-3)]
    packet = _decode(wire.encode_update(patches, base_sha256=BASE, sequence=1,
                                        device_id=DEVICE, hmac_key=KEY, compress=compress,
                                        value_coding=ValueCoding.QDELTA))
    assert [p.additive for p in packet.tensors] == [True, True]
    assert packet.tensors[0].step == 0.25
    np.testing.assert_array_equal(packet.tensors[0].values, [0.25, -31.75, 31.75])
    model = np.arange(18, dtype="<f4").tobytes()
    table = {4: TensorLocation(0, 40), 6: TensorLocation(40, 16, "float16")}
    before = np.frombuffer(model, "<f4")
    patched = wire.apply_update(model, table, packet)
    after = np.frombuffer(patched, "<f4", 10)
    np.testing.assert_array_equal(after[[0, 3, 9]], before[[0, 3, 9]] + [0.25, -31.75, 31.75])
    np.testing.assert_array_equal(np.delete(after, [0, 3, 9]), np.delete(before[:10], [0, 3, 9]))
    halves = np.frombuffer(model, "<f2", 8, 40)
    got = np.frombuffer(patched, "<f2", 8, 40)
    assert got[2] == np.float16(np.float32(halves[2]) + np.float32(-1e-3))
    np.testing.assert_array_equal(np.delete(got, 2), np.delete(halves, 2))


def test_qdelta_encoder_refuses_what_it_cannot_carry() -> None:
    def encode(patch: TensorPatch, coding: ValueCoding = ValueCoding.QDELTA) -> bytes:
        return wire.encode_update([patch], base_sha256=BASE, sequence=1, device_id=DEVICE,
                                  hmac_key=KEY, value_coding=coding)

    with pytest.raises(UpdateError, match="multiples"):
        encode(TensorPatch(1, 4, np.array([0]), np.array([0.3]), additive=True, step=0.25))
    with pytest.raises(UpdateError, match="±127"):
        encode(TensorPatch(1, 4, np.array([0]), np.array([32.0]), additive=True, step=0.25))
    with pytest.raises(UpdateError, match="positive finite step"):
        encode(TensorPatch(1, 4, np.array([0]), np.array([0.25])))
    with pytest.raises(UpdateError, match="QDELTA only"):
        encode(_delta(1, 4, [0], [1], 0.25), ValueCoding.F16)


def test_float16_tensors_round_to_nearest_even_and_refuse_overflow() -> None:
    values = np.array([1 + 2.0 ** -11, 1 + 3 * 2.0 ** -11, 2.0 ** -25, 65519.0, -7e-6], "<f4")
    model = bytes(4) + np.zeros(8, "<f2").tobytes()
    table = {1: TensorLocation(4, 16, "float16")}
    packet = _decode(wire.encode_update([TensorPatch(1, 8, np.arange(5), values)],
                                        base_sha256=BASE, sequence=1, device_id=DEVICE,
                                        hmac_key=KEY, value_coding=ValueCoding.F32))
    got = np.frombuffer(wire.apply_update(model, table, packet), "<f2", 8, 4)
    np.testing.assert_array_equal(got[:5], values.astype(np.float16))
    assert list(got[:3]) == [1.0, 1 + 2.0 ** -9, 0.0]
    assert wire.DecodeLimits.for_table(table).max_elements == 8
    overflow = _decode(wire.encode_update([TensorPatch(1, 8, np.array([0]), np.array([65520.0]))],
                                          base_sha256=BASE, sequence=1, device_id=DEVICE,
                                          hmac_key=KEY, value_coding=ValueCoding.F32))
    with pytest.raises(UpdateError, match="non-finite in float16") as caught:
        wire.apply_update(model, table, overflow)
    assert caught.value.status == "non_finite"
    with pytest.raises(UpdateError, match="bytes of float16"):
        wire.apply_update(model, {1: TensorLocation(4, 8, "float16")}, packet)
