"""Full-size exports of every student at the papers' resolutions, verified (`make test-full`).

Each takes minutes on two cores, so they are marked slow and left out of `make test`."""

from __future__ import annotations

import pytest

from mobdistill.export.manifest import Manifest
from mobdistill.models import registry


@pytest.mark.slow
@pytest.mark.parametrize("name", ["jitnet", "deeplab", "mobilevos"])
def test_full_size_export_verifies(name, tmp_path):
    from mobdistill.export.api import export_model

    entry = registry.get(name)
    result = export_model(name, out_dir=tmp_path, formats=("tflite", "onnx"))
    manifest = Manifest.load(result.manifest_path)  # every sha256 checked
    assert manifest.resolution == entry.default_resolution
    assert manifest.num_params == sum(p.numel() for p in entry.build(entry.paper_config())
                                      .parameters())
    checks = manifest["verification"]["results"]
    assert {c["format"] for c in checks} == {"tflite", "onnx"} and all(c["passed"] for c in checks)
    assert manifest.parameter_map_status == "complete"
    tflite = next(a for a in manifest["artifacts"] if a["format"] == "tflite")
    assert tflite["transpose_ops"] == 0
