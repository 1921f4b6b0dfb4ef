"""Accuracy of what the device showed: the engine's per-frame masks against the teacher's labels.

As in AMS and JITNet, the reference is the teacher (there are no hand labels here, specs §6).
Two per-frame definitions, each reported under its own name: ``with_background`` (AMS's: mean IoU
over the classes present in either map, background included, `rates.miou`) and ``foreground``
(JITNet's: background excluded, `rates.foreground_miou`; a frame where neither map holds a
foreground pixel has nothing to score and is left out of the means, and counted). Then means over
the whole stream, per clip, and over fixed windows of video time (the mIoU-over-time plot).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from numpy.typing import ArrayLike

from mobdistill.errors import EngineError
from mobdistill.server.rates import foreground_miou, miou


def read_masks(path: Path | str, count: int, height: int, width: int) -> np.ndarray:
    """The engine's ``--output_masks`` file: ``count`` uint8 [H, W] masks, concatenated."""
    data = np.fromfile(path, dtype=np.uint8)
    if data.size < count * height * width:
        raise EngineError(f"{path} holds {data.size} bytes, expected {count} masks of "
                          f"{height}x{width}; the engine stopped early")
    return data[:count * height * width].reshape(count, height, width)


def frame_mious(masks: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """mIoU of each predicted mask against the teacher's label map of the same frame."""
    if masks.shape != labels.shape:
        raise EngineError(f"masks {masks.shape} and teacher labels {labels.shape} differ")
    return np.array([miou(m, t, num_classes) for m, t in zip(masks, labels)], dtype=np.float64)


def frame_foreground_mious(masks: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Foreground-only mIoU of each frame; NaN where neither map holds a foreground pixel."""
    if masks.shape != labels.shape:
        raise EngineError(f"masks {masks.shape} and teacher labels {labels.shape} differ")
    scores = (foreground_miou(m, t, num_classes) for m, t in zip(masks, labels))
    return np.array([np.nan if s is None else s for s in scores], dtype=np.float64)


@dataclass(frozen=True)
class Window:
    start_s: float
    end_s: float
    miou: float
    frames: int


def windows(values: ArrayLike, times_s: ArrayLike, window_s: float) -> list[Window]:
    """Means over consecutive windows of video time (the last one may be shorter)."""
    scores, times = np.asarray(values, float), np.asarray(times_s, float)
    scored = ~np.isnan(scores)  # NaN: a frame with nothing to score
    out: list[Window] = []
    if not scores.size:
        return out
    edges = np.arange(0.0, times[-1] + window_s, window_s)
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (times >= lo) & (times < hi) & scored
        if inside.any():
            out.append(Window(round(float(lo), 3), round(float(hi), 3),
                              float(scores[inside].mean()), int(inside.sum())))
    return out


def per_clip(values: ArrayLike, clips: Sequence[str]) -> dict[str, float | None]:
    """Mean per clip, keyed ``"<position>:<clip>"`` (a clip may appear twice in a stream)."""
    out: dict[str, list[float]] = {}
    previous, position = None, -1
    for value, clip in zip(np.asarray(values, float), clips):
        if clip != previous:
            position, previous = position + 1, clip
        out.setdefault(f"{position}:{clip}", []).append(float(value))
    return {k: _nanmean(v) for k, v in out.items()}


def _nanmean(values) -> float | None:
    """Mean of the scored values (None when none was scored)."""
    v = np.asarray(values, float)
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else None


def summarize(values: np.ndarray, times_s: ArrayLike, clips: Sequence[str],
              window_s: float, definition: str) -> dict:
    """One mIoU definition's numbers for the result JSON."""
    scored = int((~np.isnan(values)).sum())
    return {"definition": definition, "mean": _nanmean(values),
            "per_clip": per_clip(values, clips),
            "over_time": [asdict(w) for w in windows(values, times_s, window_s)],
            "frames_scored": scored, "frames_not_scored": int(values.size - scored)}


def percentiles_ms(values_us: Sequence[float]) -> dict[str, float | int | None]:
    """p50 / p99 / count of microsecond samples, in ms (None when there are none)."""
    v = np.asarray(values_us, float)
    if not v.size:
        return {"count": 0, "p50_ms": None, "p99_ms": None}
    return {"count": int(v.size), "p50_ms": round(float(np.percentile(v, 50)) / 1e3, 4),
            "p99_ms": round(float(np.percentile(v, 99)) / 1e3, 4)}
