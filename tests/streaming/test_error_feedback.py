"""Quantized cumulative deltas with error feedback (QDELTA): the server's mirror of the device is
exact (Python and C++ appliers), and what a packet leaves out is sent later, not lost."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from small_student import deploy as _deploy
from small_student import manifest as _manifest
from small_student import student as _student
from small_student import teacher as _teacher

from mobdistill.contract import wire
from mobdistill.contract.wire import ValueCoding
from mobdistill.errors import UpdateError
from mobdistill.runtime.update_verify import run_verify_tool, write_table
from mobdistill.server.error_feedback import DeltaQuantizer, ErrorFeedbackEncoder
from mobdistill.server.live_session import LiveSession
from mobdistill.server.session import ServerConfig, Session


def _session(**config) -> Session:
    student = _student()
    cfg = ServerConfig(iterations=4, batch_size=2, lr=1e-2, gamma=0.3,
                       value_coding=ValueCoding.QDELTA, **config)
    session = Session("phone-1", student, _manifest(student), _teacher(), cfg)
    rng = np.random.default_rng(0)
    for t in range(6):
        session.add_frame(float(t), rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
    return session


def _held_bytes(session: Session, base: bytes) -> bytes:
    out = bytearray(base)
    encoder = session.encoder
    assert isinstance(encoder, ErrorFeedbackEncoder)
    for index, loc in session.space.table.items():
        out[loc.buffer_offset:loc.buffer_offset + loc.buffer_size] = \
            encoder.held[index].astype("<f4" if loc.dtype == "float32" else "<f2").tobytes()
    return bytes(out)


def test_server_mirror_is_what_both_appliers_make(tmp_path: Path, verify_tool: Path) -> None:
    session = _session()
    base = _deploy(_student())
    assert _held_bytes(session, base) == base  # a fresh device holds the export
    device, files = base, []
    for phase in range(1, 5):
        result = session.train_phase(10.0 * phase)
        packet = wire.decode_update(result.packet, expected_base_sha256=session.space.base_sha256,
                                    expected_device_id=session.credentials.device_id,
                                    hmac_key=session.credentials.hmac_key)
        assert all(p.additive and p.step for p in packet.tensors)
        device = wire.apply_update(device, session.space.table, packet)
        assert device == _held_bytes(session, base), f"mirror differs after packet {phase}"
        files.append(tmp_path / f"{phase}.mdup")
        files[-1].write_bytes(result.packet)
    assert device != base
    (tmp_path / "base.bin").write_bytes(base)
    results = run_verify_tool(verify_tool, files, base_sha256=session.space.base_sha256,
                              device_id=session.credentials.device_id,
                              table=write_table(tmp_path / "table.txt", session.space.table),
                              hmac_key=session.credentials.hmac_key,
                              model=tmp_path / "base.bin", chain=True)
    assert [r["status"] for r in results] == ["ok"] * 4
    assert results[-1]["patched_sha256"] == hashlib.sha256(device).hexdigest()


def test_training_continues_from_the_servers_own_weights() -> None:
    session = _session()
    result = session.train_phase(10.0)
    encoder = session.encoder
    assert isinstance(encoder, ErrorFeedbackEncoder)
    name = "head.weight"
    index = session.space.mappings[name].tensor_index
    torch_idx, values = result.delta[name]
    trained = session.params[name].detach().reshape(-1)[torch_idx]
    assert torch.equal(trained, values)  # not rounded to what the device got
    assert encoder.residual_norm() > 0
    assert not np.array_equal(encoder.target[index], encoder.held[index])


def test_left_out_residuals_go_out_later() -> None:
    """One large and many small changes: the first packet leaves the smallest out, later packets
    send them (error feedback), the residual never grows and the device closes in on the target."""
    quantizer = DeltaQuantizer(levels=3, step_scale=1.0, rule="mean", send_at=1.0)
    target = np.zeros(200, np.float32)
    target[0], target[1:] = 1.0, np.linspace(0.005, 0.02, 199)
    held = np.zeros(200, np.float32)
    norms, sent = [float(np.linalg.norm(target))], []
    for _ in range(150):
        patch = quantizer.patch(3, target, held)
        assert patch is not None
        assert np.all((np.abs(wire.delta_levels(patch)) >= 1) & (np.abs(wire.delta_levels(patch))
                                                                 <= 3))
        sent.append(set(patch.indices.tolist()))
        held[patch.indices] = wire.patched_elements(held, patch)
        norms.append(float(np.linalg.norm(target - held)))
    assert 0 in sent[0] and 1 not in sent[0]
    assert set().union(*sent) == set(range(200))
    assert all(b <= a for a, b in zip(norms, norms[1:]))
    assert norms[-1] < 0.05 * norms[0]  # the clipped large change is still being paid out


def _float16_deployment(model: torch.nn.Module) -> tuple[dict, bytes]:
    """The small student exported with float16 weight buffers (a float16-weight variant)."""
    manifest, data = _manifest(model), _deploy(model)
    out, offset = bytearray(data[:16]), 16
    for entry in manifest["parameter_map"]["entries"]:
        values = np.frombuffer(data, "<f4", entry["buffer_size"] // 4, entry["buffer_offset"])
        entry.update(buffer_offset=offset, buffer_size=values.size * 2, dtype="float16")
        out += values.astype("<f2").tobytes()
        offset += values.size * 2
    manifest["artifacts"][0]["sha256"] = hashlib.sha256(out).hexdigest()
    return manifest, bytes(out)


def test_float16_deployed_tensors_take_both_codings() -> None:
    """A float16-weight export: float16 values replace elements, QDELTA adds to them, and the
    error-feedback mirror is still exactly what the applier makes."""
    manifest, base = _float16_deployment(_student())
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (12, 16, 3), dtype=np.uint8) for _ in range(4)]
    for coding in (ValueCoding.F16, ValueCoding.QDELTA):
        cfg = ServerConfig(iterations=3, batch_size=2, lr=1e-2, gamma=0.5, value_coding=coding)
        session = Session("phone-16", _student(), manifest, _teacher(), cfg)
        if coding == ValueCoding.QDELTA:
            session.encoder = ErrorFeedbackEncoder.for_model(
                session.space, session.credentials, base, DeltaQuantizer(7, 1.0, "max", 0.5))
        for t, frame in enumerate(frames):
            session.add_frame(float(t), frame)
        device = base
        for phase in (1, 2):
            result = session.train_phase(10.0 * phase)
            packet = wire.decode_update(result.packet,
                                        expected_base_sha256=session.space.base_sha256,
                                        expected_device_id=session.credentials.device_id,
                                        hmac_key=session.credentials.hmac_key)
            device = wire.apply_update(device, session.space.table, packet)
        assert device != base
        encoder = session.encoder
        if isinstance(encoder, ErrorFeedbackEncoder):
            for index, loc in session.space.table.items():
                held = device[loc.buffer_offset:loc.buffer_offset + loc.buffer_size]
                assert encoder.held[index].dtype == np.float16
                assert held == encoder.held[index].astype("<f2").tobytes()


def test_max_rule_sends_every_residual_of_half_a_step() -> None:
    """step = max|r| / levels: nothing is clipped, each residual of at least half a step goes
    out, and what stays is under half a step."""
    quantizer = DeltaQuantizer(levels=7, step_scale=1.0, rule="max", send_at=0.5)
    rng = np.random.default_rng(2)
    target = rng.normal(0, 0.01, 500).astype(np.float32)
    held = np.zeros(500, np.float32)
    patch = quantizer.patch(0, target, held)
    assert patch is not None and patch.step is not None
    assert patch.step == pytest.approx(np.abs(target).max() / 7, rel=1e-6)
    levels = wire.delta_levels(patch)
    assert np.abs(levels).max() == 7 and np.all(levels != 0)
    held[patch.indices] = wire.patched_elements(held, patch)
    assert np.abs(target - held).max() <= patch.step / 2 * (1 + 1e-5)
    assert set(patch.indices.tolist()) == set(np.flatnonzero(np.abs(target) >= patch.step / 2))


def test_resync_starts_from_the_base_and_state_survives_a_restart() -> None:
    """A device that lost its model gets a base-relative packet and the mirror restarts from
    the base; a restarted server restores mirror and target and continues exactly."""
    session = _session()
    base = _deploy(_student())
    for phase in (1, 2):
        session.train_phase(10.0 * phase)
    encoder = session.encoder
    assert isinstance(encoder, ErrorFeedbackEncoder)
    saved = encoder.state()
    data, _ = encoder.resync(7)
    packet = wire.decode_update(data, expected_base_sha256=session.space.base_sha256,
                                expected_device_id=session.credentials.device_id,
                                hmac_key=session.credentials.hmac_key)
    assert packet.mode == wire.Mode.BASE_RELATIVE and packet.sequence == 7
    assert wire.apply_update(base, session.space.table, packet) == _held_bytes(session, base)
    restarted = _session()
    other = restarted.encoder
    assert isinstance(other, ErrorFeedbackEncoder)
    other.restore(saved)
    for index in saved["held"]:
        assert np.array_equal(other.held[index], saved["held"][index].numpy())
        assert np.array_equal(other.target[index], saved["target"][index].numpy())
    with pytest.raises(UpdateError, match="does not fit"):
        other.restore({"held": {10: torch.zeros(3)}, "target": {}})


def test_live_session_resumes_a_qdelta_device_with_a_base_relative_resync() -> None:
    session = _session()
    live = LiveSession(session, None)
    outcome = live.train(10.0)
    assert outcome is not None
    resume = live.resume(model_sequence=0, last_sequence=outcome.sequence)
    assert resume is not None and resume.action == "resync" and resume.mode == "base_relative"
    assert resume.sequence == outcome.sequence + 1 == session.sequence
    base = _deploy(_student())
    packet = wire.decode_update(resume.packet, expected_base_sha256=session.space.base_sha256,
                                expected_device_id=session.credentials.device_id,
                                hmac_key=session.credentials.hmac_key)
    assert wire.apply_update(base, session.space.table, packet) == _held_bytes(session, base)
    assert "error_feedback" in live.snapshot()
    assert live.resume(session.sequence, session.sequence) is None  # in step: nothing to send


def test_phase_scope_sends_residuals_only_where_the_phase_trained() -> None:
    """scope="phase": a packet carries residuals only at the coordinates this phase trained;
    a residual elsewhere is neither sent nor lost (it waits in target − held), while
    scope="all" sends it with the same packet."""
    session = _session()
    base = _deploy(_student())
    conv = session.space.mappings["conv.weight"]
    head = session.space.mappings["head.weight"].tensor_index
    trained = torch.tensor([0, 1, 2, 5, 9, 27])  # part of conv.weight, in PyTorch order
    params = session.params
    sent = {}
    for scope in ("phase", "all"):
        encoder = ErrorFeedbackEncoder.for_model(session.space, session.credentials, base,
                                                 DeltaQuantizer(3, 1.0, "max", 0.5, scope))
        encoder.target[head][3] += 0.5  # a residual outside this phase's coordinates
        delta = {"conv.weight": (trained, params["conv.weight"].detach().reshape(-1)[trained]
                                 + torch.linspace(0.05, 0.3, len(trained)))}
        data, patches = encoder.encode(delta)
        packet = wire.decode_update(data, expected_base_sha256=session.space.base_sha256,
                                    expected_device_id=session.credentials.device_id,
                                    hmac_key=session.credentials.hmac_key)
        device = wire.apply_update(base, session.space.table, packet)
        held = bytearray(base)
        for index, loc in session.space.table.items():
            held[loc.buffer_offset:loc.buffer_offset + loc.buffer_size] = \
                encoder.held[index].astype("<f4").tobytes()
        assert device == bytes(held)  # the mirror is exact in both scopes
        sent[scope] = {p.tensor_index: set(p.indices.tolist()) for p in patches}
        if scope == "phase":
            inside = conv.to_deployed[trained].numpy()
            assert set(sent[scope]) == {conv.tensor_index}
            assert sent[scope][conv.tensor_index] and sent[scope][conv.tensor_index] <= set(inside)
            left = encoder.target[conv.tensor_index] - encoder.held[conv.tensor_index]
            assert np.abs(left[inside]).max() <= patches[0].step / 2 * (1 + 1e-5)
            assert encoder.target[head][3] - encoder.held[head][3] == pytest.approx(0.5)
    assert 3 in sent["all"][head]


def test_session_with_rows_and_phase_scope_sends_only_whole_trained_rows() -> None:
    """`ServerConfig(selection="rows", delta_scope="phase")` (`--selection rows --delta-scope
    phase`): after the second phase every packet index lies in a row that phase trained."""
    session = _session(selection="rows", delta_scope="phase")
    assert session.encoder.quantizer.scope == "phase"
    phases: list[list[torch.Tensor]] = []
    end_phase = session.optimizer.end_phase
    session.optimizer.end_phase = lambda: phases.append(end_phase()) or phases[-1]
    session.train_phase(10.0)
    result = session.train_phase(20.0)
    trained = {name: torch.nonzero(m.reshape(-1)).reshape(-1) for name, m in
               zip(session.space.mappings, phases[-1])}
    packet = wire.decode_update(result.packet, expected_base_sha256=session.space.base_sha256,
                                expected_device_id=session.credentials.device_id,
                                hmac_key=session.credentials.hmac_key)
    allowed = {}
    for name, mapping in session.space.mappings.items():
        if name in trained:
            allowed[mapping.tensor_index] = set(mapping.to_deployed[trained[name]].tolist())
    assert packet.tensors
    for patch in packet.tensors:
        assert set(patch.indices.tolist()) <= allowed.get(patch.tensor_index, set())
