"""`mobdistill pretrain` on a tiny budget: trained, scored on held-out clips, cached, and never
trained or scored on the wrong clips."""

from __future__ import annotations

import json

import pytest

from mobdistill.cli import main

TINY = ["pretrain", "--tiny", "--resolution", "32x64", "--iterations", "8", "--batch-size", "4",
        "--lr", "1e-2", "--clips", "bigbuckbunny.mp4", "--frame-step", "11",
        "--heldout", "carphone_pristine.mp4", "--heldout-step", "30", "--num-threads", "1",
        "--json"]


def test_pretrain_trains_scores_heldout_and_caches(tmp_path, capsys, selfie_model):
    assert main([*TINY, "--cache", str(tmp_path)]) == 0
    record = json.loads(capsys.readouterr().out)
    assert all(0 < loss < 10 for loss in record["loss_first_last"])
    held = record["heldout"]
    assert held["clips"] == ["carphone_pristine.mp4"]
    assert held["carphone_pristine.mp4"]["frames"] == 4  # frames 0, 30, 60, 90 of 120
    assert 0.0 <= held["miou_with_background"] <= 1.0
    assert record["training_frames"] == 12  # 132 frames, every 11th
    assert record["clips"]["bigbuckbunny.mp4"]  # its digest
    folder = tmp_path / record["folder"].rsplit("/", 1)[1]
    _assert_trained(folder / "student.pt", record)
    stamp = (folder / "student.pt").stat().st_mtime_ns
    assert main([*TINY, "--cache", str(tmp_path)]) == 0  # cached: not trained again
    assert json.loads(capsys.readouterr().out)["heldout"] == held
    assert (folder / "student.pt").stat().st_mtime_ns == stamp


def test_cache_key_follows_every_weight_setting_and_the_recipe_version(monkeypatch):
    from mobdistill.experiments import pretrain

    base = pretrain.PretrainConfig()
    key = base.key("selfie")
    assert key.startswith(f"v{pretrain.FORMAT_VERSION}-deeplab-64x128-")
    assert pretrain.PretrainConfig(seed=1).key("selfie") != key
    assert pretrain.PretrainConfig(frame_step=3).key("selfie") != key
    assert base.key("other-teacher") != key
    # held-out clips only score the weights: a server that does not know them finds the student
    assert pretrain.PretrainConfig(heldout_clips=("vtest.avi",)).key("selfie") == key
    # each model's own width knob counts, the other model's does not
    assert pretrain.PretrainConfig(aspp_channels=16).key("selfie") != key
    assert pretrain.PretrainConfig(width_multiplier=0.25).key("selfie") == key
    jitnet = pretrain.PretrainConfig(model="jitnet")
    assert jitnet.key("selfie").startswith(f"v{pretrain.FORMAT_VERSION}-jitnet-64x128-m0.5-")
    assert pretrain.PretrainConfig(model="jitnet", width_multiplier=0.25).key("selfie") != \
        jitnet.key("selfie")
    assert pretrain.PretrainConfig(model="jitnet", aspp_channels=16).key("selfie") == \
        jitnet.key("selfie")
    monkeypatch.setattr(pretrain, "FORMAT_VERSION", pretrain.FORMAT_VERSION + 1)
    assert base.key("selfie") != key


@pytest.mark.parametrize("flag, clip", [("--clips", "carphone_pristine.mp4"),
                                        ("--heldout", "box.mp4")])
def test_pretrain_refuses_clips_in_the_wrong_role(tmp_path, capsys, flag, clip):
    args = [a for a in TINY]
    args[args.index(flag) + 1] = clip
    assert main([*args, "--cache", str(tmp_path)]) == 2
    assert "docs/clips.md" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def _assert_trained(checkpoint, record) -> None:
    """The saved weights are the seeded init moved by training, not the init itself."""
    import torch

    from mobdistill.experiments import pretrain

    settings = dict(record["settings"], resolution=tuple(record["settings"]["resolution"]),
                    clips=tuple(record["settings"]["clips"]),
                    heldout_clips=tuple(record["settings"]["heldout_clips"]))
    init, _ = pretrain.build_model(pretrain.PretrainConfig(**settings), 2)
    saved = torch.load(checkpoint, weights_only=True)
    moved = [name for name, value in init.state_dict().items()
             if value.dtype.is_floating_point and not torch.equal(value, saved[name])]
    assert len(moved) > 10
