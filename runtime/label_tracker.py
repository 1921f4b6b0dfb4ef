"""Remote+Tracking's device side (AMS §4.1): the server's label maps of sampled frames, carried to
every frame in between by OpenCV's Farneback optical flow. No student runs.

The paper's flow parameters hold at 1024x512: 5 iterations, a Gaussian window of 64, 3 pyramid
levels, polynomial expansion of degree (neighbourhood) 5. Iterations, levels and the polynomial
neighbourhood are kept; the window is in pixels, so it is scaled with the frame width
(64 · W / 1024, at least 5) to cover the same part of the scene.
Each label is pulled along the backward flow (from the new frame to the previous one) with
nearest-neighbour sampling, so labels stay class ids; pixels that flow in from outside the frame
take the nearest edge pixel's label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PAPER_WIDTH = 1024
PAPER_WINDOW, PAPER_LEVELS, PAPER_ITERATIONS, PAPER_POLY_N = 64, 3, 5, 5
POLY_SIGMA = 1.1  # OpenCV's recommended sigma for poly_n = 5


@dataclass(frozen=True)
class FlowParams:
    window: int
    levels: int = PAPER_LEVELS
    iterations: int = PAPER_ITERATIONS
    poly_n: int = PAPER_POLY_N
    poly_sigma: float = POLY_SIGMA
    pyramid_scale: float = 0.5

    @classmethod
    def scaled_to(cls, width: int) -> "FlowParams":
        window = max(5, round(PAPER_WINDOW * width / PAPER_WIDTH))
        return cls(window=window)


class LabelTracker:
    """Feed every frame in order; `reset` with the server's labels when a sampled frame's labels
    arrive. `track` returns the label map shown for the frame."""

    def __init__(self, width: int, params: FlowParams | None = None) -> None:
        import cv2  # opencv-python-headless: only Remote+Tracking needs it

        self._cv2 = cv2
        self.params = params or FlowParams.scaled_to(width)
        self._gray: np.ndarray | None = None
        self._labels: np.ndarray | None = None

    def reset(self, frame: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Labels received for `frame` (uint8 RGB [H, W, 3]): shown as they are."""
        if labels.shape != frame.shape[:2]:
            raise ValueError(f"labels {labels.shape} do not match the frame {frame.shape[:2]}")
        self._gray = self._to_gray(frame)
        self._labels = np.ascontiguousarray(labels, dtype=np.uint8)
        return self._labels

    def track(self, frame: np.ndarray) -> np.ndarray:
        """The last labels moved along the flow from the previous frame to `frame`."""
        if self._gray is None or self._labels is None:
            raise ValueError("no labels yet: reset() with the first sampled frame's labels")
        cv2, p = self._cv2, self.params
        gray = self._to_gray(frame)
        backward = cv2.calcOpticalFlowFarneback(gray, self._gray, None, p.pyramid_scale,
                                                p.levels, p.window, p.iterations, p.poly_n,
                                                p.poly_sigma, 0)
        h, w = gray.shape
        xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        self._labels = cv2.remap(self._labels, xs + backward[..., 0], ys + backward[..., 1],
                                 interpolation=cv2.INTER_NEAREST,
                                 borderMode=cv2.BORDER_REPLICATE)
        self._gray = gray
        return self._labels

    def _to_gray(self, frame: np.ndarray) -> np.ndarray:
        return self._cv2.cvtColor(np.ascontiguousarray(frame, dtype=np.uint8),
                                  self._cv2.COLOR_RGB2GRAY)
