"""Map each trainable PyTorch parameter to the TFLite buffer that holds it.

Tensor names in litert-torch exports are truncated module paths, so the map is found by value:
each weight is folded (BatchNorm scale per output channel, when a BatchNorm follows its conv)
and permuted (OHWI, depthwise 1HWC, ...) on the host, and the buffer holding exactly those
values is looked up. Sparse updates later address these buffers only.

A float16-weight variant (weights stored as float16 buffers, dequantized at load) is mapped the
same way: a float16 buffer matches when it holds the candidate rounded to float16, and its entry
says ``dtype: float16`` (the appliers write float16 elements, rounded to nearest even).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from torch import nn

from mobdistill.export.tflite import FlatBuffer

# torch layout -> candidate deployed layouts, by rank. Conv: OHWI, depthwise: 1HWC.
_PERMUTATIONS: dict[int, tuple[tuple[int, ...], ...]] = {
    4: ((0, 2, 3, 1), (1, 2, 3, 0), (0, 1, 2, 3)),
    2: ((0, 1), (1, 0)),
    1: ((0,),),
}


@dataclass(frozen=True)
class Fold:
    module: str
    scale: np.ndarray  # gamma / sqrt(running_var + eps), per output channel


def batchnorm_folds(model: nn.Module) -> dict[str, Fold]:
    """conv/linear name -> the BatchNorm that directly follows it in module order.

    Checked by value afterwards: a wrong guess simply fails to match and the unfolded and
    other same-sized candidates are tried.
    """
    folds: dict[str, Fold] = {}
    previous: tuple[str, nn.Module] | None = None
    for name, module in model.named_modules():
        if isinstance(module, _BATCHNORMS):
            if previous is not None and _out_channels(previous[1]) == module.num_features:
                folds[previous[0]] = Fold(name, _bn_scale(module))
            previous = None
        elif isinstance(module, (nn.Conv2d, nn.Linear)):
            previous = (name, module)
        elif not list(module.children()):
            previous = None
    return folds


_BATCHNORMS = (nn.BatchNorm2d, nn.BatchNorm1d)


def _out_channels(module: nn.Module) -> int:
    return int(getattr(module, "out_channels", getattr(module, "out_features", -1)))


def _bn_scale(bn: nn.modules.batchnorm._BatchNorm) -> np.ndarray:
    assert bn.running_var is not None, "folded BatchNorms track running statistics"
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    return scale.double().numpy()


def build_parameter_map(model: nn.Module, flatbuffer: FlatBuffer, data: bytes) -> dict:
    """The manifest's `parameter_map` section."""
    folds = batchnorm_folds(model)
    tensors = {t["buffer"]: t for t in reversed(flatbuffer.tensors)}
    by_size: dict[tuple[str, int], list[int]] = {}  # (dtype, bytes) -> buffer indices
    for index, (_, size) in flatbuffer.buffers.items():
        dtype = tensors[index]["dtype"] if index in tensors else "unknown"
        if dtype in _ELEMENT:
            by_size.setdefault((dtype, size), []).append(index)
    entries, unmapped = [], []
    modules = dict(model.named_modules())
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        owner = name.rsplit(".", 1)[0]
        if isinstance(modules.get(owner), _BATCHNORMS):
            conv = next((c for c, f in folds.items() if f.module == owner), None)
            reason = (f"folded into {conv}.weight" if conv else
                      "BatchNorm before its conv (pre-activation): the converter turns it into a "
                      "per-channel scale and shift that are not copies of this parameter")
            unmapped.append({"parameter": name, "reason": reason})
            continue
        fold = folds.get(owner) if name.endswith("weight") else None
        match = _find(param.detach().double().numpy(), fold, by_size, flatbuffer, data)
        if match is None:
            unmapped.append({"parameter": name, "reason": _why_unmatched(name, owner, folds)})
            continue
        buffer_index, permutation, folded, dtype = match
        tensor = tensors[buffer_index]
        offset, size = flatbuffer.buffers[buffer_index]
        entries.append({
            "parameter": name, "shape": list(param.shape), "tensor_index": buffer_index,
            "tensor_name": tensor["name"], "buffer_index": buffer_index,
            "buffer_offset": offset, "buffer_size": size, "dtype": dtype,
            "tflite_shape": tensor["shape"], "permutation": list(permutation),
            "fold": ({"kind": "batchnorm", "module": fold.module, "axis": 0}
                     if folded and fold is not None else None),
        })
    weights_missing = any(u["parameter"].endswith("weight") and "folded" not in u["reason"]
                          for u in unmapped)
    return {"status": "partial" if weights_missing else "complete",
            "entries": entries, "unmapped": unmapped}


def _why_unmatched(name: str, owner: str, folds: dict[str, Fold]) -> str:
    if name.endswith("bias") and owner in folds:
        return f"folded with {folds[owner].module} into a new bias (not a scaled copy)"
    return "no buffer in the .tflite file holds these values (rewritten by the converter)"


def _candidates(value: np.ndarray, fold: Fold | None) -> Iterator[tuple[np.ndarray, tuple, bool]]:
    scaled = [(value, False)]
    if fold is not None and value.shape[0] == fold.scale.shape[0]:
        shape = (-1,) + (1,) * (value.ndim - 1)
        scaled.insert(0, (value * fold.scale.reshape(shape), True))
    for array, folded in scaled:
        for permutation in _PERMUTATIONS.get(value.ndim, ()):
            yield np.transpose(array, permutation).reshape(-1), permutation, folded


# Element types a parameter can be stored in: numpy type and the tolerance of a match.
_ELEMENT = {"float32": ("<f4", 1e-5), "float16": ("<f2", 2e-3)}


def _find(value: np.ndarray, fold: Fold | None, by_size: dict[tuple[str, int], list[int]],
          flatbuffer: FlatBuffer, data: bytes) -> tuple[int, tuple, bool, str] | None:
    """Unique buffer whose content equals a candidate layout of `value`: float32 buffers first,
    then float16 ones (the candidate rounded to float16)."""
    for dtype, (numpy_type, rtol) in _ELEMENT.items():
        width = np.dtype(numpy_type).itemsize
        pool = by_size.get((dtype, value.size * width), [])
        for flat, permutation, folded in _candidates(value, fold):
            expected = flat.astype(numpy_type).astype(np.float64)
            atol = rtol / 10 * max(1.0, float(np.abs(expected).max(initial=0.0)))
            hits = [i for i in pool
                    if np.allclose(_read(data, flatbuffer.buffers[i], numpy_type), expected,
                                   rtol=rtol, atol=atol)]
            if len(hits) == 1:
                return hits[0], permutation, folded, dtype
    return None


def _read(data: bytes, location: tuple[int, int], numpy_type: str) -> np.ndarray:
    offset, size = location
    width = np.dtype(numpy_type).itemsize
    return np.frombuffer(data, numpy_type, count=size // width, offset=offset).astype(np.float64)
