"""Quantized cumulative deltas with error feedback (QDELTA): the server's mirror of the device is
exact (Python and C++ appliers), and what a packet leaves out is sent later, not lost."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from small_student import deploy as _deploy
from small_student import manifest as _manifest
from small_student import student as _student
from small_student import teacher as _teacher

from mobdistill.contract import wire
from mobdistill.contract.wire import ValueCoding
from mobdistill.runtime.update_verify import run_verify_tool, write_table
from mobdistill.server.error_feedback import DeltaQuantizer, ErrorFeedbackEncoder
from mobdistill.server.session import ServerConfig, Session


def _session() -> Session:
    student = _student()
    cfg = ServerConfig(iterations=4, batch_size=2, lr=1e-2, gamma=0.3,
                       value_coding=ValueCoding.QDELTA)
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
            encoder.held[index].astype("<f4").tobytes()
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
    quantizer = DeltaQuantizer(levels=3, step_scale=1.0)
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
