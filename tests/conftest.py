"""Session-wide fixtures: tiny real exports, made once per test run and shared."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from mobdistill.export.api import ExportResult, export_model
from mobdistill.models import registry


@dataclass(frozen=True)
class TinyExport:
    """A verified export of a tiny student whose weights tests can rebuild exactly."""

    name: str
    config: Any
    checkpoint: Path
    result: ExportResult

    @property
    def manifest_path(self) -> Path:
        return self.result.manifest_path

    @property
    def resolution(self) -> tuple[int, int]:
        return self.result.resolution

    def model(self) -> torch.nn.Module:
        model = registry.get(self.name).build(self.config)
        model.load_state_dict(torch.load(self.checkpoint, weights_only=True))
        return model.eval()


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory) -> Callable[..., TinyExport]:
    """Export a seeded tiny student through a checkpoint, cached by arguments for the session."""
    cache: dict[tuple, TinyExport] = {}

    def get(name: str, formats: tuple[str, ...] = ("tflite", "onnx"), **overrides) -> TinyExport:
        key = (name, formats, tuple(sorted(overrides.items())))
        if key not in cache:
            out = tmp_path_factory.mktemp(f"export-{name}")
            entry = registry.get(name)
            config = registry.configure(entry, tiny=True, **overrides)
            torch.manual_seed(0)
            checkpoint = out / "student.pt"
            torch.save(entry.build(config).state_dict(), checkpoint)
            result = export_model(name, out_dir=out, formats=formats, config=config,
                                  checkpoint=checkpoint, tiny=True)
            cache[key] = TinyExport(name, config, checkpoint, result)
        return cache[key]

    return get
