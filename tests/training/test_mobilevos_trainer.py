"""MobileVOS training on a tiny budget: a DAVIS-layout folder made from a real clip with the selfie
teacher's masks, an unbounded-memory teacher trained first, then the finite-memory student."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mobdistill.models import mobilevos
from mobdistill.training import mobilevos_trainer as trainer
from mobdistill.training.vos_data import load_clips, write_teacher_sequences

SIZE = (64, 64)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[trainer.Clip]:
    from mobdistill.server import teachers

    if not (teachers.cache_dir() / "selfie_segmentation.tflite").is_file():
        pytest.fail("the selfie teacher is not cached: run `make teacher`")
    root = tmp_path_factory.mktemp("davis")
    write_teacher_sequences(root, ["carphone_pristine.mp4"], teachers.selfie_teacher(),
                            size=SIZE, frames=12, split="train", progress=False)
    return load_clips(root, "train", SIZE)


def _model(decoder: tuple[int, int, int]) -> mobilevos.MobileVOS:
    torch.manual_seed(0)
    return mobilevos.build(mobilevos.Config(key_dim=16, value_dim=16, thin_dim=16,
                                            decoder_dims=decoder, aspp=False))


def test_memory_keeps_the_first_frame_and_the_last_q_minus_one() -> None:
    entry = lambda i: {"key": torch.full((1, 1), float(i)), "value": torch.full((1, 1), float(i))}  # noqa: E731
    finite, unbounded = trainer._Memory(entry(0), 2), trainer._Memory(entry(0), None)
    for i in (1, 2, 3):
        finite.push(entry(i))
        unbounded.push(entry(i))
    assert finite.stacked()[0].flatten().tolist() == [0.0, 3.0]
    assert unbounded.stacked()[0].flatten().tolist() == [0.0, 1.0, 2.0, 3.0]


@pytest.mark.slow  # about a minute on 2 cores: MobileNetV2 backbones through 5-frame windows
def test_teacher_then_distilled_student(clips: list[trainer.Clip]) -> None:
    (clip,) = clips
    assert clip.frames.shape == (12, 3, *SIZE) and set(clip.masks.unique().tolist()) == {0, 1}
    teacher = _model((32, 16, 16))
    taught = trainer.train(teacher, clips, trainer.TrainConfig(
        iterations=8, lr=1e-3, distill=False, student_memory=None), progress=False)
    assert np.mean(taught.losses[-3:]) < np.mean(taught.losses[:3])  # it learns the clip
    student = _model((32, 16, 8))
    with pytest.raises(ValueError, match="teacher"):
        trainer.train(student, clips, trainer.TrainConfig(iterations=1))
    result = trainer.train(student, clips, trainer.TrainConfig(iterations=3, lr=1e-3),
                           teacher=teacher, progress=False)
    assert all(np.isfinite(result.losses))
    assert any(t["representation"] > 0 for t in result.terms)  # boundary pixels were sampled
    assert all(t["logit"] > 0 and t["cross_entropy"] > 0 for t in result.terms)
    masks = trainer.predict_clip(student, clip, memory=2)
    assert len(masks) == 12 and np.array_equal(masks[0], clip.masks[0].numpy())
    assert masks[5].shape == SIZE


def test_training_needs_an_annotation_per_frame(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="one per frame"):
        trainer.load_clip("x", [tmp_path / "a.jpg", tmp_path / "b.jpg"], [tmp_path / "a.png"],
                          SIZE)
