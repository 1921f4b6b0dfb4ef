"""The C facade (engine_facade.h, android/engine/src/facade.cc) called through ctypes.

The JNI bridge calls exactly these functions; android/verify_host.sh drives them from a JVM.
Inference runs in a child process (facade_driver.py) holding only the engine's TFLite runtime,
as an app does: pytest's process also has ai_edge_litert's runtime loaded.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mobdistill.contract import wire
from mobdistill.runtime.engine import BUILD_DIR, runtime_library

KEY, DEVICE = b"facade-device-key", bytes(range(16))  # the driver passes both to the facade


sys.path.insert(0, str(Path(__file__).parent))
from facade_driver import Options  # noqa: E402

DRIVER = Path(__file__).parent / "facade_driver.py"


@pytest.fixture(scope="module")
def lib(engine_binary):
    return ctypes.CDLL(str(BUILD_DIR / "libmobdistill_facade_host.so"))


def test_facade_segment_update_stats(engine_binary, tiny_export, tmp_path):
    """Segment, apply an update, refuse its replay, read stats: against ai_edge_litert."""
    from ai_edge_litert.interpreter import Interpreter

    export = tiny_export("deeplab", formats=("tflite",))
    manifest = json.loads(export.manifest_path.read_text())
    base = (export.manifest_path.parent / manifest["artifacts"][0]["file"]).read_bytes()
    h, w = manifest["model"]["resolution"]
    frame = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    entry = next(e for e in manifest["parameter_map"]["entries"]
                 if e["parameter"] == "classifier.bias")
    n = entry["buffer_size"] // 4
    sha = hashlib.sha256(base).digest()
    packet = wire.encode_update([wire.TensorPatch(entry["tensor_index"], n, np.array([0]),
                                                  np.array([9.0]))], base_sha256=sha, sequence=4,
                                device_id=DEVICE, hmac_key=KEY, mode=wire.Mode.BASE_RELATIVE)
    np.save(tmp_path / "frame.npy", frame)
    (tmp_path / "update.mdup").write_bytes(packet)
    request = {"facade": str(BUILD_DIR / "libmobdistill_facade_host.so"),
               "manifest": str(export.manifest_path), "runtime_lib": str(runtime_library()),
               "frame": str(tmp_path / "frame.npy"), "packet": str(tmp_path / "update.mdup"),
               "replays": 200, "update_key_hex": KEY.hex(), "update_device_id_hex": DEVICE.hex(),
               "update_state_file": str(tmp_path / "app-files" / "updates.state")}
    (tmp_path / "app-files").mkdir()
    (tmp_path / "request.json").write_text(json.dumps(request))
    # One CPU: the caller resumes before the update worker, which exposed a lost-swap deadlock.
    first_allowed_cpu = str(min(os.sched_getaffinity(0)))  # CPU 0 may not be ours
    one_cpu = ["taskset", "-c", first_allowed_cpu] if shutil.which("taskset") else []
    done = subprocess.run([*one_cpu, sys.executable, str(DRIVER), str(tmp_path / "request.json")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)

    def litert_mask(data: bytes) -> np.ndarray:
        interpreter = Interpreter(model_content=data)  # a runner does not keep it alive
        run = interpreter.get_signature_runner("serving_default")
        return run(frame=frame[None].astype(np.float32))["logits"][0].argmax(-1)

    table = {entry["tensor_index"]: wire.TensorLocation(entry["buffer_offset"], n * 4)}
    patched = wire.apply_update(base, table, wire.decode_update(
        packet, expected_base_sha256=sha, expected_device_id=DEVICE, hmac_key=KEY))
    assert reply["create"] == 0, reply["error"]
    assert reply["info_code"] == 0 and reply["info"][0:2] == [h, w] and reply["info"][3] == 0
    assert reply["delegate_used"] == "xnnpack"
    for key, model in (("segment_base", base), ("segment_patched", patched)):
        code, mask = reply[key]
        assert code == 0 and (np.array(mask) == litert_mask(model)).mean() > 0.999, key
    assert reply["apply_code"] == 0
    assert reply["apply_record"]["status"] == "applied" and reply["apply_record"]["sequence"] == 4
    assert reply["replay_code"] == 1 and reply["replay_record"]["reason"] == "replay"
    assert reply["stats_too_small"] > 10 and reply["stats_code"] == 0  # size needed, then ok
    stats = reply["stats"]
    assert stats["frames"] == 2 and stats["model_version"] == 4
    # a synchronous refusal is counted before apply_update returns (no race with stats)
    assert reply["rejected_after_each_replay"] == list(range(2, 202))
    assert stats["updates"]["applied"] == 1 and stats["updates"]["rejected"] == 201
    assert stats["updates"]["received"] == 202
    # the app restarted on the same state file: the packet it applied before is a replay now
    state = json.loads((tmp_path / "app-files" / "updates.state").read_text())
    assert state == {"base_sha256": sha.hex(), "last_sequence": 4}
    restarted = reply["after_restart"]
    assert restarted["code"] == 1 and restarted["record"]["reason"] == "replay"


def test_facade_errors_and_benchmark_main(lib, tmp_path):
    err = ctypes.create_string_buffer(1024)
    engine = ctypes.c_void_p()
    opts = Options(b"/nonexistent.manifest.json", b"x.so", None, None, 0, None, 0)
    assert lib.md_engine_create(ctypes.byref(opts), ctypes.byref(engine), err, 1024) == 1
    assert b"mobdistill export" in err.value and not engine.value
    argv = (ctypes.c_char_p * 2)(b"mobdistill-engine", b"--num_thread=2")
    assert lib.md_engine_benchmark_main(2, argv, err, 1024) == 1
    assert b"--num_thread" in err.value
