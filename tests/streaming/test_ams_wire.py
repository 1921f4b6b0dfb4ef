"""The wire format: round trips, codings, and every rejection the decoder promises."""

from __future__ import annotations

import hashlib
import struct
import zlib

import numpy as np
import pytest

from mobdistill.errors import UpdateError
from mobdistill.contract import wire
from mobdistill.contract.wire import (
    IndexCoding, Mode, SequenceGuard, TensorLocation, TensorPatch, ValueCoding,
)

BASE = hashlib.sha256(b"base model").digest()
KEY = b"per-deployment key"


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
    data = wire.encode_update(patches, base_sha256=BASE, sequence=5, mode=Mode.CUMULATIVE,
                              value_coding=coding, hmac_key=KEY, compress=compress)
    packet = wire.decode_update(data, expected_base_sha256=BASE, hmac_key=KEY)
    assert (packet.sequence, packet.mode, packet.authenticated) == (5, Mode.CUMULATIVE, True)
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
    args = dict(base_sha256=BASE, sequence=3)
    args.update(kw)
    return wire.encode_update(_patches(np.random.default_rng(2)), **args)


def _decode(data: bytes, **kw):
    args = dict(expected_base_sha256=BASE)
    args.update(kw)
    return wire.decode_update(data, **args)


def _with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


@pytest.mark.parametrize("mutate, message", [
    (lambda d: b"XXXX" + d[4:], "bad magic"),
    (lambda d: _with_crc(d[:4] + b"\x02" + d[5:-4]), "version 2"),
    (lambda d: d[:-1], "truncated"),
    (lambda d: d[:30], "truncated"),
    (lambda d: d + b"\0", "padded"),
    (lambda d: d[:100] + bytes([d[100] ^ 1]) + d[101:], "bad checksum"),
])
def test_rejects_damaged_envelope(mutate, message: str) -> None:
    with pytest.raises(UpdateError, match=message):
        _decode(mutate(_packet()))


def test_rejects_base_mismatch() -> None:
    with pytest.raises(UpdateError, match="base-model mismatch"):
        _decode(_packet(), expected_base_sha256=hashlib.sha256(b"other").digest())


def test_hmac_rules() -> None:
    signed = _packet(hmac_key=KEY)
    assert _decode(signed, hmac_key=KEY).authenticated
    with pytest.raises(UpdateError, match="bad HMAC"):
        _decode(signed, hmac_key=b"wrong key")
    with pytest.raises(UpdateError, match="unauthenticated"):
        _decode(_packet(), hmac_key=KEY)
    with pytest.raises(UpdateError, match="no deployment key"):
        _decode(signed)
    forged = bytearray(signed)
    forged[-1] ^= 0xFF
    with pytest.raises(UpdateError, match="bad HMAC"):
        _decode(bytes(forged), hmac_key=KEY)


def _raw_packet(payload: bytes, n_tensors: int) -> bytes:
    head = wire.HEADER.pack(wire.MAGIC, 1, 0, 0, BASE, 1, n_tensors, len(payload), len(payload))
    return _with_crc(head + payload)


def test_rejects_out_of_range_index_and_non_finite() -> None:
    # tensor 1, numel 10, count 1, delta varint, f32; index 10 is out of range
    bad_index = bytes([1, 10, 1, 0, 0]) + bytes([10]) + struct.pack("<f", 1.0)
    with pytest.raises(UpdateError, match="out of range"):
        _decode(_raw_packet(bad_index, 1))
    nan = bytes([1, 10, 1, 0, 0]) + bytes([2]) + struct.pack("<f", float("nan"))
    with pytest.raises(UpdateError, match="non-finite"):
        _decode(_raw_packet(nan, 1))
    with pytest.raises(UpdateError, match="truncated"):
        _decode(_raw_packet(nan[:-2], 1))
    with pytest.raises(UpdateError, match="non-finite"):
        wire.encode_update([TensorPatch(1, 4, np.array([0]), np.array([np.inf]))],
                           base_sha256=BASE, sequence=1)


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
        base_sha256=BASE, sequence=1, value_coding=ValueCoding.F32))
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


def test_ams_baseline_matches_its_definition() -> None:
    import gzip
    mask = np.array([True, False, False, True, True, False, False, False, True])
    values = np.arange(9, dtype=np.float32)
    raw = gzip.decompress(wire.encode_ams_baseline([(mask, values)]))
    assert raw[:2] == bytes([0b10011000, 0b10000000])
    np.testing.assert_array_equal(np.frombuffer(raw[2:], "<f2"), [0, 3, 4, 8])
