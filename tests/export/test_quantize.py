"""Quantized variants: made by ai-edge-quantizer from a verified float32 export, checked against
it on segmentation through the real TFLite runtime, run by the real engine."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch

from mobdistill.errors import UsageError, VerifyError
from mobdistill.export import manifest as mf
from mobdistill.export.api import export_model, quantize_export
from mobdistill.export.quantize import QuantizeOptions, mean_iou
from mobdistill.models import registry
from mobdistill.runtime.device import LocalDevice
from mobdistill.runtime.engine import EngineOptions, run_engine
from mobdistill.runtime.profile import op_profile_json
from mobdistill.video import read_frames


def write_video(path: Path, frames: np.ndarray, fps: int = 10) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def test_a_variant_that_misses_its_threshold_writes_nothing(tiny_export, tmp_path):
    """The seeded tiny DeepLab's two top logits differ by ~0.004 everywhere: float16 keeps that,
    int8 (steps of ~0.001 over the logits' range, plus rounding through every layer) does not,
    so its variant fails verification and the published fp16 variant stays as it was."""
    source = tiny_export("deeplab", formats=("tflite",))
    fp16 = quantize_export(source.manifest_path, QuantizeOptions("fp16"), out_dir=tmp_path)
    check = fp16.quantization["verification"]
    assert check["passed"] and check["argmax_agreement"] >= 0.99
    manifest = mf.load(fp16.manifest_path)
    assert manifest.precision == "fp16" and manifest.tflite_path.name == "deeplab-fp16.tflite"
    assert manifest.quantization["calibration"] is None
    assert manifest.tflite.size_bytes < 0.6 * mf.load(source.manifest_path).tflite.size_bytes
    published = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(VerifyError, match="int8 variant agrees with the float32 export on "):
        quantize_export(source.manifest_path, QuantizeOptions("int8"), out_dir=tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == published


def test_int8_variant_runs_in_the_engine_with_an_op_profile(tiny_export, tmp_path):
    source = tiny_export("deeplab", formats=("tflite",))
    # agreement is meaningless on these weights (see above); fitted weights: the slow tests
    options = QuantizeOptions("int8", min_argmax_agreement=0.0)
    result = quantize_export(source.manifest_path, options, out_dir=tmp_path)
    manifest = mf.load(result.manifest_path)  # schema and sha256 checked
    section = manifest.quantization
    assert manifest.precision == "int8" and manifest.tflite_path.name == "deeplab-int8.tflite"
    assert section["calibration"]["video"] == "tree.avi"  # the registry's calibration clip
    assert section["verification"]["video"] == "cup.mp4"  # ... and its verification clip
    assert section["float32_reference"]["sha256"] == mf.load(source.manifest_path).tflite_sha256
    assert manifest.tflite.size_bytes < 0.4 * section["float32_reference"]["size_bytes"]
    assert manifest.parameter_map_status == "not_exported"  # int8 takes no sparse updates
    with LocalDevice(tmp_path / "device") as host:
        run = run_engine(host, result.manifest_path,
                         EngineOptions(warmup_runs=1, num_runs=3, enable_op_profiling=True))
    assert run.summary["delegate_used"] == "xnnpack"
    profile = op_profile_json(run.op_profile, manifest.tflite_path)
    delegate, builtin = profile["passes"]
    assert (delegate["delegate"], builtin["delegate"]) == ("xnnpack", "cpu")
    assert delegate["partitions"] and delegate["error"] is None
    inner = [op["name"] for op in delegate["ops"] if op["delegate_inner"]]
    assert any("QC8" in name for name in inner), inner  # XNNPACK's int8 kernels ran
    # XNNPACK takes the whole int8 graph (QUANTIZE and DEQUANTIZE at the edges included).
    assert len(delegate["partitions"]) == 1
    assert not [op for op in delegate["ops"] if not op["delegate_inner"]]
    # TFLite's reference int8 CONV_2D refuses these weights' scales (kernel_util.cc: "integer
    # overflow from quantization"); XNNPACK runs them. The built-in pass says so, the run succeeds.
    assert builtin["ops"] == [] and "AllocateTensors failed" in builtin["error"]


def test_calibrating_on_the_verification_clip_is_refused(tiny_export, tmp_path):
    source = tiny_export("deeplab", formats=("tflite",))
    options = QuantizeOptions("int8", calibration_video="cup.mp4", verification_video="cup.mp4")
    with pytest.raises(UsageError, match="calibration and verification"):
        quantize_export(source.manifest_path, options, out_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_mean_iou_pools_frames_over_present_classes():
    reference = np.array([[[0, 0, 1, 1]], [[0, 0, 0, 0]]])
    predicted = np.array([[[0, 1, 1, 1]], [[0, 0, 0, 0]]])
    # class 0: 5 shared of 6 pixels; class 1: 2 of 3; class 2 absent from both
    assert mean_iou(predicted, reference, 3) == pytest.approx((5 / 6 + 2 / 3) / 2)


@pytest.fixture(scope="module")
def fitted_jitnet(tmp_path_factory) -> tuple[Path, Path]:
    """(float32 manifest, checkpoint) of a tiny JITNet fitted to label frames dark / mid / bright:
    weights whose masks depend on the frame, so a broken quantization changes them."""
    out = tmp_path_factory.mktemp("fitted-jitnet")
    entry = registry.get("jitnet")
    config = registry.configure(entry, tiny=True)
    torch.manual_seed(0)
    model = entry.build(config)
    frames = read_frames("Megamind.avi", 24, size=entry.tiny_resolution)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    brightness = x.mean(1)
    labels = torch.bucketize(brightness, torch.quantile(brightness.flatten(),
                                                        torch.tensor([1 / 3, 2 / 3])))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(60):
        pick = torch.randint(len(x), (4,))
        loss = torch.nn.functional.cross_entropy(model(x[pick]), labels[pick])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    checkpoint = out / "student.pt"
    torch.save(model.state_dict(), checkpoint)
    result = export_model("jitnet", out_dir=out, formats=("tflite",), config=config,
                          checkpoint=checkpoint, tiny=True)
    return result.manifest_path, checkpoint


@pytest.mark.slow  # one tiny conversion: 1-4 min on a loaded 2-core host
def test_constant_calibration_frames_fail_verification_and_keep_the_previous_variant(
        fitted_jitnet, tmp_path):
    manifest, checkpoint = fitted_jitnet
    # This tiny fitted JITNet's int8 variant agrees on ~0.88 of the pixels with real calibration
    # (below the 0.95 default); the threshold here sits between that and broken calibration.
    threshold = 0.85
    good = quantize_export(manifest, QuantizeOptions("int8", min_argmax_agreement=threshold),
                           out_dir=tmp_path, checkpoint=checkpoint)
    check = good.quantization["verification"]
    share = check["float32_class_share"]
    assert sum(s > 0.1 for s in share) >= 2, f"the float32 masks hold one class: {share}"
    assert check["passed"] and check["argmax_agreement"] >= threshold
    published = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    gray = write_video(tmp_path.parent / "gray.mp4", np.full((8, 64, 128, 3), 128, np.uint8))
    with pytest.raises(VerifyError, match="int8 variant agrees with the float32 export"):
        quantize_export(manifest, QuantizeOptions("int8", calibration_video=gray,
                                                  min_argmax_agreement=threshold),
                        out_dir=tmp_path, checkpoint=checkpoint)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == published


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["fp16", "dynamic-int8"])
def test_weight_variants_agree_with_float32(fitted_jitnet, tmp_path, mode):
    manifest, checkpoint = fitted_jitnet
    result = quantize_export(manifest, QuantizeOptions(mode), out_dir=tmp_path,
                             checkpoint=checkpoint)
    check = result.quantization["verification"]
    assert check["argmax_agreement"] >= QuantizeOptions(mode).threshold
    assert result.quantization["calibration"] is None
