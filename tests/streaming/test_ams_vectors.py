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
            packet, base, entry["last_sequence"], key, entry["insecure"],
            bytes.fromhex(entry["device_id_hex"]))
        assert status == entry["expect"], (entry["name"], message)
        if status != "ok":
            continue
        assert hashlib.sha256(patched).hexdigest() == entry["patched_sha256"]
        for want, got in zip(entry["tensors"], decoded.tensors):
            assert got.tensor_index == want["tensor_index"]
            assert got.indices.tolist() == want["indices"]
            assert got.values.astype("<f4").tobytes().hex() == want["values_f32_hex"]


def test_vectors_cover_every_status(vectors_dir: Path) -> None:
    expected = {e["expect"] for e in _entries(vectors_dir)}
    assert expected >= {"ok", "bad_magic", "bad_version", "truncated", "bad_checksum", "bad_hmac",
                        "wrong_device", "base_mismatch", "replay", "malformed", "out_of_range",
                        "non_finite", "unsupported", "too_large"}


def test_verify_tool_on_vectors(vectors_dir: Path, verify_tool: Path) -> None:
    """The shipped tool (not only the CTest) reports each vector's exact status."""
    for entry in _entries(vectors_dir):
        [row] = run_verify_tool(verify_tool, [vectors_dir / entry["packet"]],
                                base_sha256=hashlib.sha256((vectors_dir / "base.bin")
                                                           .read_bytes()).digest(),
                                device_id=bytes.fromhex(entry["device_id_hex"]),
                                table=vectors_dir / "table.txt",
                                hmac_key=bytes.fromhex(entry["hmac_key_hex"]) or None,
                                insecure=entry["insecure"], last_sequence=entry["last_sequence"],
                                model=vectors_dir / "base.bin")
        assert row["status"] == entry["expect"], (entry["name"], row)
        if row["status"] == "ok":
            assert row["patched_sha256"] == entry["patched_sha256"]


def test_cpp_decoder_on_vectors(vectors_dir: Path, verify_tool: Path) -> None:
    ctest = verify_tool.parent / "mobdistill_update_test"
    done = subprocess.run([str(ctest), str(vectors_dir)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr


# ----------------------------------------------------------------------------- fuzz
KEY, DEVICE = make_vectors.KEY, make_vectors.DEVICE


def _rewrap(packet: bytes, raw: bytes, compress: bool) -> bytes:
    """A new payload in a valid, authentic envelope: mutations reach the payload parser."""
    fields = list(wire.HEADER.unpack_from(packet))
    stored = zlib.compress(raw, 6) if compress else raw
    fields[2] = (fields[2] & ~wire.FLAG_COMPRESSED) | (wire.FLAG_COMPRESSED if compress else 0)
    fields[8], fields[9] = len(stored), len(raw)
    return wire.seal(fields, stored, KEY)


def _reseal(data: bytes) -> bytes:
    """Recomputes CRC and HMAC after a header mutation, where the lengths still allow it."""
    if len(data) < wire.HEADER.size + 4:
        return data
    stored = struct.unpack_from("<I", data, 68)[0]
    at = wire.HEADER.size + stored
    if at + 4 + wire.HMAC_BYTES != len(data) or not data[5] & wire.FLAG_HMAC:
        return data
    return wire.seal(wire.HEADER.unpack_from(data), data[wire.HEADER.size:at], KEY)


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
    status, patched, _, _ = make_vectors.run_reference(data, base, 0, KEY)
    return status, hashlib.sha256(patched).hexdigest() if patched else ""


def test_differential_fuzz(vectors_dir: Path, verify_tool: Path, tmp_path: Path) -> None:
    """600 mutated packets: both decoders give the same status name and the same patched bytes."""
    base = (vectors_dir / "base.bin").read_bytes()
    seeds = [(vectors_dir / f"{n}.mdup").read_bytes()
             for n in ("ok_f16_delta", "ok_q8_bitmap_cumulative")]
    rng = np.random.default_rng(2024)
    files, verdicts = [], []
    for i in range(600):
        seed = seeds[i % len(seeds)]
        raw = zlib.decompress(seed[wire.HEADER.size:-4 - wire.HMAC_BYTES])
        data = _mutate(seed, raw, rng)
        path = tmp_path / f"m{i:04d}.mdup"
        path.write_bytes(data)
        files.append(path)
        verdicts.append(_python_verdict(data, base))
    results = run_verify_tool(verify_tool, files, base_sha256=hashlib.sha256(base).digest(),
                              device_id=DEVICE, table=vectors_dir / "table.txt", hmac_key=KEY,
                              model=vectors_dir / "base.bin")
    for path, (py_status, py_sha), cpp in zip(files, verdicts, results):
        assert cpp["status"] == py_status, (path.name, py_status, cpp)
        if py_status == "ok":
            assert cpp["patched_sha256"] == py_sha, path.name
    statuses = {v[0] for v in verdicts}
    assert "ok" in statuses and len(statuses) >= 6, statuses  # the fuzz reached many outcomes


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
                           "-max_total_time=120", f"-dict={source / 'fuzz' / 'decode_fuzzer.dict'}",
                           str(corpus), str(vectors_dir)],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "Done 100000 runs" in done.stderr
    assert any(corpus.iterdir())  # coverage grew beyond the seeds: the parser was reached
