"""Issue 9's decoder reproductions as inputs: both decoders reject each with the same, right
status; the C++ verify tool never crashes, and its peak memory, for every hostile packet and for
the largest legal packet of each student, stays under 64 MB (limits derived from the model)."""

from __future__ import annotations

import zlib
from pathlib import Path

import decoder_bombs as bombs
import pytest

from mobdistill.contract.wire import DecodeLimits
from mobdistill.runtime.update_verify import find_verify_tool, write_key_file


@pytest.fixture(scope="module")
def tool() -> Path:
    return find_verify_tool(build=True)


@pytest.fixture(scope="module", params=bombs.STUDENTS)
def student(request, tmp_path_factory) -> tuple[str, list[int], Path, Path]:
    numels = bombs.student_numels(request.param)
    work = tmp_path_factory.mktemp(f"bombs-{request.param}")
    return (request.param, numels, bombs.write_table(work / "table.txt", numels),
            write_key_file(work, bombs.KEY))


def test_repeated_deflate_is_a_valid_stream() -> None:
    stream = bombs.deflate_repeated(b"head", b"\x01\x02" * 5000, 7)
    assert zlib.decompress(stream) == b"head" + b"\x01\x02" * 5000 * 7


def test_limits_follow_the_students(student) -> None:
    name, numels, _, _ = student
    limits = DecodeLimits.for_numels(numels)
    assert limits.max_elements == sum(numels) < 3_000_000, name  # 0.75M to 2.5M elements
    assert limits.max_raw_bytes < 4.2 * sum(numels) + 100 * len(numels)


@pytest.mark.parametrize("case", bombs.CASES, ids=[c.name for c in bombs.CASES])
def test_hostile_packet(student, tool: Path, tmp_path: Path, case: bombs.Hostile) -> None:
    name, numels, table, key_file = student
    limits = DecodeLimits.for_numels(numels)
    packet = case.build(numels, limits)
    path = tmp_path / f"{case.name}.mdup"
    path.write_bytes(packet)
    assert bombs.python_status(packet, limits) == case.expect
    run = bombs.run_tool(tool, path, table, key_file)
    assert run.status == case.expect, (name, case.name, run)
    assert run.peak_rss_bytes < bombs.PEAK_LIMIT_BYTES, (name, case.name, run)


def test_oversized_file_is_refused_unread(student, tool: Path, tmp_path: Path) -> None:
    """The tool refuses a file above the model's largest packet (C++ MaxPacketBytes, Python
    DecodeLimits.max_packet_bytes: the same bound) without reading it; one byte less is read."""
    _, numels, table, key_file = student
    bound = DecodeLimits.for_numels(numels).max_packet_bytes()
    path = tmp_path / "big.mdup"
    with open(path, "wb") as out:
        out.truncate(bound + 1)  # sparse: costs no disk
    run = bombs.run_tool(tool, path, table, key_file)
    assert run.status == "too_large" and run.peak_rss_bytes < bombs.PEAK_LIMIT_BYTES
    with open(path, "r+b") as out:
        out.truncate(bound)
    assert bombs.run_tool(tool, path, table, key_file).status == "bad_magic"
