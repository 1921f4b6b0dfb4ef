"""The committed vectors through the Python decoder and the C++ decoder, and a bounded
differential fuzz: mutated packets must be accepted or rejected cleanly — and identically — by
both, never crash the C++ side."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from mobdistill.errors import UpdateError
from mobdistill.contract import wire
from mobdistill.runtime.update_verify import run_verify_tool

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "vectors"))
import make_vectors  # noqa: E402


def _entries(vectors_dir: Path) -> list[dict]:
    return json.loads((vectors_dir / "vectors.json").read_text())


def test_vectors_are_reproducible(vectors_dir: Path, tmp_path: Path) -> None:
    make_vectors.main(tmp_path)
    for path in sorted(vectors_dir.glob("*")):
        if path.suffix != ".py" and path.is_file():
            assert (tmp_path / path.name).read_bytes() == path.read_bytes(), path.name


def test_python_decoder_on_vectors(vectors_dir: Path) -> None:
    base = (vectors_dir / "base.bin").read_bytes()
    for entry in _entries(vectors_dir):
        packet = (vectors_dir / entry["packet"]).read_bytes()
        key = bytes.fromhex(entry["hmac_key_hex"])
        status, patched, decoded, message = make_vectors.run_reference(
            packet, base, entry["last_sequence"], key)
        if entry["expect"] != "ok":
            assert status == "error", entry["name"]
            assert __import__("re").search(entry["python_error"], message), (entry["name"], message)
            continue
        assert hashlib.sha256(patched).hexdigest() == entry["patched_sha256"]
        for want, got in zip(entry["tensors"], decoded.tensors):
            assert got.tensor_index == want["tensor_index"]
            assert got.indices.tolist() == want["indices"]
            assert got.values.astype("<f4").tobytes().hex() == want["values_f32_hex"]


def test_cpp_decoder_on_vectors(vectors_dir: Path, verify_tool: Path) -> None:
    ctest = verify_tool.parent / "mobdistill_update_test"
    done = subprocess.run([str(ctest), str(vectors_dir)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr


# ----------------------------------------------------------------------------- fuzz
def _rewrap(packet: bytes, raw: bytes, compress: bool) -> bytes:
    fields = list(wire.HEADER.unpack_from(packet))
    stored = zlib.compress(raw, 6) if compress else raw
    fields[2] = (fields[2] & ~wire.FLAG_COMPRESSED) | (wire.FLAG_COMPRESSED if compress else 0)
    fields[7], fields[8] = len(stored), len(raw)
    body = wire.HEADER.pack(*fields) + stored
    return body + struct.pack("<I", zlib.crc32(body))


def _reseal(data: bytes) -> bytes:
    if len(data) < wire.HEADER.size + 4:
        return data
    stored = struct.unpack_from("<I", data, 52)[0]
    at = wire.HEADER.size + stored
    if at + 4 > len(data):
        return data
    return data[:at] + struct.pack("<I", zlib.crc32(data[:at])) + data[at + 4:]


def _flip(data: bytes, rng: np.random.Generator, start: int = 0) -> bytes:
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 4))):
        pos = int(rng.integers(start, len(out)))
        out[pos] ^= 1 << int(rng.integers(0, 8))
    return bytes(out)


def _mutate(packet: bytes, raw: bytes, rng: np.random.Generator) -> bytes:
    kind = int(rng.integers(0, 6))
    if kind == 0:
        return _flip(packet, rng)
    if kind == 1:
        return packet[:int(rng.integers(0, len(packet)))]
    if kind == 2:
        return _reseal(_flip(packet, rng, start=4))
    if kind == 3:  # raw payload bit flips, valid envelope
        return _rewrap(packet, _flip(raw, rng), bool(rng.integers(0, 2)))
    if kind == 4:  # raw payload cut or grown
        cut = int(rng.integers(0, len(raw)))
        tail = raw[cut + 1:] if rng.integers(0, 2) else rng.bytes(3) + raw[cut:]
        return _rewrap(packet, raw[:cut] + tail, bool(rng.integers(0, 2)))
    return _rewrap(packet, raw + rng.bytes(int(rng.integers(1, 9))), False)


def _python_verdict(data: bytes, base: bytes) -> tuple[str, str]:
    try:
        decoded = wire.decode_update(data, expected_base_sha256=hashlib.sha256(base).digest())
        wire.SequenceGuard(0).check(decoded)
        return "ok", hashlib.sha256(wire.apply_update(base, make_vectors.TABLE, decoded)).hexdigest()
    except UpdateError:
        return "error", ""


def test_differential_fuzz(vectors_dir: Path, verify_tool: Path, tmp_path: Path) -> None:
    base = (vectors_dir / "base.bin").read_bytes()
    seeds = [(vectors_dir / f"{n}.mdup").read_bytes()
             for n in ("ok_f16_delta", "ok_q8_bitmap_cumulative")]
    rng = np.random.default_rng(2024)
    files, verdicts = [], []
    for i in range(600):
        seed = seeds[i % len(seeds)]
        raw = zlib.decompress(seed[wire.HEADER.size:-4])
        data = _mutate(seed, raw, rng)
        path = tmp_path / f"m{i:04d}.mdup"
        path.write_bytes(data)
        files.append(path)
        verdicts.append(_python_verdict(data, base))
    results = run_verify_tool(verify_tool, files, base_sha256=hashlib.sha256(base).digest(),
                              model=vectors_dir / "base.bin", table=vectors_dir / "table.txt")
    accepted = 0
    for path, (py_status, py_sha), cpp in zip(files, verdicts, results):
        cpp_ok = cpp["status"] == "ok"
        assert cpp_ok == (py_status == "ok"), (path.name, py_status, cpp)
        if cpp_ok:
            accepted += 1
            assert cpp["patched_sha256"] == py_sha, path.name
    assert 0 < accepted < len(files)  # the fuzz reached both outcomes


@pytest.mark.skipif(not (shutil.which("clang++") and shutil.which("cmake")),
                    reason="the libFuzzer target needs clang (Debian clang, installed by make)")
def test_libfuzzer_target_bounded_run(vectors_dir: Path, tmp_path: Path) -> None:
    """The libFuzzer target under ASan/UBSan, seeded with the vectors: a bounded run in the suite;
    longer runs use -max_total_time (docs/wire-format.md). Any crash or sanitizer report fails."""
    source = Path(__file__).resolve().parents[2] / "android" / "engine" / "update"
    build = tmp_path / "build"
    configure = subprocess.run(
        ["cmake", "-S", str(source), "-B", str(build), "-DMOBDISTILL_UPDATE_FUZZ=ON",
         "-DMOBDISTILL_UPDATE_TESTS=OFF", "-DCMAKE_CXX_COMPILER=clang++"],
        capture_output=True, text=True, timeout=120)
    assert configure.returncode == 0, configure.stderr
    compiled = subprocess.run(["cmake", "--build", str(build), "--target",
                               "mobdistill_update_fuzzer"], capture_output=True, text=True,
                              timeout=300)
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    done = subprocess.run([str(build / "mobdistill_update_fuzzer"), "-runs=100000", "-seed=1",
                           "-max_total_time=120", str(corpus), str(vectors_dir)],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "Done 100000 runs" in done.stderr
    assert any(corpus.iterdir())  # coverage grew beyond the seeds: the parser was reached
