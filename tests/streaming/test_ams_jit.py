"""JIT online distillation: teacher cadence and δ adaptation (specs §2)."""

from __future__ import annotations

import numpy as np
import torch

from mobdistill.server.jit import JitConfig, JitDistiller
from mobdistill.server.teachers import CallableTeacher


def _frames(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(n)]


def test_easy_video_doubles_delta_up_to_max() -> None:
    teacher = CallableTeacher(lambda f: (f[..., 0] > 127).astype(np.int64), class_names=("a", "b"))
    torch.manual_seed(0)
    student = torch.nn.Conv2d(3, 2, 1)
    jit = JitDistiller(student, teacher, JitConfig(threshold=0.7, delta_min=2, delta_max=8,
                                                   lr=0.05, u_max=20))
    results = [jit.step(f) for f in _frames(60)]
    ran = [r.index for r in results if r.teacher_ran]
    assert ran[0] == 0
    strides = [r.stride for r in results if r.teacher_ran]
    assert strides[-1] == 8 and all(b - a in (2, 4, 8) for a, b in zip(ran, ran[1:]))
    assert all(r.updates <= 20 for r in results)


def test_unlearnable_video_halves_delta_to_min() -> None:
    rng = np.random.default_rng(1)
    teacher = CallableTeacher(lambda f: rng.integers(0, 2, f.shape[:2]), class_names=("a", "b"))
    jit = JitDistiller(torch.nn.Conv2d(3, 2, 1), teacher, JitConfig(delta_min=4, u_max=2))
    results = [jit.step(f) for f in _frames(20)]
    assert [r.index for r in results if r.teacher_ran] == [0, 4, 8, 12, 16]
    assert all(r.updates == 2 for r in results if r.teacher_ran)
