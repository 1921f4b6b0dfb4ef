"""Real exports of the tiny students, checked with the real interpreters on real frames."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mobdistill.export import manifest as mf
from mobdistill.export.verify import TfliteRunner, object_masks, run_frames
from mobdistill.models import registry
from mobdistill.models.mobilevos import run_sequence
from mobdistill.video import read_frames


@pytest.mark.parametrize("name", ["deeplab", "jitnet", "mobilevos"])
def test_export_verifies_every_artifact(tiny_export, name):
    result = tiny_export(name)
    manifest = mf.load(result.manifest_path)  # validates schema and every sha256
    formats = sorted({a["format"] for a in manifest["artifacts"]})
    assert formats == ["onnx", "tflite"]
    checks = manifest["verification"]["results"]
    assert {c["format"] for c in checks} == {"tflite", "onnx"}
    assert all(c["passed"] for c in checks)
    logits = [c for c in checks if c["output"] == "logits"]
    assert logits and all(c["max_abs_err"] < 1e-3 and c["argmax_agreement"] >= 0.99 for c in logits)
    assert manifest["verification"]["video"] == "bikes.mp4"


@pytest.mark.parametrize("name, max_transposes", [("deeplab", 0), ("jitnet", 0), ("mobilevos", 0)])
def test_tflite_io_is_nhwc_without_edge_transposes(tiny_export, name, max_transposes):
    manifest = mf.load(tiny_export(name).manifest_path)
    tflite = next(a for a in manifest["artifacts"] if a["format"] == "tflite")
    assert tflite["transpose_ops"] <= max_transposes
    frame = next(t for s in manifest["signatures"] for t in s["inputs"] if t["role"] == "frame")
    h, w = manifest["model"]["resolution"]
    assert frame["shape"] == [1, h, w, 3] and frame["layout"] == "NHWC"


def test_mobilevos_memory_read_converts_to_batch_matmul(tiny_export):
    """The TFLite export's query-key products are BATCH_MATMUL (XNNPACK), not FULLY_CONNECTED
    with computed weights (TFLite's own kernel)."""
    result = tiny_export("mobilevos")
    tflite = next(a for a in mf.load(result.manifest_path)["artifacts"]
                  if a["format"] == "tflite")
    assert "FULLY_CONNECTED" not in tflite["op_counts"]
    assert tflite["op_counts"]["BATCH_MATMUL"] == 2  # products and value readout of `step`


def test_signatures_match_interpreter(tiny_export):
    from ai_edge_litert.interpreter import Interpreter

    manifest_path = tiny_export("mobilevos").manifest_path
    manifest = mf.load(manifest_path)
    interpreter = Interpreter(str(manifest.tflite_path))
    listed = interpreter.get_signature_list()
    for signature in manifest["signatures"]:
        listed_io = listed[signature["name"]]
        assert sorted(listed_io["inputs"]) == sorted(t["name"] for t in signature["inputs"])
        assert sorted(listed_io["outputs"]) == sorted(t["name"] for t in signature["outputs"])
    assert manifest["memory"]["queue_length"] == 2


def test_mobilevos_tflite_sequence_matches_python_reference_runner(tiny_export):
    """The TFLite artifact, carrying its own memory through 5 frames, tracks run_sequence."""
    result = tiny_export("mobilevos")
    entry, config = registry.get("mobilevos"), result.config
    h, w = result.resolution
    frames = read_frames("bikes.mp4", 5, size=(h, w), start=40)
    model = result.model()
    manifest = mf.load(result.manifest_path)
    runner = TfliteRunner(manifest.tflite_path)
    outputs = run_frames(runner, entry.signatures(config, h, w), entry.memory(config), frames)
    masks = object_masks(h, w, config.num_objects)
    with torch.no_grad():
        reference = run_sequence(
            model, [torch.from_numpy(f).permute(2, 0, 1)[None].float() for f in frames],
            torch.from_numpy(masks).permute(0, 3, 1, 2), config.queue_length)
    assert len(outputs) == len(reference) + 1
    for (_, got), ref in zip(outputs[1:], reference):
        expected = ref.permute(0, 2, 3, 1).numpy()
        assert np.abs(got["logits"] - expected).max() < 1e-3 * max(1.0, np.abs(expected).max())


def test_parameter_map_patch_reproduces_pytorch(tiny_export, tmp_path):
    """Scatter a sparse change of a folded conv weight into the .tflite bytes (specs §7)."""
    from ai_edge_litert.interpreter import Interpreter

    result = tiny_export("deeplab")
    manifest = mf.load(result.manifest_path)
    assert manifest["parameter_map"]["status"] == "complete"
    entry = next(e for e in manifest["parameter_map"]["entries"]
                 if e["fold"] is not None and len(e["shape"]) == 4 and e["shape"][1] > 1)
    model = result.model()
    param = dict(model.named_parameters())[entry["parameter"]]
    flat = torch.randperm(param.numel(), generator=torch.Generator().manual_seed(1))[:50]
    with torch.no_grad():
        param.view(-1)[flat] += 0.05
    bn = dict(model.named_modules())[entry["fold"]["module"]]
    scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach()
    deployed = (param.detach() * scale.view(-1, 1, 1, 1)).permute(*entry["permutation"]).reshape(-1)
    data = bytearray(manifest.tflite_path.read_bytes())
    start, size = entry["buffer_offset"], entry["buffer_size"]
    data[start:start + size] = deployed.numpy().astype("<f4").tobytes()
    interpreter = Interpreter(model_content=bytes(data))
    frame = read_frames("bikes.mp4", 1, size=result.resolution)[0:1].astype(np.float32)
    got = interpreter.get_signature_runner("serving_default")(frame=frame)["logits"]
    with torch.no_grad():
        expected = model(torch.from_numpy(frame).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    assert np.abs(got - expected).max() < 1e-4 * max(1.0, np.abs(expected).max())


def test_manifest_load_rejects_tampering(tiny_export, tmp_path):
    source = tiny_export("jitnet").manifest_path
    manifest = json.loads(source.read_text())
    for artifact in manifest["artifacts"]:
        (tmp_path / artifact["file"]).write_bytes((source.parent / artifact["file"]).read_bytes())
    path = tmp_path / source.name
    path.write_text(json.dumps(manifest))
    mf.load(path)
    tflite = tmp_path / next(a["file"] for a in manifest["artifacts"] if a["format"] == "tflite")
    tflite.write_bytes(tflite.read_bytes()[:-10])
    with pytest.raises(mf.ManifestError, match="does not match its manifest"):
        mf.load(path)
    path.write_text(json.dumps({**manifest, "schema_version": 2}))
    with pytest.raises(mf.ManifestError, match="schema_version 2 is not supported"):
        mf.load(path, check_files=False)
    broken = {**manifest, "signatures": []}
    path.write_text(json.dumps(broken))
    with pytest.raises(mf.ManifestError, match="invalid manifest at signatures"):
        mf.load(path, check_files=False)
