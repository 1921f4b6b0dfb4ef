"""Hostile update packets for the decoders (issue 9's reproductions), shared by
tests/hostile/test_decoder_bombs.py and benchmarks/hostile_inputs.py.

Every packet is authentic (right key, device id and base), so it reaches the payload parser: the
worst case, a sender that has the key or a device running with --insecure_updates. Packets whose
payload would inflate to hundreds of MiB are built from repeated full-flush deflate segments, so
they cost milliseconds to make and are still valid zlib streams (checked in the test).
"""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from mobdistill.contract import wire
from mobdistill.contract.wire import DecodeLimits, IndexCoding, TensorPatch, ValueCoding

KEY = b"hostile-test-key"
DEVICE = bytes(range(0xA0, 0xB0))
BASE = hashlib.sha256(b"the deployed student").digest()
PEAK_LIMIT_BYTES = 64 << 20
STUDENTS = ("deeplab", "jitnet", "mobilevos")
Q8_PARAMS = struct.pack("<ff", 0.01, 0.0)
QDELTA_PARAMS = struct.pack("<f", 0.01)


def student_numels(name: str) -> list[int]:
    """Elements per tensor of a student's parameter map, from the PyTorch model at its paper
    config (no export): one tensor per parameter. Folding BatchNorm into the convolutions only
    merges tensors, so this is an upper bound on the deployed map's elements."""
    from mobdistill.models import registry

    entry = registry.get(name)
    return [p.numel() for p in entry.build(registry.configure(entry)).parameters()]


def write_table(path: Path, numels: Sequence[int]) -> Path:
    """A tensor table for the verify tool: tensor i holds numels[i] float32 elements."""
    offset, lines = 0, []
    for i, n in enumerate(numels):
        lines.append(f"{i} {offset} {4 * n} float32\n")
        offset += 4 * n
    path.write_text("".join(lines))
    return path


def deflate_repeated(prefix: bytes, chunk: bytes, repeats: int) -> bytes:
    """A zlib stream of ``prefix + chunk * repeats``: one full-flush segment for ``chunk`` is
    emitted ``repeats`` times (no segment refers back past a full flush), then a final empty
    block and the Adler-32 of the whole."""
    packer = zlib.compressobj(9)
    head = packer.compress(prefix) + packer.flush(zlib.Z_FULL_FLUSH)
    segment = packer.compress(chunk) + packer.flush(zlib.Z_FULL_FLUSH)
    adler = zlib.adler32(prefix)
    for _ in range(repeats):
        adler = zlib.adler32(chunk, adler)
    final_empty_block = b"\x03\x00"  # BFINAL=1, fixed Huffman, end-of-block
    return head + segment * repeats + final_empty_block + struct.pack(">I", adler)


def sealed(payload_stored: bytes, raw_len: int, n_tensors: int, compressed: bool) -> bytes:
    flags = wire.FLAG_HMAC | (wire.FLAG_COMPRESSED if compressed else 0)
    return wire.seal((wire.MAGIC, wire.VERSION, flags, 0, BASE, DEVICE, 1, n_tensors,
                      len(payload_stored), raw_len), payload_stored, KEY)


def _dense_q8_bomb(n_records: int, numel: int, coding: ValueCoding = ValueCoding.Q8) -> bytes:
    params = Q8_PARAMS if coding == ValueCoding.Q8 else QDELTA_PARAMS
    records = b"".join(wire.record_header(i, numel, numel, IndexCoding.DENSE, coding,
                                          params, 0, numel) for i in range(n_records))
    zeros = bytes(1 << 22)
    repeats = n_records * numel // len(zeros)
    return sealed(deflate_repeated(records, zeros, repeats), len(records) + n_records * numel,
                  n_records, True)


def _bitmap_bomb() -> bytes:
    numel = 1 << 29
    record = wire.record_header(0, numel, 1, IndexCoding.BITMAP, ValueCoding.F32, b"",
                                numel // 8, 4)
    ones = b"\xff" * (1 << 22)
    stream = deflate_repeated(record, ones, (numel // 8) // len(ones))
    return sealed(stream, len(record) + numel // 8 + 4, 1, True)


def _zip_bomb(limits: DecodeLimits, claimed: int) -> bytes:
    """Claims ``claimed`` raw bytes, inflates to 1 GiB of zeros."""
    return sealed(deflate_repeated(b"", bytes(1 << 22), 256), claimed, 1, True)


def _lying_counts(numels: Sequence[int]) -> bytes:
    n = max(numels)
    record = wire.record_header(int(np.argmax(numels)), n, n, IndexCoding.DELTA_VARINT,
                                ValueCoding.F32, b"", n, 4 * n)
    return sealed(record + bytes(64), len(record) + 64, 1, False)


def _huge_count() -> bytes:
    n = (1 << 39) + 5
    record = wire.record_header(0, n, n, IndexCoding.DELTA_VARINT, ValueCoding.F32, b"", n, 4 * n)
    return sealed(record + bytes(16), len(record) + 16, 1, False)


def _bitmap_all_set_count_1(numels: Sequence[int]) -> bytes:
    i = int(np.argmax(numels))
    n = numels[i]
    record = wire.record_header(i, n, 1, IndexCoding.BITMAP, ValueCoding.F32, b"",
                                (n + 7) // 8, 4)
    payload = record + b"\xff" * (n // 8) + (bytes([(1 << (n % 8)) - 1]) if n % 8 else b"") \
        + bytes(4)
    stored = zlib.compress(payload, 6)
    return sealed(stored, len(payload), 1, True)


def _qdelta_lying_count(numels: Sequence[int]) -> bytes:
    n = max(numels)
    record = wire.record_header(int(np.argmax(numels)), n, n, IndexCoding.DENSE,
                                ValueCoding.QDELTA, QDELTA_PARAMS, 0, n)
    return sealed(record + bytes(64), len(record) + 64, 1, False)


def _qdelta_nan_step() -> bytes:
    record = wire.record_header(0, 100, 1, IndexCoding.DELTA_VARINT, ValueCoding.QDELTA,
                                struct.pack("<f", float("nan")), 1, 1)
    return sealed(record + b"\x05\x7f", len(record) + 2, 1, False)


def largest_legal_qdelta(numels: Sequence[int]) -> bytes:
    """Dense QDELTA levels of every tensor, deflated: the largest delta packet."""
    rng = np.random.default_rng(0)
    patches = [TensorPatch(i, n, np.arange(n), wire.dequantize_delta(
        rng.integers(-127, 128, n), 1e-3), additive=True, step=1e-3)
        for i, n in enumerate(numels)]
    return wire.encode_update(patches, base_sha256=BASE, sequence=1, device_id=DEVICE,
                              hmac_key=KEY, value_coding=ValueCoding.QDELTA)


def _varint_0x81() -> bytes:
    payload = bytes([0]) + b"\xff" * 9 + b"\x81"
    return sealed(payload, len(payload), 1, False)


def _many_tensors() -> bytes:
    return sealed(bytes(10), 10, wire.MAX_TENSORS, False)


def largest_legal(numels: Sequence[int]) -> bytes:
    """Dense float32 of every tensor, deflated: the biggest packet the encoder makes."""
    rng = np.random.default_rng(0)
    patches = [TensorPatch(i, n, np.arange(n), rng.normal(0, 0.1, n).astype(np.float32))
               for i, n in enumerate(numels)]
    return wire.encode_update(patches, base_sha256=BASE, sequence=1, device_id=DEVICE,
                              hmac_key=KEY, value_coding=ValueCoding.F32,
                              mode=wire.Mode.BASE_RELATIVE)


@dataclass(frozen=True)
class Hostile:
    name: str
    description: str
    expect: str
    build: Callable[[Sequence[int], DecodeLimits], bytes]


CASES = (
    Hostile("two_dense_q8_16m", "16 KB: two dense Q8 records of 16M elements", "too_large",
            lambda n, lim: _dense_q8_bomb(2, 1 << 24)),
    Hostile("bitmap_2_29_all_set_count_1", "65 KB: a BITMAP of 2^29 bits, all set, count 1",
            "too_large", lambda n, lim: _bitmap_bomb()),
    Hostile("eight_dense_64m", "eight dense Q8 records of 64M elements", "too_large",
            lambda n, lim: _dense_q8_bomb(8, 1 << 26)),
    Hostile("zip_bomb_at_limit", "claims the model's raw limit, inflates to 1 GiB",
            "malformed", lambda n, lim: _zip_bomb(lim, lim.max_raw_bytes)),
    Hostile("zip_bomb_small_claim", "claims 100 raw bytes, inflates to 1 GiB", "malformed",
            lambda n, lim: _zip_bomb(lim, 100)),
    Hostile("count_lies_largest_tensor", "the largest tensor, dense count, 64 payload bytes",
            "truncated", lambda n, lim: _lying_counts(n)),
    Hostile("count_2_39", "numel = count = 2^39 + 5 in 16 payload bytes", "too_large",
            lambda n, lim: _huge_count()),
    Hostile("bitmap_all_set_real_tensor", "the largest tensor's bitmap all set, count 1",
            "malformed", lambda n, lim: _bitmap_all_set_count_1(n)),
    Hostile("varint_0x81_at_end", "a 10-byte varint ending in 0x81 at the payload end",
            "malformed", lambda n, lim: _varint_0x81()),
    Hostile("65536_tensors_10_bytes", "65536 records claimed in 10 payload bytes", "truncated",
            lambda n, lim: _many_tensors()),
    Hostile("largest_legal_dense_f32", "dense float32 of every tensor (legal)", "ok",
            lambda n, lim: largest_legal(n)),
    Hostile("two_dense_qdelta_16m", "two dense QDELTA records of 16M elements", "too_large",
            lambda n, lim: _dense_q8_bomb(2, 1 << 24, ValueCoding.QDELTA)),
    Hostile("qdelta_count_lies_largest_tensor", "dense QDELTA of the largest tensor, 64 bytes",
            "truncated", lambda n, lim: _qdelta_lying_count(n)),
    Hostile("qdelta_nan_step", "a QDELTA record whose step is NaN", "non_finite",
            lambda n, lim: _qdelta_nan_step()),
    Hostile("largest_legal_dense_qdelta", "dense QDELTA levels of every tensor (legal)", "ok",
            lambda n, lim: largest_legal_qdelta(n)),
)


def python_status(packet: bytes, limits: DecodeLimits) -> str:
    try:
        wire.decode_update(packet, expected_base_sha256=BASE, expected_device_id=DEVICE,
                           hmac_key=KEY, limits=limits)
    except wire.UpdateError as err:
        return err.status
    return "ok"


@dataclass(frozen=True)
class ToolRun:
    status: str
    peak_rss_bytes: int
    wall_s: float


# A bare interpreter (no site packages) starts the tool and reports its child's ru_maxrss: a
# child forked from the test process would count the test's own resident pages (torch and all)
# as its peak. The few MB of the bare interpreter forked before exec are included, so the figure
# is an upper bound on the tool's own peak.
_MEASURE = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
done = subprocess.run(sys.argv[1:], capture_output=True)
wall = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
print(json.dumps({"rc": done.returncode, "out": done.stdout.decode(),
                  "err": done.stderr.decode()[-2000:], "peak": peak, "wall": wall}))
"""


def measure(argv: Sequence[str]) -> dict:
    """Runs ``argv`` from a bare interpreter: {rc, out, err, peak (bytes), wall (s)}."""
    done = subprocess.run([sys.executable, "-I", "-S", "-c", _MEASURE, *argv],
                          capture_output=True, text=True, timeout=300, check=True)
    return json.loads(done.stdout)


def run_tool(tool: Path, packet: Path, table: Path, key_file: Path) -> ToolRun:
    """One packet through the C++ verify tool in a fresh process: its status, its peak resident
    memory (ru_maxrss of that process) and its wall time."""
    report = measure([str(tool), "--base-sha256", BASE.hex(), "--device-id", DEVICE.hex(),
                      "--table", str(table), "--hmac-key-file", str(key_file), str(packet)])
    if report["rc"] not in (0, 1):
        raise RuntimeError(f"verify tool died ({report['rc']}): {report['err']}")
    return ToolRun(json.loads(report["out"])["status"], report["peak"], report["wall"])
