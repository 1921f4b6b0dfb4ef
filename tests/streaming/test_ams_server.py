"""The server end to end on a small model with a hand-made parameter map: the device's patched
bytes must equal the deployment of the server's trained student (up to the wire's rounding)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from mobdistill.contract import wire
from mobdistill.server.session import AmsServer, ServerConfig, Session
from mobdistill.contract.wire import Mode
from mobdistill.server.teachers import CallableTeacher


class Student(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn = torch.nn.BatchNorm2d(4)
        self.head = torch.nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.bn(self.conv(x / 255.0))))


def _student() -> Student:
    torch.manual_seed(0)
    model = Student()
    with torch.no_grad():
        model.bn.running_var.uniform_(0.5, 2.0)
        model.bn.weight.uniform_(0.5, 1.5)
    return model.eval()


ENTRIES = [("conv.weight", [0, 2, 3, 1], "bn"), ("head.weight", [0, 2, 3, 1], None),
           ("head.bias", [0], None)]


def _deploy(model: Student) -> bytes:
    """What the exporter would write: a header, then each folded, permuted tensor."""
    params, modules = dict(model.named_parameters()), dict(model.named_modules())
    out = bytearray(b"TFL3" + bytes(12))
    for name, perm, fold in ENTRIES:
        value = params[name].detach().double()
        if fold:
            bn = modules[fold]
            scale = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
            value = value * scale.reshape(-1, 1, 1, 1)
        out += value.permute(*perm).float().numpy().astype("<f4").tobytes()
    return bytes(out)


def _manifest(model: Student) -> dict:
    data, entries, offset = _deploy(model), [], 16
    params = dict(model.named_parameters())
    for i, (name, perm, fold) in enumerate(ENTRIES):
        size = params[name].numel() * 4
        entries.append({"parameter": name, "shape": list(params[name].shape), "tensor_index": 10 + i,
                        "buffer_offset": offset, "buffer_size": size, "dtype": "float32",
                        "permutation": perm,
                        "fold": {"kind": "batchnorm", "module": fold, "axis": 0} if fold else None})
        offset += size
    return {"artifacts": [{"format": "tflite", "sha256": hashlib.sha256(data).hexdigest()}],
            "parameter_map": {"status": "complete", "entries": entries,
                              "unmapped": [{"parameter": "bn.weight", "reason": "folded"}]}}


def _teacher() -> CallableTeacher:
    return CallableTeacher(lambda f: (f[..., 0] > f[..., 2]).astype(np.int64),
                           class_names=("blue", "red"))


def _session(mode: Mode, gamma: float = 0.2, **kw) -> tuple[Session, Student]:
    student = _student()
    cfg = ServerConfig(iterations=5, batch_size=2, lr=1e-2, gamma=gamma, mode=mode, **kw)
    session = Session("phone-1", student, _manifest(student), _teacher(), cfg, hmac_key=b"k")
    rng = np.random.default_rng(0)
    for t in range(6):
        session.add_frame(float(t), rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
    return session, student


def _apply(session: Session, data: bytes, model: bytes, guard: wire.SequenceGuard) -> bytes:
    packet = wire.decode_update(data, expected_base_sha256=session.space.base_sha256, hmac_key=b"k")
    guard.accept(packet)
    return wire.apply_update(model, session.space.table, packet)


@pytest.mark.parametrize("mode", [Mode.BASE_RELATIVE, Mode.CUMULATIVE])
def test_device_ends_with_the_servers_student(mode: Mode) -> None:
    session, student = _session(mode)
    base = _deploy(student)
    device, guard = base, wire.SequenceGuard()
    for phase in range(3):
        result = session.train_phase(now_s=10.0 * (phase + 1))
        assert result.sequence == phase + 1 and 0 < result.num_changed
        start = base if mode == Mode.BASE_RELATIVE else device
        device = _apply(session, result.packet, start, guard)
        want = np.frombuffer(_deploy(session.student), "<f4")
        got = np.frombuffer(device, "<f4")
        np.testing.assert_allclose(got, want, rtol=2e-3, atol=1e-6)  # float16 on the wire
    assert session.student.bn.weight.requires_grad is False  # BatchNorm frozen


def test_base_relative_update_touches_only_gamma_of_the_pristine_model() -> None:
    session, student = _session(Mode.BASE_RELATIVE, gamma=0.1)
    session.train_phase(now_s=10.0)
    result = session.train_phase(now_s=20.0)
    trainable = sum(p.numel() for p in session.trainable)
    assert result.num_changed <= int(np.ceil(0.1 * trainable))
    changed = sum(int((p != session.pristine[n]).sum()) for n, p in session.params.items())
    assert changed == result.num_changed  # restored to pristine, then one phase


def test_round_robin_serves_every_due_session() -> None:
    server = AmsServer()
    for i in range(3):
        session, _ = _session(Mode.BASE_RELATIVE)
        session.id = f"phone-{i}"
        server.add(session)
    served = [r.session_id for r in server.run_due(now_s=10.0)]
    assert sorted(served) == ["phone-0", "phone-1", "phone-2"]
    assert list(server.run_due(now_s=11.0)) == []  # next updates are T_update later
    assert served[0] == "phone-0"
    served = [r.session_id for r in server.run_due(now_s=30.0)]
    assert served[0] == "phone-1"  # the next turn starts with the next session
