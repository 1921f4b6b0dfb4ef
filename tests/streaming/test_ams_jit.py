"""JIT online distillation: teacher cadence t ≡ 0 (mod δ), δ adaptation (specs §2), and JIT as the
AMS paper ran it: γ-sparse gradient-guided packets, δ on the frame clock."""

from __future__ import annotations

import math

import numpy as np
import torch
from small_student import manifest, student, teacher

from mobdistill.contract import wire
from mobdistill.experiments.clips import Stream
from mobdistill.experiments.config import StreamConfig
from mobdistill.experiments.report import downlink_summary
from mobdistill.experiments.simulate import ServerWork, Uplink, deliver, simulate_jit
from mobdistill.server.jit import JitConfig, JitDistiller
from mobdistill.server.session import UpdateCredentials
from mobdistill.server.teachers import CallableTeacher


def _frames(n: int, size: tuple[int, int] = (8, 8)) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(n)]


def test_easy_video_doubles_delta_up_to_max_on_multiples_of_delta() -> None:
    teacher_fn = CallableTeacher(lambda f: (f[..., 0] > 127).astype(np.int64),
                                 class_names=("a", "b"))
    torch.manual_seed(0)
    jit = JitDistiller(torch.nn.Conv2d(3, 2, 1), teacher_fn,
                       JitConfig(threshold=0.7, delta_min=2, delta_max=8, lr=0.05, u_max=20,
                                 gamma=1.0))
    results = [jit.step(f) for f in _frames(60)]
    ran = [r for r in results if r.teacher_ran]
    assert ran[0].index == 0 and ran[-1].stride == 8
    strides_before = [2] + [r.stride for r in ran[:-1]]
    assert all(r.index % d == 0 for r, d in zip(ran, strides_before))  # t ≡ 0 (mod δ)
    assert all(not r.teacher_ran for r in results if r.index % 8 and r.index > 16)
    assert all(r.updates <= 20 for r in results)


def test_unlearnable_video_halves_delta_to_min() -> None:
    rng = np.random.default_rng(1)
    teacher_fn = CallableTeacher(lambda f: rng.integers(0, 2, f.shape[:2]), class_names=("a", "b"))
    jit = JitDistiller(torch.nn.Conv2d(3, 2, 1), teacher_fn, JitConfig(delta_min=4, u_max=2))
    results = [jit.step(f) for f in _frames(20)]
    assert [r.index for r in results if r.teacher_ran] == [0, 4, 8, 12, 16]
    assert all(r.updates == 2 for r in results if r.teacher_ran)


def _jit_run(time_scale: float, value_coding: str = "f16"):
    frames = np.stack(_frames(40, (12, 16)))
    times = np.arange(40) / 30.0
    stream = Stream(frames, times, ["clip"] * 40, 40 / 30.0)
    model = student()
    config = StreamConfig(scheme="jit", uplink_codec="jpeg", time_scale=time_scale,
                          jit_threshold=0.99, server_speedup=1e6, value_coding=value_coding)
    credentials = UpdateCredentials.new()
    planned = simulate_jit(stream, model, manifest(model), teacher(), config,
                           Uplink("jpeg", 200.0), credentials, ServerWork())
    deliver(planned, stream, config.link_mbps)
    return stream, model, config, credentials, planned


def test_jit_sends_sparse_cumulative_packets_on_the_frame_clock() -> None:
    stream, model, config, credentials, planned = _jit_run(time_scale=0.2)
    assert len(planned) >= 3
    trainable = sum(p.numel() for n, p in model.named_parameters() if n != "bn.weight"
                    and n != "bn.bias")
    base = bytes.fromhex(manifest(model)["artifacts"][0]["sha256"])
    for p in planned:
        packet = wire.decode_update(p.packet, expected_base_sha256=base,
                                    expected_device_id=credentials.device_id,
                                    hmac_key=credentials.hmac_key)
        values = sum(len(t.indices) for t in packet.tensors)
        assert packet.mode == wire.Mode.CUMULATIVE
        assert 0 < values == p.values <= math.ceil(0.05 * trainable)  # γ = 5 %, not dense
        frame = int(round(p.boundary_s * 30))
        assert frame % 8 == 0  # a teacher frame: t ≡ 0 (mod δ), δ_min = 8 real frames
    assert [p.sequence for p in planned] == list(range(1, len(planned) + 1))
    # δ counts real frames: the AMS time scale changes neither the teacher frames nor the rate
    _, _, config_1, _, planned_1 = _jit_run(time_scale=1.0)
    assert [p.boundary_s for p in planned_1] == [p.boundary_s for p in planned]
    down = downlink_summary(config, stream, planned, [])
    assert down["kbit_s"] > 0 and down["kbit_s_paper_clock"] == down["kbit_s"]
    assert downlink_summary(config_1, stream, planned, [])["kbit_s_paper_clock"] == down["kbit_s"]
    ams = downlink_summary(StreamConfig(time_scale=0.2), stream, planned, [])
    assert math.isclose(ams["kbit_s_paper_clock"], 0.2 * ams["kbit_s"], abs_tol=0.01)


def test_jit_with_qdelta_sends_quantized_residual_packets() -> None:
    """--value-coding qdelta with --scheme jit: the error-feedback encoder AMS uses, so every
    packet decodes as additive QDELTA patches, numbered 1..n, whose counts the plan records."""
    _, model, _, credentials, planned = _jit_run(time_scale=0.2, value_coding="qdelta")
    assert len(planned) >= 3
    base = bytes.fromhex(manifest(model)["artifacts"][0]["sha256"])
    for p in planned:
        packet = wire.decode_update(p.packet, expected_base_sha256=base,
                                    expected_device_id=credentials.device_id,
                                    hmac_key=credentials.hmac_key)
        assert packet.mode == wire.Mode.CUMULATIVE
        assert packet.tensors and all(t.additive and t.step for t in packet.tensors)  # QDELTA
        assert sum(len(t.indices) for t in packet.tensors) == p.values > 0
    assert [p.sequence for p in planned] == list(range(1, len(planned) + 1))
