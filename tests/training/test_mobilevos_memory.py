"""The memory must carry the first frame's mask from the very first training step.

With frozen BatchNorm at a random initialisation's statistics (an identity) the MobileNetV2
encoders shrink their activations about tenfold per stride: keys come out nearly constant and
values nearly independent of the mask, so the prediction ignored the memory (a logit change of
about 1e-7 when the memory's mask was swapped for an empty one) and nothing learned VOS. The
trainer now sets the encoders' never-set BN statistics from training frames first."""

from __future__ import annotations

import torch

from mobdistill.models import mobilevos
from mobdistill.training import mobilevos_trainer as trainer

SIZE = (32, 32)
CONFIG = mobilevos.Config(key_dim=8, value_dim=8, thin_dim=8, decoder_dims=(16, 8, 8),
                          aspp=False)


def _clip() -> trainer.Clip:
    """A red square drifting right over noise, its mask as object 1."""
    g = torch.Generator().manual_seed(0)
    frames = torch.rand(12, 3, *SIZE, generator=g) * 64
    masks = torch.zeros(12, *SIZE, dtype=torch.int64)
    for t in range(12):
        masks[t, 8:24, 4 + t:20 + t] = 1
        frames[t, 0, 8:24, 4 + t:20 + t] += 150
    return trainer.Clip("drift", frames, masks)


@torch.no_grad()
def _memory_effect(model: mobilevos.MobileVOS, clip: trainer.Clip) -> tuple[float, float]:
    """(relative change of the memory value, mean absolute change of a later frame's logits)
    when frame 0's mask in memory is replaced by an empty one."""
    model.eval()
    given = model.init(clip.frames[:1], clip.masks[:1, None].float())
    empty = model.init(clip.frames[:1], torch.zeros(1, 1, *SIZE))
    value = float((given["value"] - empty["value"]).abs().mean() / given["value"].abs().mean())
    a = model.step(clip.frames[3:4], given["key"], given["value"])["logits"]
    b = model.step(clip.frames[3:4], empty["key"], empty["value"])["logits"]
    return value, float((a - b).abs().mean())


def test_the_prediction_depends_on_the_mask_in_memory_before_any_update() -> None:
    clip = _clip()
    torch.manual_seed(0)
    model = mobilevos.build(CONFIG)
    # zero iterations: only what train() does before its first update (the BN calibration)
    trainer.train(model, [clip], trainer.TrainConfig(iterations=0, distill=False),
                  progress=False)
    value_change, logit_change = _memory_effect(model, clip)
    assert value_change > 0.1  # uncalibrated: about 1e-5
    assert logit_change > 1e-2  # uncalibrated: about 1e-7
    _, key_f16, _, _ = model._encode_key(clip.frames[:1])
    assert key_f16.std() > 0.1  # stride-16 features keep their scale (uncalibrated: about 1e-5)


def test_calibration_sets_only_never_set_statistics() -> None:
    clip = _clip()
    torch.manual_seed(0)
    model = mobilevos.build(CONFIG)
    assert trainer.calibrate_batchnorm(model, [clip], torch.Generator().manual_seed(0)) > 0
    state = {k: v.clone() for k, v in model.state_dict().items()}
    # a second call (a loaded or pretrained model) leaves every statistic alone
    assert trainer.calibrate_batchnorm(model, [clip], torch.Generator().manual_seed(1)) == 0
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    reloaded = mobilevos.build(CONFIG)
    reloaded.load_state_dict(state)
    assert trainer.calibrate_batchnorm(reloaded, [clip], torch.Generator().manual_seed(1)) == 0
    # and BN stays frozen in training mode: the calibrated statistics are what train() uses
    bn = model.key_encoder.features[0][1]
    assert isinstance(bn, torch.nn.BatchNorm2d)
    assert not model.train().key_encoder.features[0][1].training
    assert not torch.equal(bn.running_var, torch.ones_like(bn.running_var))


def test_inverted_windows_take_the_complement_and_leave_the_stream_alone_when_off() -> None:
    clip = _clip()
    plain = trainer.sample_windows([clip], 2, torch.Generator().manual_seed(3))
    off = trainer.sample_windows([clip], 2, torch.Generator().manual_seed(3), 0.0)
    always = trainer.sample_windows([clip], 2, torch.Generator().manual_seed(3), 1.0)
    for _ in range(3):
        (frames, masks), (frames_off, masks_off) = next(plain), next(off)
        assert torch.equal(frames, frames_off) and torch.equal(masks, masks_off)
    frames, masks = next(always)
    # the complement of the clip's mask at the sampled frames
    index = [int((clip.frames == f).all(-1).all(-1).all(-1).nonzero()) for f in frames]
    assert torch.equal(masks, 1 - clip.masks[index])
    half = trainer.sample_windows([clip], 2, torch.Generator().manual_seed(0), 0.5)
    inverted = 0
    for _ in range(40):
        frames, masks = next(half)
        index = [int((clip.frames == f).all(-1).all(-1).all(-1).nonzero()) for f in frames]
        inverted += int(torch.equal(masks, 1 - clip.masks[index]))
    assert 8 <= inverted <= 32
