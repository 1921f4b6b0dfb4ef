"""The delta-distilled DeepLab: Algorithm 2's schedule on real clip frames, and its state."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mobdistill.models import complexity, deeplabv3_mnv2, registry
from mobdistill.models import delta_distill as dd
from mobdistill.video import read_frames

TINY = dd.tiny_config()


@pytest.fixture(scope="module")
def model() -> dd.DeltaDeepLab:
    torch.manual_seed(0)
    return dd.build(TINY)


@pytest.fixture(scope="module")
def frames() -> list[torch.Tensor]:
    clip = read_frames("cup.mp4", 7, size=(64, 128), start=30)
    return [torch.from_numpy(f).permute(2, 0, 1)[None].float() for f in clip]


def test_keyframes_of_the_schedule_are_the_original_deeplab(model, frames):
    original = deeplabv3_mnv2.build(TINY.deeplab())
    original.load_state_dict(model.base.state_dict())
    with torch.no_grad():
        outputs = dd.run_schedule(model, frames, period=3)
        for index in (0, 3, 6):
            assert torch.equal(outputs[index]["logits"], original(frames[index]))
        # between keyframes the students run: the output is not the original's
        assert not torch.allclose(outputs[1]["logits"], original(frames[1]), atol=1e-3)


def test_delta_frame_adds_each_students_estimate_to_the_carried_state(model, frames):
    with torch.no_grad():
        key = model.keyframe(frames[0])
        out = model.delta(frames[1], **{n + dd.PREVIOUS: key[n] for n in model.state})
        x_now = model.stem(frames[1])
        assert torch.equal(out[model.state[0]], x_now)  # the first input is always exact
        inputs = [x_now, *(out[n] for n in model.state[1:-1])]
        for k, student in enumerate(model.students):
            name, source = model.state[k + 1], model.state[k]
            expected = key[name] + student(inputs[k], key[source])
            torch.testing.assert_close(out[name], expected, rtol=0, atol=0)
            assert out[name].abs().max() > 1  # not vacuous: real feature magnitudes


def test_an_unchanged_frame_leaves_the_keyframe_state_and_logits(model, frames):
    with torch.no_grad():
        key = model.keyframe(frames[2])
        same = model.delta(frames[2], **{n + dd.PREVIOUS: key[n] for n in model.state})
    for name in ("logits", *model.state):
        torch.testing.assert_close(same[name], key[name], rtol=0, atol=1e-5)


def test_state_shapes_match_the_signatures_and_the_schedule_carries_every_state():
    entry = registry.get("deeplab-delta")
    keyframe, delta = entry.signatures(TINY, 64, 128)
    with torch.no_grad():
        maps = dd.build(TINY).features(torch.zeros(1, 3, 64, 128))
    for name, value in zip(dd.state_names(TINY), maps):
        out = next(t for t in keyframe.outputs if t.name == name)
        assert out.shape == (1, value.shape[2], value.shape[3], value.shape[1])
    carry = entry.schedule(TINY).carry
    assert [i for _, i in carry] == [t.name for t in delta.inputs if t.role == "state"]


@pytest.mark.parametrize("units", [(), ((4, 6), (8, 10)), ((6, 4),), ((16, 18),)])
def test_units_must_be_contiguous_blocks_of_the_backbone(units):
    with pytest.raises(ValueError):
        dataclasses.replace(TINY, units=units)


def test_info_reports_keyframe_delta_and_amortised_flops():
    entry = registry.get("deeplab-delta")
    config = dataclasses.replace(entry.paper_config(), keyframe_period=4)
    info = complexity.describe(entry, config, (256, 512))
    plain = complexity.signature_flops(registry.get("deeplab"), entry.paper_config().deeplab(),
                                       256, 512)["serving_default"]
    assert info.flops["keyframe"] == plain  # a keyframe costs exactly the original network
    schedule = info.schedule
    assert schedule is not None and schedule["period"] == 4
    assert info.flops["delta"] < plain / 2
    assert schedule["average_flops"] == pytest.approx((plain + 3 * info.flops["delta"]) / 4)
