"""Writes the committed update test vectors (run from anywhere; output is deterministic).

    .venv/bin/python tests/vectors/make_vectors.py [OUT_DIR]

Files: ``base.bin`` (a fake 2 KiB model with three float32 tensors, a float16 one and an int8
one), ``table.txt`` (its tensor
table: ``tensor_index buffer_offset buffer_size dtype``; the decoders derive their limits from
it), ``*.mdup`` packets (wire format 2), ``vectors.txt`` (one line per packet for the C++ test:
``name expected_status last_sequence hmac_key_hex device_id_hex insecure patched_sha256``) and
``vectors.json`` (the same plus the decoded tensors). Expected statuses come from the Python
reference decoder in contract/wire.py; both decoders must report exactly them.
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
import zlib
from pathlib import Path

import numpy as np

from mobdistill.contract import wire
from mobdistill.contract.wire import (
    DecodeLimits,
    IndexCoding,
    Mode,
    SequenceGuard,
    TensorLocation,
    TensorPatch,
    ValueCoding,
)
from mobdistill.errors import UpdateError

KEY = b"mobdistill-test-key"
DEVICE = bytes(range(0x10, 0x20))
OTHER_DEVICE = bytes(range(0x20, 0x30))
TABLE = {2: TensorLocation(64, 400), 5: TensorLocation(512, 1200), 8: TensorLocation(1744, 64),
         11: TensorLocation(1856, 128, "float16"), 14: TensorLocation(1984, 32, "int8")}
LIMITS = DecodeLimits.for_table(TABLE)


def _base_model() -> bytes:
    rng = np.random.default_rng(1234)
    model = bytearray(rng.integers(0, 256, 2048, dtype=np.uint8).tobytes())
    for loc in TABLE.values():
        if loc.dtype in wire.ELEMENT_BYTES:
            dtype = "<f4" if loc.dtype == "float32" else "<f2"
            model[loc.buffer_offset:loc.buffer_offset + loc.buffer_size] = rng.normal(
                0, 0.5, loc.buffer_size // wire.ELEMENT_BYTES[loc.dtype]).astype(dtype).tobytes()
    return bytes(model)


def _numel(tensor_index: int) -> int:
    loc = TABLE[tensor_index]
    return loc.buffer_size // wire.ELEMENT_BYTES.get(loc.dtype, 1)


def _patch(rng, tensor_index: int, count: int) -> TensorPatch:
    numel = _numel(tensor_index)
    idx = np.sort(rng.choice(numel, count, replace=False))
    return TensorPatch(tensor_index, numel, idx, rng.normal(0, 0.5, count))


def _delta_patch(rng, tensor_index: int, count: int, step: float, top: int = 3) -> TensorPatch:
    """Additive QDELTA levels in ±top (never 0), as the error-feedback server sends them."""
    numel = _numel(tensor_index)
    idx = np.sort(rng.choice(numel, count, replace=False))
    q = rng.integers(1, top + 1, count) * rng.choice([-1, 1], count)
    return TensorPatch(tensor_index, numel, idx, wire.dequantize_delta(q, step), additive=True,
                       step=step)


# float32 values that pin float16 rounding in both appliers: ties to even (1 + 2^-11 -> 1,
# 1 + 3*2^-11 -> 1 + 2^-9), subnormals (2^-25 ties to 0, 1.5*2^-24 -> 2^-23), the largest half
# and a value that rounds up into the next exponent.
HALF_EDGES = np.array([1 + 2.0 ** -11, 1 + 3 * 2.0 ** -11, 2.0 ** -25, 1.5 * 2.0 ** -24,
                       -3e-6, 65504.0, -65519.0, 2047.5, 0.1, -0.0], np.float32)


def _reseal(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def sealed(base: bytes, payload: bytes, n_tensors: int = 1, *, raw_len: int | None = None,
           compress: bool = False, key: bytes | None = KEY, sequence: int = 1,
           device: bytes = DEVICE) -> bytes:
    """An authentic packet around any payload: hostile records reach the payload parser."""
    stored = zlib.compress(payload, 9) if compress else payload
    flags = (wire.FLAG_COMPRESSED if compress else 0) | (wire.FLAG_HMAC if key else 0)
    return wire.seal((wire.MAGIC, wire.VERSION, flags, 0, base, device, sequence, n_tensors,
                      len(stored), len(payload) if raw_len is None else raw_len), stored, key)


def _f32_record(tensor_index: int, numel: int, count: int, index_bytes: int) -> bytes:
    return wire.record_header(tensor_index, numel, count, IndexCoding.DELTA_VARINT,
                              ValueCoding.F32, b"", index_bytes, 4 * count)


def _packets(base_sha: bytes) -> list[tuple[str, bytes, int, bytes, bool]]:
    """(name, packet, last_sequence, hmac key, insecure) for each vector."""
    rng = np.random.default_rng(7)

    def enc(patches, **kw):
        kw.setdefault("hmac_key", KEY)
        kw.setdefault("device_id", DEVICE)
        kw.setdefault("sequence", 1)
        kw.setdefault("mode", Mode.BASE_RELATIVE)
        return wire.encode_update(patches, base_sha256=kw.pop("base", base_sha), **kw)

    ok1 = enc([_patch(rng, 2, 10), _patch(rng, 5, 30)])
    ok2 = enc([_patch(rng, 5, 150), _patch(rng, 8, 16)], mode=Mode.CUMULATIVE,
              value_coding=ValueCoding.Q8)
    ok3 = enc([_patch(rng, 2, 100)], sequence=7, value_coding=ValueCoding.F32, compress=False)
    insecure = enc([_patch(rng, 5, 20)], hmac_key=None)
    other = hashlib.sha256(b"another model").digest()
    unknown = enc([TensorPatch(4, 100, np.array([1]), np.array([1.0]))])
    wrong_numel = enc([TensorPatch(2, 99, np.array([1]), np.array([1.0]))])
    record = _f32_record(2, 100, 1, 1)  # tensor 2, numel 100, 1 update, delta varint, f32
    one = np.float32(1.0).tobytes()
    v1 = bytearray(ok1)
    v1[4] = 1
    unknown_coding = wire.record_header(2, 100, 1, 7, ValueCoding.F32, b"", 1, 4)
    bitmap_excess = wire.record_header(5, 300, 1, IndexCoding.BITMAP, ValueCoding.Q8,
                                       struct.pack("<ff", 0.1, 0.0), 38, 1)
    dense_too_many = wire.record_header(8, 1 << 20, 1 << 20, IndexCoding.DENSE, ValueCoding.Q8,
                                        struct.pack("<ff", 0.1, 0.0), 0, 1 << 20)
    lying_count = wire.record_header(5, 300, 200, IndexCoding.BITMAP, ValueCoding.F32, b"", 38,
                                     800)
    varint_0x81 = bytes([2]) + b"\xff" * 9 + b"\x81"  # tensor 2, then a 10-byte varint at the end
    qdelta = enc([_delta_patch(rng, 2, 12, 0.01), _delta_patch(rng, 5, 40, 0.002, 127),
                  _delta_patch(rng, 11, 20, 0.005)], mode=Mode.CUMULATIVE,
                 value_coding=ValueCoding.QDELTA)
    half_edges = enc([TensorPatch(11, 64, np.arange(0, 60, 6), HALF_EDGES)],
                     value_coding=ValueCoding.F32)

    def qdelta_record(tensor_index: int, step: float, params: bytes | None = None) -> bytes:
        return wire.record_header(tensor_index, _numel(tensor_index), 1, IndexCoding.DELTA_VARINT,
                                  ValueCoding.QDELTA,
                                  struct.pack("<f", step) if params is None else params, 1, 1)
    bomb = b"\0" * (LIMITS.max_raw_bytes + 4096)
    return [
        ("ok_f16_delta", ok1, 0, KEY, False),
        ("ok_q8_bitmap_cumulative", ok2, 0, KEY, False),
        ("ok_f32_hmac_raw", ok3, 3, KEY, False),
        ("ok_insecure_opt_in", insecure, 0, b"", True),
        ("bad_magic", b"XDUP" + ok1[4:], 0, KEY, False),
        ("bad_version_1", _reseal(bytes(v1[:-36])) + ok1[-32:], 0, KEY, False),
        ("truncated", ok1[:-3], 0, KEY, False),
        ("bad_checksum", ok1[:90] + bytes([ok1[90] ^ 0x10]) + ok1[91:], 0, KEY, False),
        ("bad_hmac", ok3[:-1] + bytes([ok3[-1] ^ 1]), 3, KEY, False),
        ("unauthenticated", insecure, 0, KEY, False),
        ("no_key_configured", insecure, 0, b"", False),
        ("wrong_device", enc([_patch(rng, 2, 3)], device_id=OTHER_DEVICE), 0, KEY, False),
        ("base_mismatch", enc([_patch(rng, 2, 3)], base=other), 0, KEY, False),
        ("replay", ok1, 1, KEY, False),
        ("cumulative_gap", enc([_patch(rng, 8, 2)], sequence=3, mode=Mode.CUMULATIVE), 1, KEY,
         False),
        ("index_out_of_range", sealed(base_sha, record + bytes([100]) + one), 0, KEY, False),
        ("non_finite", sealed(base_sha, record + bytes([5]) + struct.pack("<f", np.inf)), 0, KEY,
         False),
        ("trailing_bytes", sealed(base_sha, record + bytes([5]) + one + bytes(1)), 0, KEY, False),
        ("tensor_not_in_model", unknown, 0, KEY, False),
        ("tensor_size_mismatch", wrong_numel, 0, KEY, False),
        ("unsupported_coding", sealed(base_sha, unknown_coding + bytes([5]) + one), 0, KEY, False),
        ("bitmap_excess_bits", sealed(base_sha, bitmap_excess + b"\xff" * 37 + b"\x0f" + bytes(1)),
         0, KEY, False),
        ("dense_too_many", sealed(base_sha, dense_too_many + bytes(1 << 10), raw_len=None,
                                  compress=True), 0, KEY, False),
        ("count_lies", sealed(base_sha, lying_count + b"\x01" + bytes(37) + one), 0, KEY, False),
        ("value_bytes_disagree", sealed(base_sha, wire.record_header(
            2, 100, 1, IndexCoding.DELTA_VARINT, ValueCoding.F32, b"", 1, 8) + bytes([5])
            + one * 2), 0, KEY, False),
        ("zip_bomb", sealed(base_sha, bomb, compress=True, raw_len=LIMITS.max_raw_bytes), 0, KEY,
         False),
        ("raw_too_large", sealed(base_sha, bytes(16), compress=True,
                                 raw_len=LIMITS.max_raw_bytes + 1), 0, KEY, False),
        ("varint_0x81_at_end", sealed(base_sha, varint_0x81), 0, KEY, False),
        ("ok_qdelta_cumulative_f16_tensor", qdelta, 0, KEY, False),
        ("ok_f32_values_into_f16_tensor", half_edges, 0, KEY, False),
        ("ok_f16_values_into_f16_tensor", enc([_patch(rng, 11, 25)]), 0, KEY, False),
        ("qdelta_non_finite_step", sealed(base_sha, qdelta_record(2, np.inf) + b"\x05\x01"),
         0, KEY, False),
        ("qdelta_param_bytes", sealed(base_sha, qdelta_record(2, 0, bytes(8)) + b"\x05\x01"),
         0, KEY, False),
        ("qdelta_step_times_level_overflows", sealed(
            base_sha, qdelta_record(2, 3e38) + b"\x05\x7f"), 0, KEY, False),
        ("unknown_value_coding", sealed(base_sha, wire.record_header(
            2, 100, 1, IndexCoding.DELTA_VARINT, 4, b"", 1, 1) + b"\x05\x01"), 0, KEY, False),
        ("f16_tensor_overflow_additive", sealed(base_sha, qdelta_record(11, 1000.0) + b"\x05\x7f"),
         0, KEY, False),
        ("f16_tensor_overflow_replace", enc([TensorPatch(11, 64, np.array([3]),
                                                        np.array([70000.0]))],
                                           value_coding=ValueCoding.F32), 0, KEY, False),
        ("int8_tensor", enc([TensorPatch(14, 32, np.array([3]), np.array([1.0]))]), 0, KEY,
         False),
    ]


def run_reference(packet: bytes, base: bytes, last: int, key: bytes, insecure: bool = False,
                  device: bytes = DEVICE):
    """(status, patched bytes or None, decoded packet or None, message) by the Python decoder."""
    try:
        decoded = wire.decode_update(packet, expected_base_sha256=hashlib.sha256(base).digest(),
                                     expected_device_id=device, hmac_key=key or None,
                                     limits=LIMITS, insecure=insecure)
        SequenceGuard(last).check(decoded)
        return "ok", wire.apply_update(base, TABLE, decoded), decoded, ""
    except UpdateError as err:
        return err.status, None, None, str(err)


EXPECTED = {"bad_version_1": "bad_version", "index_out_of_range": "out_of_range",
            "tensor_not_in_model": "out_of_range", "tensor_size_mismatch": "out_of_range",
            "cumulative_gap": "replay", "unauthenticated": "bad_hmac",
            "no_key_configured": "bad_hmac", "trailing_bytes": "malformed",
            "unsupported_coding": "unsupported", "bitmap_excess_bits": "malformed",
            "dense_too_many": "too_large", "count_lies": "truncated",
            "value_bytes_disagree": "malformed", "zip_bomb": "malformed",
            "raw_too_large": "too_large", "varint_0x81_at_end": "malformed",
            "qdelta_non_finite_step": "non_finite", "qdelta_param_bytes": "malformed",
            "qdelta_step_times_level_overflows": "non_finite",
            "unknown_value_coding": "unsupported", "f16_tensor_overflow_additive": "non_finite",
            "f16_tensor_overflow_replace": "non_finite", "int8_tensor": "unsupported"}


def main(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    base = _base_model()
    (out_dir / "base.bin").write_bytes(base)
    (out_dir / "table.txt").write_text("# tensor_index buffer_offset buffer_size dtype\n" + "".join(
        f"{i} {loc.buffer_offset} {loc.buffer_size} {loc.dtype}\n" for i, loc in TABLE.items()))
    lines, entries = [], []
    for name, packet, last, key, insecure in _packets(hashlib.sha256(base).digest()):
        (out_dir / f"{name}.mdup").write_bytes(packet)
        status, patched, decoded, message = run_reference(packet, base, last, key, insecure)
        want = "ok" if name.startswith("ok_") else EXPECTED.get(name, name)
        assert status == want, (name, status, message)
        digest = hashlib.sha256(patched).hexdigest() if patched else "-"
        lines.append(f"{name} {want} {last} {key.hex() or '-'} {DEVICE.hex()} {int(insecure)} "
                     f"{digest}\n")
        tensors = [{"tensor_index": t.tensor_index, "numel": t.numel, "additive": t.additive,
                    "indices": t.indices.tolist(), "values_f32_hex": t.values.astype("<f4")
                    .tobytes().hex()} for t in (decoded.tensors if decoded else [])]
        entries.append({"name": name, "packet": f"{name}.mdup", "expect": want,
                        "last_sequence": last, "hmac_key_hex": key.hex(),
                        "device_id_hex": DEVICE.hex(), "insecure": insecure,
                        "patched_sha256": digest, "tensors": tensors})
    (out_dir / "vectors.txt").write_text("".join(lines))
    (out_dir / "vectors.json").write_text(json.dumps(entries, indent=1) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent)
