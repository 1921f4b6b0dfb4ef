"""The C++ engine on the host, through runtime/engine.py and a LocalDevice."""

from __future__ import annotations

import getpass
import json
import re
import shutil
import stat
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tiny_models

from mobdistill.errors import EngineError, ManifestError, MissingArtifactError, UsageError
from mobdistill.runtime.engine import (
    BUILD_DIR,
    Delegate,
    EngineOptions,
    EngineRunError,
    run_engine,
    runtime_library,
)

H, W = 16, 24


def _interpreter(path: Path):
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=str(path), num_threads=1)


def test_ctest_unit_tests_pass(engine_binary):
    done = subprocess.run(["ctest", "--test-dir", str(BUILD_DIR), "--output-on-failure"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_stateless_run_and_stats(engine_binary, stateless_manifest, device, tmp_path):
    frames = tiny_models.random_frames(tmp_path / "f.rgb", 5, (H, W))
    result = run_engine(device, stateless_manifest, warmup_runs=2, num_runs=12,
                        frames_path=frames, output_masks=True, timeout_s=60)
    s = result.summary
    assert [f.phase for f in result.frames] == ["warmup"] * 2 + ["measure"] * 12
    assert [f.frame for f in result.frames] == [i % 5 for i in range(14)]
    inv = s["invoke"]
    # The summary's statistics are those of the per-frame log's measured runs.
    measured = np.array(result.measured_invoke_us())
    assert inv["count"] == 12 == measured.size
    for q in (50, 90, 99):
        assert np.isclose(inv[f"p{q}_us"], np.percentile(measured, q), rtol=1e-3), q
    assert np.isclose(inv["min_us"], measured.min(), rtol=1e-3)
    assert np.isclose(inv["max_us"], measured.max(), rtol=1e-3)
    assert np.isclose(inv["mean_us"], measured.mean(), rtol=1e-3)
    assert s["frames"] == {"warmup": 2, "measure": 12, "source_frames": 5}
    assert s["delegate_requested"] == "xnnpack" and s["delegate_used"] == "xnnpack"
    assert s["runtime_version"].startswith("2.") and s["host"]["cpu_count"] >= 1
    # masks = argmax of the reference interpreter's logits on the same frames
    interpreter = _interpreter(stateless_manifest.parent / "tiny_stateless.tflite")
    runner = interpreter.get_signature_runner("serving_default")  # interpreter kept alive
    raw = np.fromfile(frames, np.uint8).reshape(5, H, W, 3)
    masks = np.fromfile(result.output_masks_path, np.uint8).reshape(14, H, W)
    for i, f in enumerate(result.frames):
        ref = runner(frame=raw[f.frame][None].astype(np.float32))["logits"][0]
        assert (masks[i] == ref.argmax(-1)).mean() > 0.999


def test_stateful_memory_matches_python_reference(engine_binary, stateful_manifest, device,
                                                  tmp_path):
    """init on frame 0 + mask, then step with slot 0 = first frame, FIFO, repeat-oldest pad."""
    from mobdistill.models.memory_queue import MemoryQueue

    n = 7
    frames = tiny_models.random_frames(tmp_path / "f.rgb", n, (H, W), seed=3)
    labels = np.zeros((H, W), np.uint8)
    labels[3:11, 5:17] = 1
    labels.tofile(tmp_path / "mask.u8")
    result = run_engine(device, stateful_manifest, warmup_runs=1, num_runs=9,
                        frames_path=frames, init_mask=tmp_path / "mask.u8",
                        output_logits=True, timeout_s=60)
    assert result.summary["stateful"] and result.summary["queue_length"] == 3
    assert result.summary["init_ms"] > 0
    got = np.fromfile(result.output_logits_path, np.float32).reshape(10, H, W, 2)

    interp = _interpreter(stateful_manifest.parent / "tiny_stateful.tflite")
    init, step = interp.get_signature_runner("init"), interp.get_signature_runner("step")
    raw = np.fromfile(frames, np.uint8).reshape(n, H, W, 3).astype(np.float32)
    queue = MemoryQueue(3)
    queue.reset(init(frame=raw[0][None], mask=labels[None, :, :, None].astype(np.float32)))
    for i, f in enumerate(result.frames):
        assert f.frame == (1 + i) % n
        slots = queue.slots()
        out = step(frame=raw[f.frame][None],
                   memory_keys=np.concatenate([s["key"] for s in slots], 0),
                   memory_values=np.concatenate([s["value"] for s in slots], 0))
        np.testing.assert_allclose(got[i], out["logits"][0], rtol=1e-5, atol=1e-5)
        queue.push({"key": out["key"], "value": out["value"]})


def test_sha256_mismatch_names_both_digests(engine_binary, stateless_manifest, device,
                                            tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(stateless_manifest.parent, folder)
    manifest = folder / stateless_manifest.name
    data = json.loads(manifest.read_text())
    good = data["artifacts"][0]["sha256"]
    data["artifacts"][0]["sha256"] = "0" * 64
    manifest.write_text(json.dumps(data))
    with pytest.raises(EngineError) as err:
        run_engine(device, manifest, num_runs=2, timeout_s=60)
    assert "sha256 mismatch" in str(err.value)
    assert "0" * 64 in str(err.value) and good in str(err.value)


def test_corrupt_model_is_refused(engine_binary, stateless_manifest, device, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(stateless_manifest.parent, folder)
    tflite = folder / "tiny_stateless.tflite"
    tflite.write_bytes(b"this is not a flatbuffer" * 10)
    manifest = folder / stateless_manifest.name
    data = json.loads(manifest.read_text())
    data["artifacts"][0]["sha256"] = tiny_models.sha256(tflite)  # consistent but corrupt
    manifest.write_text(json.dumps(data))
    with pytest.raises(EngineError, match="not a valid .tflite"):
        run_engine(device, manifest, num_runs=2, timeout_s=60)


def test_missing_model_and_manifest(stateless_manifest, device, tmp_path):
    with pytest.raises(ManifestError, match="not found") as missing:
        run_engine(device, tmp_path / "nope.manifest.json")
    assert missing.value.exit_code == 2
    folder = tmp_path / "m"
    shutil.copytree(stateless_manifest.parent, folder)
    (folder / "tiny_stateless.tflite").unlink()
    with pytest.raises(UsageError, match="does not exist"):
        run_engine(device, folder / stateless_manifest.name)


def test_wrong_frame_size_names_sizes(engine_binary, stateless_manifest, device, tmp_path):
    bad = tmp_path / "bad.rgb"
    bad.write_bytes(bytes(H * W * 3 + 5))
    with pytest.raises(EngineError) as err:
        run_engine(device, stateless_manifest, num_runs=2, frames_path=bad, timeout_s=60)
    assert f"{H * W * 3 + 5} bytes" in str(err.value) and f"{H}x{W}x3" in str(err.value)


def test_timeout_kills_engine_and_keeps_completed_frames(engine_binary, stateless_manifest,
                                                         device, tmp_path):
    # 10000 runs 50 ms apart would take 500 s; a loaded machine may need several seconds
    # just to load the runtime, so the deadline leaves room for a few frames either way.
    with pytest.raises(EngineRunError) as err:
        run_engine(device, stateless_manifest, warmup_runs=0, num_runs=10000, timeout_s=8.0,
                   run_delay_s=0.05, out_dir=tmp_path / "logs")
    assert "timed out" in str(err.value)
    partial = err.value.partial
    assert partial is not None and 1 <= len(partial.frames) <= 8.0 / 0.05
    assert [f.run for f in partial.frames] == list(range(len(partial.frames)))


def test_engine_direct_errors(engine_binary, stateless_manifest, tmp_path):
    base = [str(engine_binary), f"--manifest={stateless_manifest}",
            f"--jsonl={tmp_path / 'a.jsonl'}", f"--summary={tmp_path / 's.json'}"]
    done = subprocess.run(base + ["--runtime_lib=/nonexistent/lib.so"], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1].startswith("mobdistill-engine: error: cannot load "
                                                           "--runtime_lib")
    done = subprocess.run(base + [f"--runtime_lib={runtime_library()}", "--num_runs=0"],
                          capture_output=True, text=True, timeout=30)
    assert "--num_runs must be >= 1" in done.stderr


def test_op_profile_times_every_operator_of_the_stateful_step(engine_binary, stateful_manifest,
                                                                device, tmp_path):
    """Both passes on the step signature (memory inputs carried from the real run); the builtin
    pass's node numbers name the flatbuffer's operators of the step subgraph."""
    from mobdistill.export.manifest import Manifest
    from mobdistill.runtime.profile import op_profile_json, operator_flops

    frames = tiny_models.random_frames(tmp_path / "f.rgb", 4, (H, W))
    result = run_engine(device, stateful_manifest, num_runs=4, frames_path=frames,
                        enable_op_profiling=True, timeout_s=60)
    tflite = Manifest.load(stateful_manifest).tflite_path
    profile = op_profile_json(result.op_profile, tflite)
    delegate, builtin = profile["passes"]
    assert (delegate["delegate"], builtin["delegate"]) == ("xnnpack", "cpu")
    assert builtin["runs"] == 4
    table = operator_flops(tflite)
    subgraphs = {op["subgraph"] for op in builtin["ops"]}
    assert len(subgraphs) == 1  # only the per-frame signature is profiled
    (step,) = subgraphs
    step_ops = [key for key in table if key[0] == step]
    assert {(step, op["node"]) for op in builtin["ops"]} == set(step_ops)
    assert all(table[(step, op["node"])][0] == op["name"] for op in builtin["ops"])
    assert 0 < builtin["attributed_ms"] <= builtin["invoke_avg_ms"] * 1.05
    assert delegate["partitions"] and all(p["avg_ms"] >= 0 for p in delegate["partitions"])


def test_op_profiling_needs_an_output_file(engine_binary, stateless_manifest, tmp_path):
    done = subprocess.run([str(engine_binary), f"--manifest={stateless_manifest}",
                           f"--runtime_lib={runtime_library()}", f"--jsonl={tmp_path / 'a'}",
                           f"--summary={tmp_path / 's'}", "--enable_op_profiling=true"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode != 0 and "--op_profile=FILE" in done.stderr


def _patched_model(tflite: Path, out: Path) -> Path:
    """A modified model: the head bias (MARKER_BIAS) patched at its buffer offset."""
    data = bytearray(tflite.read_bytes())
    marker = np.array(tiny_models.MARKER_BIAS, np.float32).tobytes()
    offset = data.find(marker)
    assert offset > 0 and data.find(marker, offset + 1) == -1
    data[offset:offset + 8] = np.array([2.5, -3.0], np.float32).tobytes()
    out.write_bytes(bytes(data))
    return out


def test_hot_swap_frames_see_old_or_new_model_never_a_mix(engine_binary, stateless_manifest,
                                                          device, tmp_path):
    tflite = stateless_manifest.parent / "tiny_stateless.tflite"
    patched = _patched_model(tflite, tmp_path / "patched.tflite")
    frames = tiny_models.random_frames(tmp_path / "f.rgb", 4, (H, W), seed=5)
    runs = 400
    result = run_engine(device, stateless_manifest, warmup_runs=0, num_runs=runs,
                        frames_path=frames, output_logits=True, timeout_s=120,
                        extra_flags=("--swap_after_run=3",), extra_files={"swap_graph": patched})
    swaps = result.summary["swaps"]
    assert len(swaps) == 1 and swaps[0]["error"] == "" and swaps[0]["version"] == 1
    applied = swaps[0]["applied_before_run"]
    versions = [f.model_version for f in result.frames]
    assert versions == [0] * applied + [1] * (runs - applied)
    # Requested before run 3, adopted only between frames: never before run 4. How many frames
    # overlap the build depends on machine load, so it is measured in benchmarks/update_apply.py.
    assert applied >= 4
    # The build starts idle; still running 3 frames on, it runs at frame priority (a loaded
    # host cannot starve it past the run's end).
    assert swaps[0]["build_priority"] in ("idle", "raised"), swaps[0]
    if swaps[0]["build_priority"] == "raised":
        assert applied > 3 + 3
    raw = np.fromfile(frames, np.uint8).reshape(4, H, W, 3).astype(np.float32)
    refs = []
    for path in (tflite, patched):
        interpreter = _interpreter(path)  # a runner does not keep its interpreter alive
        sig = interpreter.get_signature_runner("serving_default")
        refs.append([sig(frame=raw[k][None])["logits"][0] for k in range(4)])
    got = np.fromfile(result.output_logits_path, np.float32).reshape(runs, H, W, 2)
    for i, f in enumerate(result.frames):
        old, new = refs[0][f.frame], refs[1][f.frame]
        want = new if f.model_version == 1 else old
        other = old if f.model_version == 1 else new
        np.testing.assert_allclose(got[i], want, rtol=0, atol=1e-5)
        assert np.abs(got[i] - other).max() > 0.1


def test_a_swap_prepared_after_the_last_run_is_reported_not_lost(engine_binary,
                                                                  stateless_manifest, device,
                                                                  tmp_path):
    patched = _patched_model(stateless_manifest.parent / "tiny_stateless.tflite",
                             tmp_path / "patched.tflite")
    result = run_engine(device, stateless_manifest, warmup_runs=0, num_runs=5, timeout_s=60,
                        extra_flags=("--swap_after_run=4",), extra_files={"swap_graph": patched})
    assert result.summary["swaps"] == []
    assert [f.model_version for f in result.frames] == [0] * 5
    assert any("was not ready before the last run" in w for w in result.summary["warnings"])


def test_peak_memory_is_the_engines_own(engine_binary, stateless_manifest, device):
    """ru_maxrss survives fork+exec; the engine must not report its parent's peak."""
    ballast = np.ones(384 * 2**20 // 8)  # ~384 MB resident in this (parent) process
    result = run_engine(device, stateless_manifest, warmup_runs=0, num_runs=2, timeout_s=60)
    assert ballast.sum() > 0
    assert 0 < result.summary["peak_rss_mb"] < 300


_UPDATE = {"event": "update", "source": "schedule", "name": "/w/ab12cd34.u0.mdup",
           "sequence": None, "mode": None, "status": "rejected", "reason": "bad_hmac",
           "message": "HMAC mismatch", "received_frame": 2, "swapped_frame": None,
           "decode_us": 10.0, "patch_us": None, "build_us": None, "warm_us": None,
           "packet_bytes": 120, "values": 0, "field_from_a_newer_engine": 1}


def test_frame_log_loader_skips_new_fields_and_stops_at_a_cut_line(tmp_path):
    from mobdistill.runtime.engine import load_records

    record = {"run": 0, "frame": 0, "phase": "measure", "preprocess_us": 1.0, "invoke_us": 2.0,
              "postprocess_us": 3.0, "model_version": 0}
    log = tmp_path / "frames.jsonl"
    log.write_text("\n".join([json.dumps({**record, "field_from_a_newer_engine": 1}),
                              json.dumps(_UPDATE),
                              json.dumps({**record, "run": 1}),
                              json.dumps({**record, "run": 2})[:25]]))
    frames, events = load_records(log, {"ab12cd34.u0.mdup": ("/local/p7.mdup", 7)})
    assert [f.run for f in frames] == [0, 1]
    (event,) = events
    # a packet refused before its header was read takes the sequence its schedule line declared
    assert (event.status, event.reason, event.sequence, event.packet) == \
        ("rejected", "bad_hmac", 7, "/local/p7.mdup")
    assert not event.applied


def test_engine_options_write_the_defaults_once():
    flags = EngineOptions().to_flags()
    assert flags[:3] == ["--num_threads=1", "--warmup_runs=1", "--num_runs=50"]
    assert "--use_xnnpack=true" in flags and "--use_gpu=false" in flags
    gpu = EngineOptions(delegate=Delegate.GPU).to_flags()
    assert "--use_gpu=true" in gpu and "--use_xnnpack=false" in gpu
    with pytest.raises(UsageError):
        EngineOptions(num_runs=0)
    with pytest.raises(KeyError):  # a file-valued option needs its staged path
        EngineOptions(update_key_file=Path("k")).to_flags()


def test_every_flag_written_is_one_the_engine_knows(engine_binary):
    """EngineOptions.to_flags with every option set, checked against `mobdistill-engine --help`."""
    done = subprocess.run([str(engine_binary), "--help"], capture_output=True, text=True,
                          timeout=30)
    known = set(re.findall(r"^\s+--(\w+)", done.stdout + done.stderr, re.M))
    assert {"num_threads", "num_runs", "update_key_file"} <= known
    options = EngineOptions(num_threads=2, warmup_runs=0, num_runs=3, delegate=Delegate.NNAPI,
                            run_delay_s=0.01, record_sensors=True, update_schedule=Path("s"),
                            update_dir="/d", update_port=0, update_key_file=Path("k"),
                            update_device_id="00" * 16, insecure_updates=True,
                            update_state_file="/d/state", update_blocking=True,
                            enable_op_profiling=True)
    written = {f[2:].split("=", 1)[0] for f in options.to_flags(
        {"update_schedule": "/d/s", "update_key_file": "/d/k", "op_profile": "/d/o"})}
    assert len(written) == 18 and written <= known, written - known


def test_a_bare_tflite_runs_through_the_manifest_beside_it(engine_binary, stateless_manifest,
                                                          device, tmp_path):
    tflite = stateless_manifest.parent / "tiny_stateless.tflite"
    result = run_engine(device, tflite, warmup_runs=0, num_runs=2, timeout_s=60)
    assert len(result.frames) == 2 and result.manifest_path == str(stateless_manifest)
    alone = tmp_path / "alone.tflite"
    alone.write_bytes(tflite.read_bytes())
    with pytest.raises(UsageError, match="manifest") as err:
        run_engine(device, alone)
    assert err.value.exit_code == 2
    data = json.loads(stateless_manifest.read_text())
    data["artifacts"] = [{**a, "format": "onnx", "file": "x.onnx"} for a in data["artifacts"]]
    onnx_only = tmp_path / "onnx_only.manifest.json"
    onnx_only.write_text(json.dumps(data))
    with pytest.raises(MissingArtifactError, match="no tflite artifact") as err:
        run_engine(device, onnx_only)
    assert err.value.exit_code == 2


def test_host_device_stages_privately_runs_in_its_workdir_and_cleans_up(tmp_path):
    from mobdistill.runtime.device import LocalDevice

    key = tmp_path / "key"
    key.write_bytes(b"k" * 32)
    with LocalDevice() as host:
        root = Path(host.workdir())
        assert stat.S_IMODE(root.stat().st_mode) == 0o700 and root.owner() == getpass.getuser()
        staged = host.stage(key, "run.key", private=True)
        assert stat.S_IMODE(Path(staged).stat().st_mode) == 0o600
        assert host.run(["pwd"], timeout_s=10).stdout.strip() == str(root)
        host.remove(staged)
        assert not Path(staged).exists()
    assert not root.exists()
    assert LocalDevice().workdir() != LocalDevice().workdir()  # never a shared fixed folder
