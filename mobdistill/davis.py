"""The DAVIS-2017 folder layout and its metrics: region similarity J and boundary accuracy F.

Layout (semi-supervised task): `JPEGImages/480p/<seq>/00000.jpg`, `Annotations/480p/<seq>/00000.png`
(palette PNGs whose pixel values are object ids, 0 = background) and `ImageSets/2017/<split>.txt`
(one sequence name per line). Metrics follow the DAVIS definitions (Perazzi et al. 2016,
Pont-Tuset et al. 2017): J is the intersection over union of an object's masks; F is the
F-measure of its boundary pixels matched within a tolerance of 0.008 of the image diagonal. As
in the DAVIS evaluation, the first frame (given to the method) and the last frame are not scored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

BOUNDARY_TOLERANCE = 0.008  # of the image diagonal (the DAVIS value)


@dataclass(frozen=True)
class DavisSequence:
    name: str
    frames: tuple[Path, ...]
    annotations: tuple[Path, ...]  # may be shorter than frames (only the first is required)

    def mask(self, index: int) -> np.ndarray:
        """Object ids of one annotated frame, (H, W) uint8."""
        return np.asarray(Image.open(self.annotations[index]))


def read_davis(root: Path, split: str = "val", resolution: str = "480p") -> list[DavisSequence]:
    """The sequences of `split`, each with its frames and annotations sorted by name."""
    listing = root / "ImageSets" / "2017" / f"{split}.txt"
    if not listing.is_file():
        raise FileNotFoundError(f"{listing} is missing: not a DAVIS-2017 folder "
                                "(expected ImageSets/2017/<split>.txt)")
    sequences = []
    for name in listing.read_text().split():
        frames = tuple(sorted((root / "JPEGImages" / resolution / name).glob("*.jpg")))
        annotations = tuple(sorted((root / "Annotations" / resolution / name).glob("*.png")))
        if not frames or not annotations:
            raise FileNotFoundError(f"sequence {name}: no frames or no first-frame annotation "
                                    f"under {root}/{{JPEGImages,Annotations}}/{resolution}")
        sequences.append(DavisSequence(name, frames, annotations))
    return sequences


def write_davis(root: Path, name: str, frames: list[np.ndarray], masks: list[np.ndarray],
                split: str = "val", resolution: str = "480p") -> DavisSequence:
    """Write one sequence in the layout (RGB uint8 frames, uint8 object-id masks) and list it in
    the split. Masks are palette PNGs, as DAVIS ships them."""
    if len(frames) != len(masks):
        raise ValueError(f"{len(frames)} frames but {len(masks)} masks")
    frame_dir = root / "JPEGImages" / resolution / name
    mask_dir = root / "Annotations" / resolution / name
    frame_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    palette = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [255] * (256 * 3 - 12)
    for i, (frame, mask) in enumerate(zip(frames, masks)):
        Image.fromarray(frame).save(frame_dir / f"{i:05d}.jpg", quality=95)
        image = Image.fromarray(mask.astype(np.uint8), mode="P")
        image.putpalette(palette)
        image.save(mask_dir / f"{i:05d}.png")
    listing = root / "ImageSets" / "2017" / f"{split}.txt"
    listing.parent.mkdir(parents=True, exist_ok=True)
    names = set(listing.read_text().split()) if listing.is_file() else set()
    listing.write_text("\n".join(sorted(names | {name})) + "\n")
    return next(s for s in read_davis(root, split, resolution) if s.name == name)


def region_similarity(prediction: np.ndarray, truth: np.ndarray) -> float:
    """J: IoU of two binary masks; 1 when both are empty."""
    union = np.logical_or(prediction, truth).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(prediction, truth).sum() / union)


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a binary mask: those that differ from their right, lower or
    lower-right neighbour (the last row and column compare within themselves)."""
    m = mask.astype(bool)
    right = np.zeros_like(m)
    right[:, :-1] = m[:, 1:]
    below = np.zeros_like(m)
    below[:-1, :] = m[1:, :]
    diagonal = np.zeros_like(m)
    diagonal[:-1, :-1] = m[1:, 1:]
    edges = (m ^ right) | (m ^ below) | (m ^ diagonal)
    edges[-1, :] = m[-1, :] ^ right[-1, :]
    edges[:, -1] = m[:, -1] ^ below[:, -1]
    edges[-1, -1] = False
    return edges


def _disk(radius: int) -> np.ndarray:
    y, x = np.ogrid[-radius:radius + 1, -radius:radius + 1]
    return x * x + y * y <= radius * radius


def boundary_accuracy(prediction: np.ndarray, truth: np.ndarray,
                      tolerance: float = BOUNDARY_TOLERANCE) -> float:
    """F: boundary F-measure, boundary pixels matched within `tolerance` × the diagonal."""
    radius = int(math.ceil(tolerance * math.hypot(*truth.shape)))
    predicted, actual = boundary_map(prediction), boundary_map(truth)
    n_predicted, n_actual = int(predicted.sum()), int(actual.sum())
    if n_predicted == 0 and n_actual == 0:
        return 1.0
    if n_predicted == 0 or n_actual == 0:
        return 0.0  # precision or recall is 0 (DAVIS sets the other to 1)
    near_actual = ndimage.binary_dilation(actual, structure=_disk(radius))
    near_predicted = ndimage.binary_dilation(predicted, structure=_disk(radius))
    precision = float((predicted & near_actual).sum() / n_predicted)
    recall = float((actual & near_predicted).sum() / n_actual)
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


@dataclass(frozen=True)
class ObjectScore:
    sequence: str
    object_id: int
    j_mean: float
    f_mean: float


def score_sequence(name: str, predictions: list[np.ndarray],
                   truths: list[np.ndarray]) -> list[ObjectScore]:
    """J and F means per object over the scored frames (all but the first and the last)."""
    if len(predictions) != len(truths):
        raise ValueError(f"{name}: {len(predictions)} predictions for {len(truths)} annotations")
    if len(truths) < 3:
        raise ValueError(f"{name}: DAVIS scores frames 2..n-1, so at least 3 frames are needed")
    objects = sorted(int(i) for i in np.unique(truths[0]) if i != 0)
    scored = range(1, len(truths) - 1)
    scores = []
    for obj in objects:
        j = [region_similarity(predictions[t] == obj, truths[t] == obj) for t in scored]
        f = [boundary_accuracy(predictions[t] == obj, truths[t] == obj) for t in scored]
        scores.append(ObjectScore(name, obj, float(np.mean(j)), float(np.mean(f))))
    return scores


def summarise(scores: list[ObjectScore]) -> dict[str, float]:
    """The DAVIS global figures: J mean and F mean over all objects, and J&F their mean."""
    if not scores:
        raise ValueError("no objects were scored")
    j = float(np.mean([s.j_mean for s in scores]))
    f = float(np.mean([s.f_mean for s in scores]))
    return {"J&F": (j + f) / 2, "J": j, "F": f, "objects": len(scores)}
