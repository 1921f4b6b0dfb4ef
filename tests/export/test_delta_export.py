"""The delta-distilled DeepLab's export: `keyframe` and `delta` in one .tflite (and ONNX), the
carried state declared in the manifest, run in the real interpreters against PyTorch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mobdistill.errors import ManifestError, UsageError
from mobdistill.export import manifest as mf
from mobdistill.export.api import export_model
from mobdistill.export.quantize import QuantizeOptions
from mobdistill.export.verify import OnnxRunner, TfliteRunner, run_frames
from mobdistill.models import delta_distill as dd
from mobdistill.models import registry
from mobdistill.video import read_frames

NAME = "deeplab-delta"


@pytest.fixture(scope="module")
def delta_export(tiny_export):
    return tiny_export(NAME)


def test_one_tflite_holds_both_signatures_and_the_manifest_declares_the_carry(delta_export):
    from ai_edge_litert.interpreter import Interpreter

    manifest = mf.load(delta_export.manifest_path)  # schema, carry checks and every sha256
    schedule = manifest.schedule
    assert schedule is not None and manifest.memory is None
    assert (schedule.keyframe_signature, schedule.delta_signature) == ("keyframe", "delta")
    assert schedule.period == delta_export.config.keyframe_period
    listed = Interpreter(str(manifest.tflite_path)).get_signature_list()
    assert sorted(listed) == ["delta", "keyframe"]
    for output, inp in schedule.carry:
        assert output in listed["keyframe"]["outputs"] and output in listed["delta"]["outputs"]
        assert inp in listed["delta"]["inputs"]
    assert sorted(manifest.onnx_paths) == ["delta", "keyframe"]
    checked = {(c["format"], c["signature"]) for c in manifest["verification"]["results"]}
    assert checked == {(f, s) for f in ("tflite", "onnx") for s in ("keyframe", "delta")}


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_interpreters_run_the_schedule_like_pytorch_on_a_real_clip(delta_export, fmt):
    manifest = mf.load(delta_export.manifest_path)
    h, w = manifest.resolution
    frames = read_frames("cup.mp4", 6, size=(h, w), start=60)  # the verification clip
    runner = (TfliteRunner(manifest.tflite_path) if fmt == "tflite"
              else OnnxRunner(manifest.onnx_paths))
    entry, config = registry.get(NAME), delta_export.config
    got = run_frames(runner, entry.signatures(config, h, w), None, frames,
                     schedule=entry.schedule(config))
    model = delta_export.model()
    tensors = [torch.from_numpy(f).permute(2, 0, 1)[None].float() for f in frames]
    with torch.no_grad():
        reference = dd.run_schedule(model, tensors, config.keyframe_period)
    assert [name for name, _ in got] == ["keyframe", "delta", "delta"] * 2
    for (_, outputs), expected in zip(got, reference):
        logits = expected["logits"].permute(0, 2, 3, 1).numpy()
        scale = np.abs(logits).max()
        assert scale > 1  # real magnitudes, not a vanishing random network
        assert np.abs(outputs["logits"] - logits).max() < 1e-3 * scale
        assert np.mean(outputs["logits"].argmax(-1) == logits.argmax(-1)) > 0.99
        last = model.state[-1]
        state = expected[last].permute(0, 2, 3, 1).numpy()
        assert np.abs(outputs[last] - state).max() < 1e-3 * np.abs(state).max()


def _delta_inputs(manifest: dict) -> list[dict]:
    return next(s for s in manifest["signatures"] if s["name"] == "delta")["inputs"]


_QUEUE = {"kind": "memory_queue", "queue_length": 2, "policy": "first_frame_plus_fifo",
          "pad": "repeat_oldest", "init_signature": "keyframe", "step_signature": "delta",
          "carry": [{"output": "logits", "input": "frame"}]}
BROKEN = {
    "carry to a missing input": lambda m: m["schedule"]["carry"][0].update(input="nowhere"),
    "an input nothing feeds": lambda m: m["schedule"]["carry"].pop(),
    "carry of another shape": lambda m: _delta_inputs(m)[1].update(shape=[1, 2, 2, 2]),
    "a missing signature": lambda m: m["schedule"].update(delta_signature="step"),
    "an unknown section version": lambda m: m["schedule"].update(version=2),
    "a memory queue as well": lambda m: m.update(memory=_QUEUE),
}


@pytest.mark.parametrize("label", sorted(BROKEN))
def test_manifest_refuses_a_schedule_that_does_not_fit(delta_export, label):
    manifest = json.loads(delta_export.manifest_path.read_text())
    mf.validate(manifest)
    BROKEN[label](manifest)
    with pytest.raises(ManifestError):
        mf.validate(manifest)


def test_quantizing_a_delta_model_is_refused_before_any_work(tmp_path):
    with pytest.raises(UsageError, match="quantize"):
        export_model(NAME, out_dir=tmp_path, tiny=True, formats=("tflite",),
                     quantize=QuantizeOptions(mode="fp16"))
    assert not any(tmp_path.iterdir())
