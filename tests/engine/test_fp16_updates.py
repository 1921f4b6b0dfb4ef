"""Sparse updates to a float16-weight variant, end to end: the parameter map finds the float16
buffers, a server-side packet (float16 replacement values, then QDELTA deltas) is patched the same
by the Python and the C++ appliers, and the engine runs the patched model as LiteRT does.

The variant is made from the tiny export by ai-edge-quantizer's float casting (the converter
option the quantized export uses: float16 weight buffers, DEQUANTIZE at load).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import tiny_models

from mobdistill.contract import wire
from mobdistill.contract.wire import Mode, TensorLocation, TensorPatch, ValueCoding
from mobdistill.export.param_map import build_parameter_map
from mobdistill.export.tflite import inspect
from mobdistill.runtime.engine import run_engine
from mobdistill.runtime.update_verify import find_verify_tool, run_verify_tool, write_table

# ~25 s on the shared 2-core host, most of it importing ai-edge-quantizer (TensorFlow): above
# the fast suite's budget, so it runs in make test-full.
pytestmark = pytest.mark.slow

KEY = b"fp16-device-key"
DEVICE = bytes(range(16))


def _float16_variant(source: Path, out: Path) -> Path:
    from ai_edge_quantizer import quantizer, recipe_manager
    from ai_edge_quantizer.qtyping import OpQuantizationConfig, TensorQuantizationConfig
    from ai_edge_quantizer.qtyping import TFLOperationName as Op

    recipe = recipe_manager.RecipeManager()
    recipe.add_quantization_config(
        ".*", Op.ALL_SUPPORTED,
        OpQuantizationConfig(weight_tensor_config=TensorQuantizationConfig(num_bits=16,
                                                                           dtype="FLOAT"),
                             compute_precision="FLOAT", explicit_dequantize=True),
        algorithm_key="float_casting")
    engine = quantizer.Quantizer(str(source))
    engine.load_quantization_recipe(recipe.get_quantization_recipe())
    engine.quantize().export_model(str(out))
    return out


class Fp16Model:
    def __init__(self, export, folder: Path) -> None:
        self.export = export
        self.manifest = json.loads(export.manifest_path.read_text())
        source = export.manifest_path.parent / self.manifest["artifacts"][0]["file"]
        self.path = _float16_variant(source, folder / "deeplab-fp16.tflite")
        self.base = self.path.read_bytes()
        self.sha = hashlib.sha256(self.base).digest()
        self.parameter_map = build_parameter_map(export.model(), inspect(self.path), self.base)
        self.entries = self.parameter_map["entries"]
        self.table = {e["tensor_index"]: TensorLocation(e["buffer_offset"], e["buffer_size"],
                                                        e["dtype"]) for e in self.entries}

    def manifest_for(self, data: bytes, folder: Path) -> Path:
        """A manifest for these model bytes (the engine checks the file against its sha256)."""
        folder.mkdir(parents=True, exist_ok=True)
        tflite = folder / "deeplab.tflite"
        tflite.write_bytes(data)
        manifest = json.loads(json.dumps(self.manifest))
        manifest["artifacts"] = [dict(manifest["artifacts"][0], file=tflite.name,
                                      sha256=hashlib.sha256(data).hexdigest(),
                                      size_bytes=len(data))]
        manifest["parameter_map"] = self.parameter_map
        path = folder / "deeplab.manifest.json"
        path.write_text(json.dumps(manifest))
        return path


@pytest.fixture(scope="module")
def fp16(tiny_export, tmp_path_factory) -> Fp16Model:
    return Fp16Model(tiny_export("deeplab", formats=("tflite",)),
                     tmp_path_factory.mktemp("fp16"))


def test_parameter_map_finds_the_float16_buffers(fp16: Fp16Model) -> None:
    """Every float32-map parameter is found again: weights in float16 buffers holding the float32
    export's values rounded to float16; what the quantizer left float32 (the bias) as before."""
    float_entries = {e["parameter"]: e for e in fp16.manifest["parameter_map"]["entries"]}
    float_tflite = (fp16.export.manifest_path.parent
                    / fp16.manifest["artifacts"][0]["file"]).read_bytes()
    assert fp16.parameter_map["status"] == fp16.manifest["parameter_map"]["status"]
    assert {e["parameter"] for e in fp16.entries} == set(float_entries)
    assert sum(e["dtype"] == "float16" for e in fp16.entries) >= len(fp16.entries) - 2
    for entry in fp16.entries:
        source = float_entries[entry["parameter"]]
        want = np.frombuffer(float_tflite, "<f4", source["buffer_size"] // 4,
                             source["buffer_offset"])
        if entry["dtype"] == "float16":
            assert len(entry["shape"]) == 4
            want = want.astype(np.float16)
        held = np.frombuffer(fp16.base, want.dtype, want.size, entry["buffer_offset"])
        assert entry["buffer_size"] == want.nbytes
        np.testing.assert_array_equal(held, want)


def _packets(fp16: Fp16Model) -> list[bytes]:
    """Packet 1 replaces the classifier's weights, 5 % of the largest tensor (float16 tensors)
    and the classifier's bias (left float32 by the quantizer: a mixed table), F16 values;
    packet 2 adds QDELTA deltas to half of the ASPP projection and 10 % of the largest tensor
    (cumulative). The tiny model's features are weak (logits move ~1e-5 from its weights), so
    the bias is what moves the logits visibly; the float16 patches are checked byte for byte."""
    rng = np.random.default_rng(3)
    by_name = {e["parameter"]: e for e in fp16.entries}
    largest = max((e for e in fp16.entries if e["dtype"] == "float16"),
                  key=lambda e: e["buffer_size"])

    def some(entry: dict, fraction: float) -> tuple[int, int, np.ndarray]:
        numel = entry["buffer_size"] // wire.ELEMENT_BYTES[entry["dtype"]]
        idx = np.sort(rng.choice(numel, max(1, int(numel * fraction)), replace=False))
        return entry["tensor_index"], numel, idx

    replace = [TensorPatch(*chosen, rng.normal(0, 2.0, chosen[2].size)) for chosen in
               (some(by_name["classifier.weight"], 1.0), some(largest, 0.05),
                some(by_name["classifier.bias"], 1.0))]
    deltas = [TensorPatch(*chosen, wire.dequantize_delta(rng.integers(-3, 4, chosen[2].size), 0.2),
                          additive=True, step=0.2)
              for chosen in (some(by_name["aspp.project.0.weight"], 0.5), some(largest, 0.1))]
    common = dict(base_sha256=fp16.sha, device_id=DEVICE, hmac_key=KEY, mode=Mode.CUMULATIVE)
    return [wire.encode_update(replace, sequence=1, value_coding=ValueCoding.F16, **common),
            wire.encode_update(deltas, sequence=2, value_coding=ValueCoding.QDELTA, **common)]


def _litert_logits(model_bytes: bytes, frames: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_content=model_bytes, num_threads=1).get_signature_runner()
    return np.stack([runner(frame=f[None].astype(np.float32))["logits"][0] for f in frames])


def test_fp16_update_end_to_end(fp16: Fp16Model, engine_binary, device, tmp_path: Path) -> None:
    packets = _packets(fp16)
    patched = fp16.base
    for packet in packets:  # the Python applier, as the server mirrors it
        decoded = wire.decode_update(packet, expected_base_sha256=fp16.sha,
                                     expected_device_id=DEVICE, hmac_key=KEY,
                                     limits=wire.DecodeLimits.for_table(fp16.table))
        patched = wire.apply_update(patched, fp16.table, decoded)
    files = []
    for number, packet in enumerate(packets, 1):
        files.append(tmp_path / f"{number}.mdup")
        files[-1].write_bytes(packet)
    results = run_verify_tool(find_verify_tool(build=True), files, base_sha256=fp16.sha,
                              device_id=DEVICE, hmac_key=KEY, model=fp16.path, chain=True,
                              table=write_table(tmp_path / "table.txt", fp16.table))
    assert [r["status"] for r in results] == ["ok", "ok"], results
    assert results[-1]["patched_sha256"] == hashlib.sha256(patched).hexdigest()

    height, width = fp16.export.resolution
    frames_path = tiny_models.random_frames(tmp_path / "f.rgb", 3, (height, width), seed=5)
    frames = np.fromfile(frames_path, np.uint8).reshape(3, height, width, 3)
    result = run_engine(device, fp16.manifest_for(patched, tmp_path / "patched"), num_runs=3,
                        warmup_runs=0, frames_path=frames_path, output_logits=True,
                        timeout_s=120)
    engine = np.fromfile(result.output_logits_path, np.float32).reshape(3, height, width, -1)
    want = _litert_logits(patched, frames)
    np.testing.assert_allclose(engine, want, rtol=1e-4, atol=1e-4)
    before = _litert_logits(fp16.base, frames)
    moved, agreement = np.abs(want - before).max(), np.abs(engine - want).max()
    assert moved > 1000 * agreement + 0.1, (moved, agreement)
