"""A student of one's own, exported through `mobdistill export --model FILE.py:build`.

The module is written to a temporary file as a camera-app team would have it. Its classes are
bands of local brightness (fixed weights), so its mask follows the picture: the camera-frame
tests need a model whose output changes when the input does, which a seeded random student
(one class everywhere) does not.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from shared import once

MODULE_SOURCE = '''
import torch
from torch import nn


class BrightnessBands(nn.Module):
    """K classes = K bands of local brightness: a 3x3 box blur, then the nearest band centre."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.blur = nn.Conv2d(3, 1, 3, padding=1, bias=False)
        self.classifier = nn.Conv2d(1, classes, 1)
        centres = (torch.arange(classes) + 0.5) / classes
        with torch.no_grad():
            self.blur.weight.fill_(1 / 27)
            self.classifier.weight.copy_((2 * centres).view(classes, 1, 1, 1))
            self.classifier.bias.copy_(-centres**2)

    def forward(self, frame: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.blur(frame / 255.0))


def build(classes: int = 3) -> nn.Module:
    return BrightnessBands(classes)
'''
SPEC = {"name": "bands", "resolution": [64, 128], "config": {"classes": 4}}


def write_module(folder: Path) -> tuple[Path, Path]:
    """(bands.py, spec.json) in `folder`."""
    source, spec = folder / "bands.py", folder / "bands.json"
    source.write_text(MODULE_SOURCE)
    spec.write_text(json.dumps(SPEC))
    return source, spec


@pytest.fixture(scope="session")
def custom_export(tmp_path_factory) -> Path:
    """The manifest of the custom module exported (TFLite, verified) by the CLI, made once."""
    from mobdistill.cli import main

    def build(folder: Path) -> Path:
        source, spec = write_module(folder)
        code = main(["export", "--model", f"{source}:build", "--config", str(spec),
                     "--format", "tflite", "--out", str(folder / "out")])
        assert code == 0
        return folder / "out" / "bands.manifest.json"

    return once(tmp_path_factory, "custom bands export", build)
