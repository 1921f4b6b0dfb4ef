"""The unified-loss vs cross-entropy comparison is paired: for one seed, both losses train on the
same windows from the same initial weights, even though the unified loss draws random boundary
pixels (a shared random stream would shift every later window)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

from mobdistill.models import mobilevos
from mobdistill.training import mobilevos_trainer as trainer
from mobdistill.training.mobilevos_loss import MobileVOSLossConfig

SIZE = (32, 32)
SAMPLE_WINDOWS = trainer.sample_windows
CONFIG = mobilevos.Config(key_dim=8, value_dim=8, thin_dim=8, decoder_dims=(16, 8, 8),
                          aspp=False)


def _clips() -> list[trainer.Clip]:
    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(12, *SIZE, dtype=torch.int64)
    for t in range(12):  # a square drifting right: boundaries in every frame
        masks[t, 8:24, 4 + t:20 + t] = 1
    frames = torch.rand(12, 3, *SIZE, generator=g) * 255
    return [trainer.Clip("drift", frames, masks)]


def _windows_seen(loss: str, monkeypatch: pytest.MonkeyPatch,
                  ) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
    seen: list[torch.Tensor] = []

    def recording(*args, **kwargs):
        for frames, masks in SAMPLE_WINDOWS(*args, **kwargs):
            seen.append(frames.clone())
            yield frames, masks

    monkeypatch.setattr(trainer, "sample_windows", recording)
    torch.manual_seed(7)
    student = mobilevos.build(CONFIG)
    initial = {k: v.clone() for k, v in student.state_dict().items()}
    teacher = mobilevos.build(CONFIG) if loss == "unified" else None
    # max_pixels 4 forces the random subsampling of boundary pixels on every frame
    config = trainer.TrainConfig(iterations=2, lr=1e-3, seed=7, distill=loss == "unified",
                                 loss=MobileVOSLossConfig(max_pixels=4))
    trainer.train(student, _clips(), config, teacher=teacher, progress=False)
    return seen, initial


def test_both_losses_see_the_same_windows_from_the_same_init(monkeypatch) -> None:
    ce_windows, ce_init = _windows_seen("ce", monkeypatch)
    unified_windows, unified_init = _windows_seen("unified", monkeypatch)
    assert len(ce_windows) == len(unified_windows) == 2
    assert all(torch.equal(a, b) for a, b in zip(ce_windows, unified_windows))
    assert ce_init.keys() == unified_init.keys()
    assert all(torch.equal(ce_init[k], unified_init[k]) for k in ce_init)


def _vos_common():
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "vos_common.py"
    spec = importlib.util.spec_from_file_location("vos_common", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("vos_common", module)
    spec.loader.exec_module(module)
    return module


def test_paired_difference_interval_by_hand() -> None:
    result = _vos_common().paired_difference([0.6, 0.7, 0.9], [0.5, 0.5, 0.6])
    # differences 0.1, 0.2, 0.3: mean 0.2, sd 0.1, t(0.975, 2) = 4.302653
    half = 4.302653 * 0.1 / math.sqrt(3)
    assert result["n"] == 3 and result["mean"] == pytest.approx(0.2)
    assert result["ci95"] == pytest.approx([0.2 - half, 0.2 + half], abs=1e-6)
