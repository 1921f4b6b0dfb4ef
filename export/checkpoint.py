"""Loading trained weights into a student, with a precise report when they do not fit."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from mobdistill.errors import CheckpointError

_NESTED_KEYS = ("state_dict", "model", "model_state_dict")
_SHOWN = 5


def load_checkpoint(model: nn.Module, path: Path) -> None:
    """Load a state dict (plain, or nested under 'state_dict'/'model') into `model`.

    Raises CheckpointError listing missing, unexpected and mis-shaped keys; the model is left
    untouched unless every key fits.
    """
    state = _read_state(Path(path))
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = [f"{k} {tuple(state[k].shape)}≠{tuple(expected[k].shape)}"
                 for k in sorted(set(state) & set(expected))
                 if tuple(state[k].shape) != tuple(expected[k].shape)]
    problems = [_listing("missing", missing), _listing("unexpected", unexpected),
                _listing("mis-shaped", misshaped)]
    problems = [p for p in problems if p]
    if problems:
        raise CheckpointError(f"checkpoint {path} does not match the model: " + "; ".join(problems))
    model.load_state_dict(state)


def _read_state(path: Path) -> Mapping[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises pickle, zip and runtime errors alike
        raise CheckpointError(f"cannot read checkpoint {path}: {err}") from err
    if isinstance(loaded, Mapping):
        for key in _NESTED_KEYS:
            if isinstance(loaded.get(key), Mapping):
                loaded = loaded[key]
                break
    if not isinstance(loaded, Mapping) or not all(
            isinstance(v, torch.Tensor) for v in loaded.values()):
        raise CheckpointError(f"checkpoint {path} holds no state dict of tensors")
    return loaded


def _listing(kind: str, keys: list[str]) -> str:
    if not keys:
        return ""
    more = f", … (+{len(keys) - _SHOWN})" if len(keys) > _SHOWN else ""
    shown = ", ".join(keys[:_SHOWN]) + more
    return f"{len(keys)} {kind} key(s): {shown}"
