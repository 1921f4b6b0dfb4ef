"""Delta-distilled models in the C++ engine (docs/engine.md "Delta Distillation").

The engine runs the keyframe schedule (Algorithm 2) on a real `deeplab-delta` export over real
clip frames; its logits are compared with Python's reference schedule through ai_edge_litert
(export.verify.run_schedule) and its masks with the PyTorch model's own schedule. The per-frame
log marks keyframes, the summary splits keyframe and delta-frame latency, --keyframe_interval
overrides the manifest's period, and a streamed update makes its first frame a keyframe.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mobdistill.contract import wire
from mobdistill.contract.wire import Mode, TensorLocation, TensorPatch, ValueCoding
from mobdistill.export.manifest import Manifest
from mobdistill.export.verify import TfliteRunner, run_schedule
from mobdistill.runtime.engine import EngineRunError, ProfileResult, run_engine
from mobdistill.runtime.frames import decode_to_raw

KEY = b"delta-device-key-0123456789abcd!"
DEVICE = bytes(range(16, 32))
FRAMES = 10


@pytest.fixture(scope="module")
def delta_export(tiny_export):
    return tiny_export("deeplab-delta", formats=("tflite",))


@pytest.fixture(scope="module")
def manifest(delta_export) -> Manifest:
    return Manifest.load(delta_export.manifest_path)


@pytest.fixture(scope="module")
def clip(manifest, tmp_path_factory) -> tuple[Path, np.ndarray]:
    """FRAMES real frames of the default clip at the model's resolution."""
    height, width = manifest.resolution
    frames = decode_to_raw(None, tmp_path_factory.mktemp("delta") / "clip.rgb",
                           resolution=(height, width), max_frames=FRAMES)
    return frames.path, np.fromfile(frames.path, np.uint8).reshape(-1, height, width, 3)


def _reference_logits(tflite_bytes: bytes, manifest: Manifest, frames: np.ndarray, period: int,
                      folder: Path) -> np.ndarray:
    """Python's reference schedule (ai_edge_litert) over `frames`, restarting at frame 0."""
    path = folder / f"{hashlib.sha256(tflite_bytes).hexdigest()[:12]}.tflite"
    path.write_bytes(tflite_bytes)
    runs = run_schedule(TfliteRunner(path, num_threads=1), manifest.schedule, frames, period)
    return np.stack([outputs[manifest["output"]["name"]][0] for _, outputs in runs])


def _engine_logits(result: ProfileResult, manifest: Manifest) -> np.ndarray:
    height, width = manifest.resolution
    return np.fromfile(result.output_logits_path, np.float32).reshape(
        len(result.frames), height, width, -1)


def _assert_close(got: np.ndarray, want: np.ndarray) -> None:
    scale = float(np.abs(want).max())
    assert np.abs(got - want).max() <= 1e-4 * scale, (np.abs(got - want).max(), scale)
    assert (got.argmax(-1) == want.argmax(-1)).mean() > 0.999


def test_schedule_matches_python_reference_and_splits_latency(engine_binary, delta_export,
                                                               manifest, clip, device,
                                                               tmp_path):
    path, raw = clip
    period = manifest.schedule.period
    result = run_engine(device, manifest.path, frames_path=path, warmup_runs=0,
                        num_runs=FRAMES, output_logits=True, timeout_s=120)
    keyframes = [f.keyframe for f in result.frames]
    assert keyframes == [i % period == 0 for i in range(FRAMES)]
    assert [f.keyframe_reason for f in result.frames if f.keyframe] == (
        ["video_start"] + ["interval"] * (sum(keyframes) - 1))
    assert all(f.keyframe_reason is None for f in result.frames if not f.keyframe)

    got = _engine_logits(result, manifest)
    _assert_close(got, _reference_logits(manifest.tflite_path.read_bytes(), manifest, raw,
                                         period, tmp_path))
    # The PyTorch model's own schedule (models.delta_distill) gives the same masks.
    from mobdistill.models.delta_distill import run_schedule as torch_schedule

    with torch.no_grad():
        nchw = [torch.from_numpy(f).permute(2, 0, 1)[None].float() for f in raw]
        ref = torch_schedule(delta_export.model(), nchw, period)
    torch_masks = np.stack([o["logits"][0].argmax(0).numpy() for o in ref])
    assert (got.argmax(-1) == torch_masks).mean() > 0.99

    # The summary splits the measured frames by kind, as the per-frame log does.
    delta = result.summary["delta"]
    assert delta["keyframe_interval"] == period and delta["keyframe_interval_source"] == "manifest"
    assert delta["keyframes"] == sum(keyframes) and delta["delta_frames"] == FRAMES - sum(keyframes)
    assert delta["forced_keyframes"] == 1  # the video's first frame
    for kind, wanted in (("keyframe", True), ("delta", False)):
        invoke = [f.invoke_us for f in result.frames if f.keyframe is wanted]
        stats = delta[f"{kind}_invoke"]
        assert np.isclose(stats["p50_us"], np.percentile(invoke, 50), rtol=1e-3)
        assert np.isclose(stats["p99_us"], np.percentile(invoke, 99), rtol=1e-3)
    measured = np.array(result.measured_invoke_us())
    assert np.isclose(result.summary["imbalance"]["invoke_p99_over_p50"],
                      np.percentile(measured, 99) / np.percentile(measured, 50), rtol=1e-3)


def test_keyframe_interval_flag_overrides_the_manifest(engine_binary, manifest, clip, device,
                                                       tmp_path):
    path, raw = clip
    interval = manifest.schedule.period + 1
    runs = 2 * interval
    result = run_engine(device, manifest.path, frames_path=path, warmup_runs=1, num_runs=runs,
                        keyframe_interval=interval, output_logits=True, timeout_s=120)
    # Warmup runs are frames of the same video: the schedule counts them.
    assert [f.keyframe for f in result.frames] == [i % interval == 0 for i in range(runs + 1)]
    assert result.summary["delta"]["keyframe_interval_source"] == "--keyframe_interval"
    _assert_close(_engine_logits(result, manifest),
                  _reference_logits(manifest.tflite_path.read_bytes(), manifest,
                                    raw[:runs + 1], interval, tmp_path))


def test_profile_cli_reports_keyframes(engine_binary, manifest, tmp_path, capsys):
    """`mobdistill profile` splits keyframe and delta-frame latency, reports the imbalance and
    marks keyframes in frames.csv (and latency.png)."""
    from mobdistill.cli import main

    out = tmp_path / "prof"
    assert main(["profile", "--artifact", str(manifest.path), "--num_runs", "8",
                 "--warmup_runs", "0", "--keyframe_interval", "4", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "keyframe frames" in table and "delta frames" in table and "imbalance" in table
    (models,) = json.loads((out / "profile.json").read_text())["results"]["host"].values()
    schedule = models[manifest.model_name]["schedule"]
    assert schedule["keyframe_interval"] == 4 and schedule["keyframes"] == 2
    assert schedule["delta_frames"] == 6
    rows = list(csv.DictReader((out / "frames.csv").open()))
    assert [r["keyframe"] for r in rows] == ["1", "0", "0", "0"] * 2
    key_ms = [float(r["invoke_us"]) / 1000 for r in rows if r["keyframe"] == "1"]
    assert np.isclose(schedule["keyframe_invoke_ms"]["p50_ms"], np.median(key_ms), rtol=1e-3,
                      atol=1e-4)
    measured = np.array([float(r["invoke_us"]) for r in rows])
    assert np.isclose(schedule["invoke_p99_over_p50"],
                      np.percentile(measured, 99) / np.percentile(measured, 50), rtol=1e-3)
    assert (out / "latency.png").read_bytes()[:4] == b"\x89PNG"


def test_keyframe_interval_flag_refused_for_other_models(engine_binary, stateless_manifest,
                                                         device):
    with pytest.raises(EngineRunError, match="delta-distilled models only"):
        run_engine(device, stateless_manifest, num_runs=1, keyframe_interval=2, timeout_s=60)


def _update_packet(manifest: Manifest, base: bytes) -> tuple[bytes, bytes]:
    """A signed sparse update of the model's largest mapped tensor: (packet, patched model)."""
    data = json.loads(manifest.path.read_text())["parameter_map"]["entries"]
    entry = max(data, key=lambda e: e["buffer_size"])
    numel = entry["buffer_size"] // 4
    rng = np.random.default_rng(5)
    index = np.sort(rng.choice(numel, numel // 10, replace=False))
    patch = TensorPatch(entry["tensor_index"], numel, index, rng.normal(0, 0.5, index.size))
    packet = wire.encode_update([patch], base_sha256=hashlib.sha256(base).digest(), sequence=1,
                                value_coding=ValueCoding.F32, mode=Mode.BASE_RELATIVE,
                                device_id=DEVICE, hmac_key=KEY)
    table = {e["tensor_index"]: TensorLocation(e["buffer_offset"], e["buffer_size"], e["dtype"])
             for e in data}
    decoded = wire.decode_update(packet, expected_base_sha256=hashlib.sha256(base).digest(),
                                 expected_device_id=DEVICE, hmac_key=KEY)
    return packet, wire.apply_update(base, table, decoded)


def test_an_update_starts_with_a_keyframe_of_the_new_model(engine_binary, manifest, clip,
                                                           device, tmp_path):
    """Hot-swapped updates work for delta-distilled models: the first frame on the new model is
    a keyframe (state made by the old weights never reaches the new ones), then the schedule
    restarts there."""
    path, raw = clip
    period = manifest.schedule.period
    assert period >= 2, "a swap must land on what would have been a delta frame"
    swap = 1  # frame 1 would be a delta frame of the old model
    base = manifest.tflite_path.read_bytes()
    packet, patched = _update_packet(manifest, base)
    (tmp_path / "p1.mdup").write_bytes(packet)
    (tmp_path / "key").write_bytes(KEY)
    schedule = tmp_path / "schedule.jsonl"
    schedule.write_text(json.dumps({"frame": swap, "packet": str(tmp_path / "p1.mdup")}) + "\n")
    runs = swap + period + 1
    result = run_engine(device, manifest.path, frames_path=path, warmup_runs=0, num_runs=runs,
                        update_schedule=schedule, update_blocking=True,
                        update_key_file=tmp_path / "key", update_device_id=DEVICE.hex(),
                        output_logits=True, timeout_s=120)
    assert [f.model_version for f in result.frames] == [0] * swap + [1] * (runs - swap)
    assert result.frames[swap].keyframe and result.frames[swap].keyframe_reason == "model_changed"
    assert [f.keyframe for f in result.frames[swap:]] == [
        i % period == 0 for i in range(runs - swap)]
    assert result.summary["delta"]["forced_keyframes"] == 2  # video start + the update

    got = _engine_logits(result, manifest)
    _assert_close(got[:swap], _reference_logits(base, manifest, raw[:swap], period, tmp_path))
    new = _reference_logits(patched, manifest, raw[swap:runs], period, tmp_path)
    _assert_close(got[swap:], new)
    old = _reference_logits(base, manifest, raw[:runs], period, tmp_path)[swap:]
    assert np.abs(new - old).max() > 1e-3, "the update must change the outputs"
