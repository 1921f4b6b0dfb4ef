"""Resuming without the network: a catch-up or resync packet must leave the device holding
exactly what every packet in turn would have; persisted sessions come back whole."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "streaming"))
from small_student import deploy, manifest, student, teacher  # noqa: E402

from mobdistill.contract import protocol, wire  # noqa: E402
from mobdistill.server.live_session import CATCH_UP, RESYNC, LiveSession  # noqa: E402
from mobdistill.server.session import ServerConfig, Session, UpdateCredentials  # noqa: E402


def _live(state: Path | None = None, credentials: UpdateCredentials | None = None) -> LiveSession:
    model = student()
    session = Session("phone", model, manifest(model), teacher(),
                      ServerConfig(iterations=4, batch_size=2, lr=1e-2, gamma=0.2,
                                   update_interval_s=1.0, asr_interval_s=1.0),
                      credentials=credentials or UpdateCredentials(bytes(range(16)), b"k" * 32))
    live = LiveSession(session, state)
    rng = np.random.default_rng(0)
    for t in range(4):
        live.session.add_frame(float(t) * 0.25, rng.integers(0, 256, (12, 16, 3), np.uint8))
    return live


def _apply(live: LiveSession, model: bytes, packet: bytes, guard: wire.SequenceGuard) -> bytes:
    c, space = live.session.credentials, live.session.space
    decoded = wire.decode_update(packet, expected_base_sha256=space.base_sha256,
                                 expected_device_id=c.device_id, hmac_key=c.hmac_key)
    guard.accept(decoded)
    # Base-relative values replace elements of the pristine base, cumulative ones the current.
    target = deploy(student()) if decoded.mode == wire.Mode.BASE_RELATIVE else model
    return wire.apply_update(target, space.table, decoded)


def _train(live: LiveSession, phases: int, start_s: float = 1.0) -> list[bytes]:
    packets = []
    for k in range(phases):
        outcome = live.train(start_s + k)
        assert outcome is not None
        packets.append(outcome.packet)
    return packets


def test_catch_up_equals_the_missed_packets() -> None:
    live = _live()
    packets = _train(live, 4)
    base = deploy(student())
    everything, guard = base, wire.SequenceGuard()
    for p in packets:
        everything = _apply(live, everything, p, guard)
    # The device got packet 1, then lost the connection: one catch-up packet numbered 2.
    device = _apply(live, base, packets[0], wire.SequenceGuard())
    guard = wire.SequenceGuard(1)
    resume = live.resume(model_sequence=1, last_sequence=1)
    assert resume is not None and resume.action == CATCH_UP and resume.sequence == 2
    device = _apply(live, device, resume.packet, guard)
    assert device == everything
    # The next trained packet follows the catch-up's number and applies on top.
    nxt = _train(live, 1, start_s=5.0)[0]
    device = _apply(live, device, nxt, guard)
    assert live.sequence == 3 and guard.last_sequence == 3


def test_restarted_engine_gets_a_base_relative_resync() -> None:
    live = _live()
    packets = _train(live, 3)
    everything, guard = deploy(student()), wire.SequenceGuard()
    for p in packets:
        everything = _apply(live, everything, p, guard)
    # The app restarted: its engine runs the base model and refuses sequences <= 3.
    resume = live.resume(model_sequence=0, last_sequence=3)
    assert resume is not None and resume.action == RESYNC and resume.sequence == 4
    assert resume.mode == "base_relative"
    device = _apply(live, deploy(student()), resume.packet, wire.SequenceGuard(3))
    assert device == everything
    assert live.resume(model_sequence=4, last_sequence=4) is None


def test_persisted_session_restores_weights_sequence_and_catch_up(tmp_path) -> None:
    path = tmp_path / "sessions" / "phone.pt"
    live = _live(path)
    packets = _train(live, 3)
    assert path.is_file() and path.stat().st_mode & 0o777 == 0o600
    restored = _live(path)
    assert restored.sequence == 3
    for name, p in live.session.params.items():
        assert np.array_equal(p.detach().numpy(), restored.session.params[name].detach().numpy())
    device = _apply(live, deploy(student()), packets[0], wire.SequenceGuard())
    resume = restored.resume(model_sequence=1, last_sequence=1)
    assert resume is not None
    expected, guard = deploy(student()), wire.SequenceGuard()
    for p in packets:
        expected = _apply(live, expected, p, guard)
    assert _apply(restored, device, resume.packet, wire.SequenceGuard(1)) == expected
    assert not list(path.parent.glob(".*"))  # no temporary file left behind


def test_protocol_refuses_oversized_and_unknown_frames_before_reading_them() -> None:
    limits = protocol.Limits(max_chunk_bytes=1000)
    head = protocol.FRAME_HEAD.pack(10**9, int(protocol.MessageType.FRAMES), 10)
    with pytest.raises(protocol.ProtocolError) as err:
        protocol.parse_head(head, protocol.CLIENT_TYPES, limits)
    assert err.value.code == "too_large"
    with pytest.raises(protocol.ProtocolError) as err:
        protocol.parse_head(protocol.FRAME_HEAD.pack(20, 99, 0), protocol.CLIENT_TYPES, limits)
    assert err.value.code == "bad_type"
    with pytest.raises(protocol.ProtocolError) as err:  # a server-only type from a device
        protocol.parse_head(protocol.FRAME_HEAD.pack(20, int(protocol.MessageType.UPDATE), 0),
                            protocol.CLIENT_TYPES, limits)
    assert err.value.code == "bad_type"
    frame = protocol.encode(protocol.Message(protocol.MessageType.ACK, {"sequence": 3}, b"xy"))
    kind, header_len, body_len = protocol.parse_head(frame[:9], protocol.CLIENT_TYPES, limits)
    assert (kind, body_len) == (protocol.MessageType.ACK, 2)
    assert protocol.parse_header(kind, frame[9:9 + header_len]) == {"sequence": 3}
    with pytest.raises(protocol.ProtocolError):
        protocol.check_preface(b"GET / ")


def test_trainer_serves_due_devices_round_robin() -> None:
    """One trainer, several due devices: each in turn, starting after the one served last
    (AMS §3), never two phases of one device at once."""
    import asyncio

    from mobdistill.server.live import RoundRobinTrainer

    delivered: list[bytes] = []
    running: set[bytes] = set()

    async def train(device: bytes, when: float):
        assert device not in running
        running.add(device)
        await asyncio.sleep(0.02)
        running.discard(device)
        return object()

    async def scenario() -> None:
        trainer = RoundRobinTrainer(train, 1, lambda device, outcome, when: delivered.append(
            device))
        for device in (b"a", b"b", b"c"):
            trainer.request(device, 1.0)
        while len(delivered) < 3:
            await asyncio.sleep(0.01)
        trainer.request(b"c", 2.0)
        trainer.request(b"a", 2.0)
        while len(delivered) < 5:
            await asyncio.sleep(0.01)
        await trainer.stop()

    asyncio.run(scenario())
    assert delivered == [b"a", b"b", b"c", b"a", b"c"]


def test_one_phase_per_slot_across_devices() -> None:
    """A fleet's slot is an actor: two devices on one actor are trained one after the other,
    devices on different actors at once."""
    import asyncio

    from mobdistill.server.live import RoundRobinTrainer

    slot_of = {b"a": 0, b"b": 0, b"c": 1}
    running: set[int] = set()
    overlaps: list[set[int]] = []

    async def train(device: bytes, when: float):
        assert slot_of[device] not in running
        running.add(slot_of[device])
        overlaps.append(set(running))
        await asyncio.sleep(0.05)
        running.discard(slot_of[device])
        return object()

    async def scenario() -> list[bytes]:
        delivered: list[bytes] = []
        trainer = RoundRobinTrainer(train, 4, lambda d, o, w: delivered.append(d),
                                    slot_of.__getitem__)
        for device in (b"a", b"b", b"c"):
            trainer.request(device, 1.0)
        while len(delivered) < 3:
            await asyncio.sleep(0.01)
        await trainer.stop()
        return delivered

    delivered = asyncio.run(scenario())
    assert sorted(delivered) == [b"a", b"b", b"c"]
    assert {0, 1} in overlaps  # the two actors ran at once


def test_a_device_that_does_not_read_is_dropped_not_buffered() -> None:
    """Packets for a device that stops reading pile up only to the outgoing queue's bound (plus
    what the kernel takes); then the server drops that connection."""
    import asyncio
    import socket

    from mobdistill.server.live import Connection, ServeOptions

    async def scenario() -> tuple[int, int, bool]:
        accepted: asyncio.Future = asyncio.get_running_loop().create_future()
        server = await asyncio.start_server(lambda r, w: accepted.set_result((r, w)),
                                            "127.0.0.1", 0)
        device = socket.socket()
        device.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        device.connect(server.sockets[0].getsockname())  # and never reads
        reader, writer = await accepted
        connection = Connection(reader, writer, ServeOptions(outgoing_queue=4,
                                                             write_timeout_s=0.5))
        writing = asyncio.ensure_future(connection.write_loop())
        queued_max, sent = 0, 0
        while not connection.closed.is_set() and sent < 500:
            connection.send(protocol.Message(protocol.MessageType.UPDATE, {"sequence": sent},
                                             bytes(1 << 20)))
            sent += 1
            queued_max = max(queued_max, connection.outgoing.qsize())
            await asyncio.sleep(0.005)
        writing.cancel()
        device.close()
        server.close()
        return sent, queued_max, connection.closed.is_set()

    sent, queued_max, closed = asyncio.run(scenario())
    assert closed and queued_max <= 4
    assert sent < 100  # 1 MiB packets: the queue and the kernel's buffers, not 500 MiB
