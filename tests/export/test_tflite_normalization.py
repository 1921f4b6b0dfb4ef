"""The TFLite export's row-wide frame normalization (export/tflite.py, issue 14.3).

XNNPACK handles a [1, 1, 1, 3] broadcast 3 floats at a time; the export expands Normalize's
constants along the frame width while converting. These tests check the converted graph really
carries [1, 1, W, 3] constants, that its logits still match PyTorch (the export's own
verification, per frame of bikes.mp4), and that the model is left as it was.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mobdistill.export import manifest as mf
from mobdistill.export.deploy import signature_modules
from mobdistill.export.tflite import row_wide_normalization
from mobdistill.models import registry
from mobdistill.models.blocks import Normalize


def _frame_normalization_constants(tflite_path, signature: str) -> list[list[int]]:
    """Shapes of the constant operands of the ops that read `signature`'s frame input."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(tflite_path.read_bytes(), 0)
    sig = next(model.SignatureDefs(i) for i in range(model.SignatureDefsLength())
               if model.SignatureDefs(i).SignatureKey().decode() == signature)
    graph = model.Subgraphs(sig.SubgraphIndex())
    frame = next(sig.Inputs(i).TensorIndex() for i in range(sig.InputsLength())
                 if sig.Inputs(i).Name().decode() == "frame")
    shapes = []
    for i in range(graph.OperatorsLength()):
        inputs = [int(t) for t in graph.Operators(i).InputsAsNumpy()]
        if frame in inputs:
            for t in inputs:
                tensor = graph.Tensors(t)
                if t != frame and model.Buffers(tensor.Buffer()).DataLength() > 0:
                    shapes.append([int(d) for d in tensor.ShapeAsNumpy()])
    return shapes


@pytest.mark.parametrize("name", ["jitnet", "mobilevos"])
def test_frame_constants_span_the_row_and_logits_match_pytorch(tiny_export, name):
    manifest = mf.load(tiny_export(name).manifest_path)
    _, width = manifest["model"]["resolution"]
    signature = next(s["name"] for s in manifest["signatures"]
                     if any(t["role"] == "frame" for t in s["inputs"]))
    assert _frame_normalization_constants(manifest.tflite_path, signature) == [[1, 1, width, 3]]
    checks = [c for c in manifest["verification"]["results"]
              if c["format"] == "tflite" and c["output"] == "logits"]
    assert checks and all(c["passed"] and c["max_abs_err"] < 1e-3 for c in checks), checks


def test_the_model_is_restored_after_conversion():
    entry = registry.get("jitnet")
    config = registry.configure(entry, tiny=True)
    model = entry.build(config)
    h, w = 32, 64
    modules = signature_modules(model, entry.signatures(config, h, w))
    normalize = next(m for m in model.modules() if isinstance(m, Normalize))
    before = (normalize.scale.clone(), normalize.shift.clone())
    frame = torch.rand(1, 3, h, w) * 255
    with torch.no_grad():
        reference = normalize(frame)
        with row_wide_normalization(modules):
            assert tuple(normalize.scale.shape) == (1, 3, 1, w)
            widened = normalize(frame)
    np.testing.assert_array_equal(widened.numpy(), reference.numpy())  # the same products
    assert torch.equal(normalize.scale, before[0]) and torch.equal(normalize.shift, before[1])
    assert tuple(normalize.scale.shape) == (1, 3, 1, 1)
