"""Writes the committed update test vectors (run from anywhere; output is deterministic).

    .venv/bin/python tests/vectors/make_vectors.py [OUT_DIR]

Files: ``base.bin`` (a fake 2 KiB model with three float32 tensors), ``table.txt`` (its tensor
table: ``tensor_index buffer_offset buffer_size dtype``), ``*.mdup`` packets, ``vectors.txt`` (one
line per packet for the C++ test: ``name expected_status last_sequence hmac_key_hex
patched_sha256``) and ``vectors.json`` (the same plus the decoded tensors and the Python error
pattern). Expected results come from the Python reference decoder in contract/wire.py.
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
import zlib
from pathlib import Path

import numpy as np

from mobdistill.errors import UpdateError
from mobdistill.contract import wire
from mobdistill.contract.wire import Mode, SequenceGuard, TensorLocation, TensorPatch, ValueCoding

KEY = b"mobdistill-test-key"
TABLE = {2: TensorLocation(64, 400), 5: TensorLocation(512, 1200), 8: TensorLocation(1744, 64)}
# expected C++ status -> Python message pattern
PATTERNS = {"bad_magic": "bad magic", "bad_version": "version", "truncated": "truncated|padded",
            "bad_checksum": "bad checksum", "bad_hmac": "HMAC", "base_mismatch": "base-model",
            "replay": "replayed|missed", "out_of_range": "out of range|not updatable|elements",
            "non_finite": "non-finite", "malformed": "."}


def _base_model() -> bytes:
    rng = np.random.default_rng(1234)
    model = bytearray(rng.integers(0, 256, 2048, dtype=np.uint8).tobytes())
    for loc in TABLE.values():
        model[loc.buffer_offset:loc.buffer_offset + loc.buffer_size] = (
            rng.normal(0, 0.5, loc.buffer_size // 4).astype("<f4").tobytes())
    return bytes(model)


def _patch(rng, tensor_index: int, count: int) -> TensorPatch:
    numel = TABLE[tensor_index].buffer_size // 4
    idx = np.sort(rng.choice(numel, count, replace=False))
    return TensorPatch(tensor_index, numel, idx, rng.normal(0, 0.5, count))


def _reseal(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def _raw(base: bytes, payload: bytes, n_tensors: int, sequence: int = 1) -> bytes:
    head = wire.HEADER.pack(wire.MAGIC, 1, 0, 0, base, sequence, n_tensors, len(payload),
                            len(payload))
    return _reseal(head + payload)


def _packets(base_sha: bytes) -> list[tuple[str, bytes, int, bytes]]:
    """(name, packet, last_sequence, hmac key) for each vector."""
    rng = np.random.default_rng(7)
    enc = wire.encode_update
    ok1 = enc([_patch(rng, 2, 10), _patch(rng, 5, 30)], base_sha256=base_sha, sequence=1)
    ok2 = enc([_patch(rng, 5, 150), _patch(rng, 8, 16)], base_sha256=base_sha, sequence=1,
              mode=Mode.CUMULATIVE, value_coding=ValueCoding.Q8)
    ok3 = enc([_patch(rng, 2, 100)], base_sha256=base_sha, sequence=7, hmac_key=KEY,
              value_coding=ValueCoding.F32, compress=False)
    other = hashlib.sha256(b"another model").digest()
    unknown = enc([TensorPatch(4, 100, np.array([1]), np.array([1.0]))], base_sha256=base_sha,
                  sequence=1)
    wrong_numel = enc([TensorPatch(2, 99, np.array([1]), np.array([1.0]))], base_sha256=base_sha,
                      sequence=1)
    record = bytes([2, 100, 1, 0, 0])  # tensor 2, numel 100, 1 update, delta varint, f32
    return [
        ("ok_f16_delta", ok1, 0, b""),
        ("ok_q8_bitmap_cumulative", ok2, 0, b""),
        ("ok_f32_hmac_raw", ok3, 3, KEY),
        ("bad_magic", b"XDUP" + ok1[4:], 0, b""),
        ("bad_version", _reseal(ok1[:4] + b"\x02" + ok1[5:-4]), 0, b""),
        ("truncated", ok1[:-3], 0, b""),
        ("bad_checksum", ok1[:70] + bytes([ok1[70] ^ 0x10]) + ok1[71:], 0, b""),
        ("bad_hmac", ok3[:-1] + bytes([ok3[-1] ^ 1]), 3, KEY),
        ("unauthenticated", ok1, 0, KEY),
        ("base_mismatch", enc([_patch(rng, 2, 3)], base_sha256=other, sequence=1), 0, b""),
        ("replay", ok1, 1, b""),
        ("cumulative_gap", enc([_patch(rng, 8, 2)], base_sha256=base_sha, sequence=3,
                               mode=Mode.CUMULATIVE), 1, b""),
        ("index_out_of_range", _raw(base_sha, record + bytes([100]) + bytes(4), 1), 0, b""),
        ("non_finite", _raw(base_sha, record + bytes([5]) + struct.pack("<f", np.inf), 1), 0, b""),
        ("trailing_bytes", _raw(base_sha, record + bytes([5]) + bytes(5), 1), 0, b""),
        ("tensor_not_in_model", unknown, 0, b""),
        ("tensor_size_mismatch", wrong_numel, 0, b""),
    ]


def run_reference(packet: bytes, base: bytes, last: int, key: bytes):
    """(status, patched bytes or None, decoded packet or None, message) by the Python decoder."""
    try:
        decoded = wire.decode_update(packet, expected_base_sha256=hashlib.sha256(base).digest(),
                                     hmac_key=key or None)
        SequenceGuard(last).check(decoded)
        return "ok", wire.apply_update(base, TABLE, decoded), decoded, ""
    except UpdateError as err:
        return "error", None, None, str(err)


def main(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    base = _base_model()
    (out_dir / "base.bin").write_bytes(base)
    (out_dir / "table.txt").write_text("# tensor_index buffer_offset buffer_size dtype\n" + "".join(
        f"{i} {loc.buffer_offset} {loc.buffer_size} {loc.dtype}\n" for i, loc in TABLE.items()))
    lines, entries = [], []
    expected = {"index_out_of_range": "out_of_range", "tensor_not_in_model": "out_of_range",
                "tensor_size_mismatch": "out_of_range", "cumulative_gap": "replay",
                "unauthenticated": "bad_hmac", "trailing_bytes": "malformed"}
    for name, packet, last, key in _packets(hashlib.sha256(base).digest()):
        (out_dir / f"{name}.mdup").write_bytes(packet)
        status, patched, decoded, message = run_reference(packet, base, last, key)
        want = "ok" if name.startswith("ok_") else expected.get(name, name)
        assert (status == "ok") == (want == "ok"), (name, message)
        digest = hashlib.sha256(patched).hexdigest() if patched else "-"
        lines.append(f"{name} {want} {last} {key.hex() or '-'} {digest}\n")
        tensors = [{"tensor_index": t.tensor_index, "numel": t.numel,
                    "indices": t.indices.tolist(), "values_f32_hex": t.values.astype("<f4")
                    .tobytes().hex()} for t in (decoded.tensors if decoded else [])]
        entries.append({"name": name, "packet": f"{name}.mdup", "expect": want,
                        "python_error": "" if want == "ok" else PATTERNS[want],
                        "last_sequence": last, "hmac_key_hex": key.hex(),
                        "patched_sha256": digest, "tensors": tensors})
    (out_dir / "vectors.txt").write_text("".join(lines))
    (out_dir / "vectors.json").write_text(json.dumps(entries, indent=1) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent)
