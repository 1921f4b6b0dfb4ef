"""MemoryQueue semantics and the duplicated-memory invariance it relies on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mobdistill.models import mobilevos
from mobdistill.models.memory_queue import MemoryQueue


def _entry(i: int) -> dict[str, np.ndarray]:
    return {"key": np.full((1, 2), i, np.float32), "value": np.full((1, 1, 3), i, np.float32)}


def _order(queue: MemoryQueue) -> list[int]:
    stacked = queue.stacked()
    assert stacked["value"].shape[0] == queue.queue_length
    return [int(v) for v in stacked["key"][:, 0]]


def test_slot0_fixed_fifo_and_padding() -> None:
    queue = MemoryQueue(4)
    queue.reset(_entry(0))
    assert _order(queue) == [0, 0, 0, 0]
    queue.push(_entry(1))
    assert _order(queue) == [0, 0, 0, 1]
    for i in (2, 3, 4):
        queue.push(_entry(i))
    assert _order(queue) == [0, 2, 3, 4]
    queue.reset(_entry(9))
    assert _order(queue) == [9, 9, 9, 9]


def test_queue_length_one_keeps_first_frame_only() -> None:
    queue = MemoryQueue(1)
    queue.reset(_entry(0))
    queue.push(_entry(1))
    assert _order(queue) == [0]


def test_torch_entries_stack_to_tensors() -> None:
    queue = MemoryQueue(2)
    queue.reset({"key": torch.zeros(1, 2, 3)})
    queue.push({"key": torch.ones(1, 2, 3)})
    stacked = queue.stacked()["key"]
    assert isinstance(stacked, torch.Tensor) and stacked.shape == (2, 2, 3)


def test_errors_before_reset() -> None:
    queue = MemoryQueue(2)
    with pytest.raises(RuntimeError, match="reset"):
        queue.push(_entry(1))
    with pytest.raises(ValueError):
        MemoryQueue(0)


def test_duplicated_memory_frame_leaves_readout_unchanged() -> None:
    model = mobilevos.build(mobilevos.tiny_config())
    frames = [torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(i)) * 255
              for i in range(2)]
    mask = (torch.rand(1, 1, 64, 64) > 0.5).float()
    with torch.no_grad():
        first = model.init(frames[0], mask)
        once = model.step(frames[1], first["key"], first["value"])
        queue = MemoryQueue(3)
        queue.reset(first)
        memory = queue.stacked()
        thrice = model.step(frames[1], memory["key"], memory["value"])
    for name in ("logits", "key", "value"):
        torch.testing.assert_close(thrice[name], once[name], rtol=1e-4, atol=1e-4)


def test_run_sequence_matches_manual_queue() -> None:
    model = mobilevos.build(mobilevos.tiny_config())
    frames = [torch.rand(1, 3, 64, 64) * 255 for _ in range(4)]
    mask = (torch.rand(1, 1, 64, 64) > 0.5).float()
    outs = mobilevos.run_sequence(model, frames, mask, queue_length=2)
    assert len(outs) == 3
    with torch.no_grad():
        first = model.init(frames[0], mask)
        s1 = model.step(frames[1], first["key"], first["value"])  # Q=1 == padded Q=2
        keys = torch.cat([first["key"], s1["key"]])
        values = torch.cat([first["value"], s1["value"]])
        s2 = model.step(frames[2], keys, values)
    torch.testing.assert_close(outs[0], s1["logits"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(outs[1], s2["logits"], rtol=1e-4, atol=1e-4)
