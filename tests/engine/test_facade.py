"""The C facade (engine_facade.h, android/engine/src/facade.cc) called through ctypes.

The JNI bridge calls exactly these functions; android/verify_host.sh drives them from a JVM.
"""

from __future__ import annotations

import ctypes
import hashlib
import json

import numpy as np
import pytest

from mobdistill.runtime.ams import wire
from mobdistill.runtime.engine import BUILD_DIR, runtime_library


class Options(ctypes.Structure):
    _fields_ = [("manifest", ctypes.c_char_p), ("runtime_lib", ctypes.c_char_p),
                ("delegate_lib", ctypes.c_char_p), ("delegate", ctypes.c_char_p),
                ("num_threads", ctypes.c_int32), ("update_key", ctypes.c_char_p),
                ("update_key_size", ctypes.c_size_t)]


class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_int32) for n in ("height", "width", "num_classes", "queue_length")]


@pytest.fixture(scope="module")
def lib(engine_binary):
    return ctypes.CDLL(str(BUILD_DIR / "libmobdistill_facade_host.so"))


def test_facade_segment_update_stats(lib, tiny_export, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    export = tiny_export("deeplab", formats=("tflite",))
    manifest = json.loads(export.manifest_path.read_text())
    base = (export.manifest_path.parent / manifest["artifacts"][0]["file"]).read_bytes()
    h, w = manifest["model"]["resolution"]
    err = ctypes.create_string_buffer(1024)
    engine = ctypes.c_void_p()
    opts = Options(str(export.manifest_path).encode(), str(runtime_library()).encode(), None,
                   b"xnnpack", 1, None, 0)
    assert lib.md_engine_create(ctypes.byref(opts), ctypes.byref(engine), err, 1024) == 0, err.value
    info = Info()
    assert lib.md_engine_info(engine, ctypes.byref(info)) == 0
    assert (info.height, info.width, info.queue_length) == (h, w, 0)
    lib.md_engine_delegate_used.restype = ctypes.c_char_p
    assert lib.md_engine_delegate_used(engine) == b"xnnpack"

    frame = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    invoke_us = ctypes.c_int64()

    def segment():
        code = lib.md_engine_segment(engine, frame.ctypes.data_as(ctypes.c_void_p), w * 3,
                                     mask.ctypes.data_as(ctypes.c_void_p), ctypes.byref(invoke_us),
                                     err, 1024)
        assert code == 0, err.value
        return mask.copy()

    def litert_mask(data):
        run = Interpreter(model_content=data).get_signature_runner("serving_default")
        return run(frame=frame[None].astype(np.float32))["logits"][0].argmax(-1)

    assert (segment() == litert_mask(base)).mean() > 0.999
    entry = next(e for e in manifest["parameter_map"]["entries"]
                 if e["parameter"] == "classifier.bias")
    n = entry["buffer_size"] // 4
    sha = hashlib.sha256(base).digest()
    packet = wire.encode_update([wire.TensorPatch(entry["tensor_index"], n, np.array([0]),
                                                  np.array([9.0]))], base_sha256=sha, sequence=4)
    result = ctypes.create_string_buffer(8192)
    assert lib.md_engine_apply_update(engine, packet, len(packet), result, 8192) == 0
    record = json.loads(result.value)
    assert record["status"] == "applied" and record["sequence"] == 4
    table = {entry["tensor_index"]: wire.TensorLocation(entry["buffer_offset"], n * 4)}
    patched = wire.apply_update(base, table, wire.decode_update(packet, expected_base_sha256=sha))
    assert (segment() == litert_mask(patched)).mean() > 0.999
    assert lib.md_engine_apply_update(engine, packet, len(packet), result, 8192) == 1
    assert json.loads(result.value)["reason"] == "replay"
    assert lib.md_engine_stats(engine, result, 10) > 10  # too small: size needed
    assert lib.md_engine_stats(engine, result, 8192) == 0
    stats = json.loads(result.value)
    assert stats["frames"] == 2 and stats["model_version"] == 4
    assert stats["updates"]["applied"] == 1 and stats["updates"]["rejected"] == 1
    lib.md_engine_destroy(engine)


def test_facade_errors_and_benchmark_main(lib, tmp_path):
    err = ctypes.create_string_buffer(1024)
    engine = ctypes.c_void_p()
    opts = Options(b"/nonexistent.manifest.json", b"x.so", None, None, 0, None, 0)
    assert lib.md_engine_create(ctypes.byref(opts), ctypes.byref(engine), err, 1024) == 1
    assert b"mobdistill export" in err.value and not engine.value
    argv = (ctypes.c_char_p * 2)(b"mobdistill-engine", b"--num_thread=2")
    assert lib.md_engine_benchmark_main(2, argv, err, 1024) == 1
    assert b"--num_thread" in err.value
