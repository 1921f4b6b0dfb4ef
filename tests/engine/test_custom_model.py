"""Your own model: a PyTorch module in a file (`--model FILE.py:build --config SPEC.json`) or an
nn.Module in the Python API goes through the same export, verification, manifest (parameter
map included) and profile path as a registered student (docs/models.md)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from custom_model import MODULE_SOURCE, SPEC, custom_export, write_module  # noqa: E402, F401, I001

from mobdistill.cli import main  # noqa: E402
from mobdistill.errors import UsageError  # noqa: E402
from mobdistill.export import manifest as mf  # noqa: E402
from mobdistill.models import registry  # noqa: E402


def test_cli_export_verifies_maps_and_profiles(custom_export, engine_binary, capsys, tmp_path):  # noqa: F811
    manifest = json.loads(custom_export.read_text())
    mf.validate(manifest)
    assert manifest["model"]["name"] == "bands" and manifest["model"]["config"] == {"classes": 4}
    assert manifest["model"]["resolution"] == [64, 128]
    assert manifest["output"]["num_classes"] == 4
    checks = manifest["verification"]["results"]
    assert checks and all(c["passed"] and c["argmax_agreement"] == 1.0 for c in checks)
    mapped = {e["parameter"] for e in manifest["parameter_map"]["entries"]}
    assert {"classifier.weight", "classifier.bias"} <= mapped  # streamable like the built-ins
    capsys.readouterr()
    assert main(["profile", "--artifact", str(custom_export), "--engine", str(engine_binary),
                 "--out", str(tmp_path),
                 "--num_runs", "3", "--warmup_runs", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)["results"]["host"]
    run = next(iter(result.values()))["bands"]
    assert run["invoke_ms"]["p50_ms"] > 0


def test_python_api_takes_a_module():
    namespace: dict = {}
    exec(compile(MODULE_SOURCE, "bands.py", "exec"), namespace)
    module = namespace["build"](classes=5)
    entry = registry.resolve(module, (32, 48))
    assert entry.name == "brightnessbands"
    (signature,) = entry.signatures(entry.paper_config(), 32, 48)
    assert signature.outputs[0].shape == (1, 32, 48, 5)
    assert entry.build(entry.paper_config()) is module  # the very module is exported
    with pytest.raises(UsageError, match="resolution"):
        registry.resolve(module)


class _Pooled(nn.Module):  # logits at 1/2 resolution: not what the engine reads
    def forward(self, frame: torch.Tensor) -> torch.Tensor:
        return nn.functional.avg_pool2d(frame, 2)


def test_bad_custom_models_are_usage_errors(tmp_path, capsys):
    source, spec = write_module(tmp_path)
    with pytest.raises(UsageError, match="logits"):
        registry.custom_entry(_Pooled(), name="pooled", resolution=(16, 16))
    cases = [
        (["--model", f"{source}:build"], "--config"),
        (["--model", f"{source}:missing", "--config", str(spec)], "no function 'missing'"),
        (["--model", f"{source}:build", "--config", str(spec), "--tiny"], "--tiny"),
        (["--model", "deeplab", "--config", str(spec)], "custom model"),
    ]
    bad_spec = tmp_path / "bad.json"
    bad_spec.write_text(json.dumps({**SPEC, "resolution": [64]}))
    cases.append((["--model", f"{source}:build", "--config", str(bad_spec)], "resolution"))
    for argv, message in cases:
        assert main(["export", *argv, "--out", str(tmp_path / "out")]) == 2, argv
        assert message in capsys.readouterr().err, argv
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
