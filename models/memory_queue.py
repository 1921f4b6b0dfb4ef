"""The MobileVOS memory queue: slot 0 = first frame, then a FIFO of the last Q-1 frames.

Entries are dicts of per-frame arrays with a leading dim of 1 (torch tensors or numpy arrays);
`stacked()` concatenates Q of them along axis 0. Until Q frames exist, the oldest available
entry (the first frame) is repeated in front of the FIFO. For Q <= 2 the padding is exact: a
memory made of copies of one frame gives the same softmax readout as that frame alone. For Q > 2
the first frame is over-weighted until the FIFO fills.

The exporter drives TFLite/ONNX runners with this class, and the C++ engine mirrors it.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
import torch

Entry = dict[str, Any]


def _concat(arrays: list[Any]) -> Any:
    if isinstance(arrays[0], torch.Tensor):
        return torch.cat(arrays, 0)
    return np.concatenate(arrays, 0)


class MemoryQueue:
    """Fixed-length memory: first frame + FIFO of the most recent Q-1 frames (oldest first).

    Args:
        queue_length: Q >= 1, the export-time memory length.
    """

    def __init__(self, queue_length: int) -> None:
        if queue_length < 1:
            raise ValueError(f"queue_length must be >= 1, got {queue_length}")
        self.queue_length = queue_length
        self._first: Entry | None = None
        self._recent: deque[Entry] = deque(maxlen=queue_length - 1)

    def reset(self, entry: Entry) -> None:
        """Starts a sequence: `entry` (from `init` on the first frame) becomes slot 0."""
        self._first = dict(entry)
        self._recent.clear()

    def push(self, entry: Entry) -> None:
        """Appends the newest frame's entry; the oldest FIFO entry drops out when full."""
        if self._first is None:
            raise RuntimeError("MemoryQueue.push before reset(): call reset() with the init entry")
        self._recent.append(dict(entry))

    def slots(self) -> list[Entry]:
        """The Q entries in slot order (padding included)."""
        if self._first is None:
            raise RuntimeError("MemoryQueue is empty: call reset() with the init entry first")
        pad = self.queue_length - 1 - len(self._recent)
        return [self._first] * (pad + 1) + list(self._recent)

    def stacked(self) -> dict[str, Any]:
        """Each entry name -> its Q per-frame arrays concatenated along axis 0 ([Q, ...])."""
        slots = self.slots()
        return {name: _concat([slot[name] for slot in slots]) for name in slots[0]}
