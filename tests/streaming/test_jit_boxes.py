"""JITNet's loss weighting (§3.2): 5x inside the teacher's boxes dilated by 15 %, 1x outside."""

from __future__ import annotations

import numpy as np
import torch

from mobdistill.server.jit import _weighted_loss, box_weights


def test_weights_are_five_inside_each_dilated_component_box_and_one_outside():
    labels = np.zeros((40, 60), np.int64)
    labels[10:30, 20:40] = 1  # a 20x20 square: grown by 15 % -> 1.5 px each side
    labels[0:2, 55:60] = 1  # a 2x5 blob in the corner: its box clipped to the frame
    labels[25, 2] = 1  # one pixel: 0.075 px each side, rounded outward to a whole pixel
    weights = box_weights(labels, inside=5.0, dilation=0.15)
    expected = np.ones((40, 60), np.float32)
    expected[8:32, 18:42] = 5  # rows 10-1.5 .. 30+1.5 -> 8..32 (outward rounding)
    expected[0:3, 54:60] = 5
    expected[24:27, 1:4] = 5
    np.testing.assert_array_equal(weights, expected)


def test_components_are_per_class_and_a_bare_background_weighs_one():
    assert (box_weights(np.zeros((8, 8), np.int64)) == 1).all()
    labels = np.zeros((20, 20), np.int64)
    labels[2:6, 2:6] = 1
    labels[12:16, 12:16] = 2
    weights = box_weights(labels, inside=5.0, dilation=0.0)
    assert weights.sum() == 400 - 32 + 5 * 32  # two 4x4 boxes, nothing between them


def test_weighted_loss_counts_boxed_pixels_five_times():
    logits = torch.zeros(1, 2, 2, 2)
    logits[0, 1, 0, 0] = 3.0  # confident and wrong on the boxed pixel
    target = torch.zeros(1, 2, 2, dtype=torch.int64)
    weights = torch.tensor([[5.0, 1.0], [1.0, 1.0]])
    per_pixel = torch.nn.functional.cross_entropy(logits, target, reduction="none")[0]
    expected = (5 * per_pixel[0, 0] + per_pixel[0, 1] + per_pixel[1, 0] + per_pixel[1, 1]) / 4
    assert torch.isclose(_weighted_loss(logits, target, weights), expected)
    assert torch.isclose(_weighted_loss(logits, target, None), per_pixel.mean())
