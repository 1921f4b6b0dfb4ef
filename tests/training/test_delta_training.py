"""Delta Distillation training: the loss terms on hand-computed values, and `mobdistill delta
train` on a tiny budget writing a checkpoint the exporter takes."""

from __future__ import annotations

import json
import math

import pytest
import torch

from mobdistill.cli import main
from mobdistill.cli.options import select_model
from mobdistill.export.checkpoint import load_checkpoint
from mobdistill.training.delta_loss import delta_distillation_loss, task_loss


def test_distillation_loss_is_the_per_pair_l2_norm_over_root_elements_averaged():
    true = torch.tensor([[3.0, 4.0], [1.0, 1.0]]).reshape(2, 2, 1, 1)
    estimate = torch.tensor([[0.0, 0.0], [1.0, 1.0]]).reshape(2, 2, 1, 1)
    # pair 1: ||(3, 4)|| = 5 over sqrt(2) elements; pair 2: exact, 0
    expected = (5 / math.sqrt(2) + 0) / 2
    assert delta_distillation_loss(true, estimate).item() == pytest.approx(expected)
    with pytest.raises(ValueError):
        delta_distillation_loss(true, estimate[:, :1])


def test_task_loss_is_the_mean_cross_entropy_of_the_delta_frames():
    # p(class 1) = 3/4 for logits (0, ln 3): CE = ln(4/3); a uniform frame: ln 2
    confident = torch.tensor([0.0, math.log(3.0)]).reshape(1, 2, 1, 1)
    uniform = torch.zeros(1, 2, 1, 1)
    target = torch.ones(1, 1, 1, dtype=torch.long)
    got = task_loss([confident, uniform], [target, target]).item()
    assert got == pytest.approx((math.log(4 / 3) + math.log(2)) / 2)
    with pytest.raises(ValueError):
        task_loss([], [])


def test_cli_trains_on_a_tiny_budget_and_the_exporter_takes_the_checkpoint(
        tmp_path, selfie_model, capsys):
    out = tmp_path / "run"
    code = main(["delta", "train", "--tiny", "--resolution", "32x64", "--keyframe-period", "2",
                 "--base-iterations", "2", "--iterations", "2", "--batch-size", "1",
                 "--max-frames", "4", "--clips", "bigbuckbunny.mp4", "--num-threads", "1",
                 "--out", str(out)])
    assert code == 0
    record = json.loads((out / "delta-train.json").read_text())
    assert record["config"]["keyframe_period"] == 2 and record["frames"] == 4
    first, last = record["students_first_last"]
    assert set(first) == {"total", "task", "dd_features13", "dd_features17"}
    state = torch.load(out / "deeplab-delta.pt", weights_only=True)
    # the students moved away from their start (dz~ = 0: a zero last conv)
    assert all(state[f"students.{k}.expand.weight"].abs().max() > 0 for k in range(2))
    # the printed export command builds a model the checkpoint fits exactly
    export_args = record["export"].split()[2:]
    assert export_args[-2:] == ["--checkpoint", str(out / "deeplab-delta.pt")]
    from mobdistill.cli import build_parser

    args = build_parser(["export"]).parse_args(["export", *export_args])
    selection = select_model(args, require_divisible=True)
    model = selection.entry.build(selection.config)
    load_checkpoint(model, out / "deeplab-delta.pt")
    assert selection.resolution == (32, 64)
    assert "mobdistill export" in capsys.readouterr().out


def test_cli_refuses_to_train_on_an_evaluation_clip(tmp_path, selfie_model):
    code = main(["delta", "train", "--tiny", "--clips", "carphone_pristine.mp4",
                 "--out", str(tmp_path)])
    assert code == 2
    assert not any(tmp_path.iterdir())
