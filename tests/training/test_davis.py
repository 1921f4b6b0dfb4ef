"""DAVIS-2017 layout and the J / F definitions, on masks whose scores are worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from mobdistill.davis import (
    boundary_accuracy,
    boundary_map,
    read_davis,
    region_similarity,
    score_sequence,
    summarise,
    write_davis,
)


def _dot(row: int, col: int, size: int = 10) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[row, col] = True
    return mask


def test_region_similarity_is_iou() -> None:
    pred, truth = np.zeros((4, 4), bool), np.zeros((4, 4), bool)
    pred[:2, :2] = True
    truth[:2, :3] = True
    assert region_similarity(pred, truth) == pytest.approx(4 / 6)
    assert region_similarity(np.zeros((4, 4), bool), np.zeros((4, 4), bool)) == 1.0


def test_boundary_pixels_look_right_down_and_diagonally() -> None:
    square = np.zeros((4, 4), bool)
    square[:2, :2] = True
    assert sorted(map(tuple, np.argwhere(boundary_map(square)))) == [(0, 1), (1, 0), (1, 1)]
    # a lone pixel: itself and the three neighbours that see it to their right/below/diagonal
    assert sorted(map(tuple, np.argwhere(boundary_map(_dot(5, 5))))) == [
        (4, 4), (4, 5), (5, 4), (5, 5)]


def test_boundary_accuracy_matches_within_the_tolerance() -> None:
    truth = _dot(5, 5)  # 10x10: tolerance ceil(0.008 * 14.1) = 1 pixel
    assert boundary_accuracy(truth, truth) == 1.0
    assert boundary_accuracy(_dot(5, 6), truth) == 1.0  # every boundary pixel within 1
    assert boundary_accuracy(_dot(5, 7), truth) == pytest.approx(0.5)  # P = R = 2/4
    assert boundary_accuracy(_dot(5, 8), truth) == 0.0
    assert boundary_accuracy(np.zeros((10, 10), bool), truth) == 0.0
    assert boundary_accuracy(np.zeros((10, 10), bool), np.zeros((10, 10), bool)) == 1.0


def test_sequences_round_trip_and_score_without_first_and_last(tmp_path) -> None:
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (24, 32, 3), dtype=np.uint8) for _ in range(4)]
    truth = np.zeros((24, 32), np.uint8)
    truth[4:12, 4:12] = 1
    truth[14:20, 20:30] = 2
    write_davis(tmp_path, "blobs", frames, [truth] * 4)
    (sequence,) = read_davis(tmp_path)
    assert sequence.name == "blobs" and len(sequence.frames) == 4
    assert np.array_equal(sequence.mask(2), truth)
    lost = truth.copy()
    lost[lost == 1] = 0  # object 1 missed on frame 2
    garbage = np.zeros_like(truth)  # the last frame is not scored
    scores = score_sequence("blobs", [truth, truth, lost, garbage], [truth] * 4)
    assert [(s.object_id, s.j_mean, s.f_mean) for s in scores] == [(1, 0.5, 0.5), (2, 1.0, 1.0)]
    assert summarise(scores) == {"J&F": 0.75, "J": 0.75, "F": 0.75, "objects": 2}


def test_a_folder_without_the_split_listing_is_refused(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="ImageSets/2017"):
        read_davis(tmp_path)
