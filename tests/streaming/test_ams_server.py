"""The server end to end on a small model with a hand-made parameter map: the device's patched
bytes must equal the deployment of the server's trained student (up to the wire's rounding)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from small_student import deploy as _deploy
from small_student import manifest as _manifest
from small_student import student as _student
from small_student import teacher as _teacher

from mobdistill.contract import wire
from mobdistill.contract.wire import Mode
from mobdistill.errors import UpdateError
from mobdistill.server.session import AmsServer, ServerConfig, Session, UpdateCredentials


def _session(gamma: float = 0.2, credentials: UpdateCredentials | None = None,
             **kw) -> tuple[Session, torch.nn.Module]:
    student = _student()
    cfg = ServerConfig(iterations=5, batch_size=2, lr=1e-2, gamma=gamma, **kw)
    session = Session("phone-1", student, _manifest(student), _teacher(), cfg,
                      credentials=credentials)
    rng = np.random.default_rng(0)
    for t in range(6):
        session.add_frame(float(t), rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
    return session, student


def _decode(session: Session, data: bytes) -> wire.UpdatePacket:
    c = session.credentials
    return wire.decode_update(data, expected_base_sha256=session.space.base_sha256,
                              expected_device_id=c.device_id, hmac_key=c.hmac_key)


def test_device_ends_with_the_servers_student() -> None:
    """Cumulative updates (the paper's): each packet applies to what the device holds."""
    session, student = _session()
    device, guard = _deploy(student), wire.SequenceGuard()
    for phase in range(3):
        result = session.train_phase(now_s=10.0 * (phase + 1))
        assert result.sequence == phase + 1 and 0 < result.num_changed
        packet = _decode(session, result.packet)
        assert packet.mode == Mode.CUMULATIVE and packet.authenticated
        guard.accept(packet)
        device = wire.apply_update(device, session.space.table, packet)
        want = np.frombuffer(_deploy(session.student), "<f4")
        got = np.frombuffer(device, "<f4")
        np.testing.assert_allclose(got, want, rtol=2e-3, atol=1e-6)  # float16 on the wire
    assert session.student.bn.weight.requires_grad is False  # BatchNorm frozen


def test_one_update_mode_for_api_and_cli() -> None:
    """The server, the stream config and the CLI agree: cumulative, with no switch to a mode
    that neither paper nor public code runs."""
    import argparse

    from mobdistill.cli import build_parser
    from mobdistill.experiments.config import StreamConfig

    assert not hasattr(ServerConfig(), "mode") and not hasattr(StreamConfig(), "mode")
    with pytest.raises(SystemExit):
        build_parser(["stream"]).parse_args(["stream", "--update-mode", "base-relative"])
    assert isinstance(build_parser(["stream"]).parse_args(["stream"]), argparse.Namespace)
    session, _ = _session()
    assert _decode(session, session.train_phase(now_s=10.0).packet).mode == Mode.CUMULATIVE


def test_each_session_has_its_own_key_and_device_id() -> None:
    a, _ = _session()
    b, _ = _session()
    assert len(a.credentials.device_id) == 16 and a.credentials.hmac_key
    assert a.credentials != b.credentials
    data = a.train_phase(now_s=10.0).packet
    assert _decode(a, data).device_id == a.credentials.device_id
    base = a.space.base_sha256
    with pytest.raises(UpdateError) as wrong_device:
        wire.decode_update(data, expected_base_sha256=base,
                           expected_device_id=b.credentials.device_id,
                           hmac_key=a.credentials.hmac_key)
    assert wrong_device.value.status == "wrong_device"
    with pytest.raises(UpdateError) as wrong_key:
        wire.decode_update(data, expected_base_sha256=base,
                           expected_device_id=a.credentials.device_id,
                           hmac_key=b.credentials.hmac_key)
    assert wrong_key.value.status == "bad_hmac"


def test_insecure_session_only_on_request() -> None:
    session, _ = _session(credentials=UpdateCredentials.new(insecure=True))
    data = session.train_phase(now_s=10.0).packet
    c = session.credentials
    with pytest.raises(UpdateError) as refused:
        wire.decode_update(data, expected_base_sha256=session.space.base_sha256,
                           expected_device_id=c.device_id, hmac_key=None)
    assert refused.value.status == "bad_hmac"
    packet = wire.decode_update(data, expected_base_sha256=session.space.base_sha256,
                                expected_device_id=c.device_id, hmac_key=None, insecure=True)
    assert not packet.authenticated


def test_session_re_evaluates_asr_every_delta_t_between_updates() -> None:
    session, _ = _session(update_interval_s=10.0, asr_interval_s=2.0)
    assert not session.due(5.0)  # T_update not reached ...
    assert session.rates.evaluations == 2  # ... but ASR ran at 2 s and 4 s
    assert session.due(10.0) and session.rates.evaluations == 5
    session.train_phase(10.0)
    assert session.rates.evaluations == 5  # training does not evaluate the rates itself


def test_round_robin_serves_every_due_session() -> None:
    server = AmsServer()
    for i in range(3):
        session, _ = _session()
        session.id = f"phone-{i}"
        server.add(session)
    served = [r.session_id for r in server.run_due(now_s=10.0)]
    assert sorted(served) == ["phone-0", "phone-1", "phone-2"]
    assert list(server.run_due(now_s=11.0)) == []  # next updates are T_update later
    assert served[0] == "phone-0"
    served = [r.session_id for r in server.run_due(now_s=30.0)]
    assert served[0] == "phone-1"  # the next turn starts with the next session
