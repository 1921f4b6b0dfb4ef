"""Drives the engine's C facade through ctypes in a process of its own.

The facade brings its own TFLite runtime (liblitert-lm.so) into the process, as it does in an
app. Run apart from pytest so that no second TFLite/XNNPACK runtime (ai_edge_litert's) shares the
process. Usage: python facade_driver.py REQUEST.json -> writes the JSON reply to stdout.
"""

from __future__ import annotations

import ctypes
import json
import sys

import numpy as np

from mobdistill.runtime.facade import FacadeInfo as Info
from mobdistill.runtime.facade import FacadeOptions as Options


def options(request: dict) -> Options:
    key = bytes.fromhex(request["update_key_hex"])
    state = request.get("update_state_file")
    return Options(request["manifest"].encode(), request["runtime_lib"].encode(), None,
                   b"xnnpack", 1, key, len(key), bytes.fromhex(request["update_device_id_hex"]),
                   0, state.encode() if state else None)


def restart(lib, request: dict, packet: bytes) -> dict:
    """A second engine on the same state file (an app restarted): the old packet is a replay."""
    err, engine = ctypes.create_string_buffer(1024), ctypes.c_void_p()
    opts = options(request)
    assert lib.md_engine_create(ctypes.byref(opts), ctypes.byref(engine), err, 1024) == 0
    result = ctypes.create_string_buffer(8192)
    code = lib.md_engine_apply_update(engine, packet, len(packet), result, 8192)
    lib.md_engine_destroy(engine)
    return {"code": code, "record": json.loads(result.value)}


def main(request: dict) -> dict:
    lib = ctypes.CDLL(request["facade"])
    lib.md_engine_delegate_used.restype = ctypes.c_char_p
    err, engine = ctypes.create_string_buffer(1024), ctypes.c_void_p()
    opts = options(request)
    reply: dict = {"create": lib.md_engine_create(ctypes.byref(opts), ctypes.byref(engine), err,
                                                  1024), "error": err.value.decode()}
    info = Info()
    reply["info_code"] = lib.md_engine_info(engine, ctypes.byref(info))
    reply["info"] = [info.height, info.width, info.num_classes, info.queue_length]
    reply["delegate_used"] = lib.md_engine_delegate_used(engine).decode()
    frame = np.load(request["frame"])
    mask, invoke_us = np.zeros(frame.shape[:2], np.uint8), ctypes.c_int64()
    packet = open(request["packet"], "rb").read()
    result = ctypes.create_string_buffer(8192)

    def segment() -> list:
        code = lib.md_engine_segment(engine, frame.ctypes.data_as(ctypes.c_void_p),
                                     frame.shape[1] * 3, mask.ctypes.data_as(ctypes.c_void_p),
                                     ctypes.byref(invoke_us), err, 1024)
        return [code, mask.tolist()]

    reply["segment_base"] = segment()
    reply["apply_code"] = lib.md_engine_apply_update(engine, packet, len(packet), result, 8192)
    reply["apply_record"] = json.loads(result.value)
    reply["segment_patched"] = segment()
    reply["replay_code"] = lib.md_engine_apply_update(engine, packet, len(packet), result, 8192)
    reply["replay_record"] = json.loads(result.value)
    # Each refusal must already be in the stats read right after the call returns.
    reply["rejected_after_each_replay"] = []
    for _ in range(request.get("replays", 0)):
        lib.md_engine_apply_update(engine, packet, len(packet), result, 8192)
        lib.md_engine_stats(engine, result, 8192)
        reply["rejected_after_each_replay"].append(json.loads(result.value)["updates"]["rejected"])
    reply["stats_too_small"] = lib.md_engine_stats(engine, result, 10)
    reply["stats_code"] = lib.md_engine_stats(engine, result, 8192)
    reply["stats"] = json.loads(result.value)
    lib.md_engine_destroy(engine)
    if request.get("update_state_file"):
        reply["after_restart"] = restart(lib, request, packet)
    return reply


if __name__ == "__main__":
    with open(sys.argv[1]) as handle:
        print(json.dumps(main(json.load(handle))))
