"""The engine's C facade (android/engine/include/mobdistill_engine/engine_facade.h) from Python,
through ctypes: the same `md_engine_*` calls the Android app makes through JNI.

The facade brings its own TFLite runtime into the process; do not load another one (e.g.
ai_edge_litert) in the same process. Segment from one thread; `apply_update` from another (it
builds the new interpreter on the calling thread, and the next `segment` swaps to it).
"""

from __future__ import annotations

import ctypes
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mobdistill.errors import EngineError
from mobdistill.runtime.engine import BUILD_DIR, build_host_engine, runtime_library

FACADE_NAME = "libmobdistill_facade_host.so"
_ERROR_BYTES = 2048
_RECORD_BYTES = 16384


class FacadeOptions(ctypes.Structure):
    _fields_ = [("manifest", ctypes.c_char_p), ("runtime_lib", ctypes.c_char_p),
                ("delegate_lib", ctypes.c_char_p), ("delegate", ctypes.c_char_p),
                ("num_threads", ctypes.c_int32), ("update_key", ctypes.c_char_p),
                ("update_key_size", ctypes.c_size_t), ("update_device_id", ctypes.c_char_p),
                ("insecure_updates", ctypes.c_int32), ("update_state_file", ctypes.c_char_p)]


class FacadeInfo(ctypes.Structure):
    _fields_ = [(n, ctypes.c_int32) for n in ("height", "width", "num_classes", "queue_length")]


def facade_library(build: bool = True) -> Path:
    """The host facade library of the engine build (built first when ``build``)."""
    if build:
        build_host_engine()
    path = BUILD_DIR / FACADE_NAME
    if not path.is_file():
        raise EngineError(f"{path} is missing: run `make engine`")
    return path


@dataclass(frozen=True)
class ModelInfo:
    height: int
    width: int
    num_classes: int
    queue_length: int


@dataclass(frozen=True)
class ApplyResult:
    applied: bool
    record: dict[str, Any]  # the engine's update record (status, reason, sequence, *_us, ...)


class FacadeEngine:
    """One engine instance: ``segment`` per frame, ``apply_update`` off the frame thread."""

    def __init__(self, manifest: Path, *, update_key: bytes | None, device_id: bytes,
                 insecure_updates: bool = False, state_file: Path | None = None,
                 num_threads: int = 1, library: Path | None = None) -> None:
        self._lib = ctypes.CDLL(str(library or facade_library(build=False)))
        self._declare()
        self._keep = (str(manifest).encode(), str(runtime_library()).encode(), update_key,
                      device_id, str(state_file).encode() if state_file else None)
        options = FacadeOptions(self._keep[0], self._keep[1], None, b"xnnpack", num_threads,
                           update_key, len(update_key or b""), device_id, int(insecure_updates),
                           self._keep[4])
        error = ctypes.create_string_buffer(_ERROR_BYTES)
        handle = ctypes.c_void_p()
        if self._lib.md_engine_create(ctypes.byref(options), ctypes.byref(handle), error,
                                      _ERROR_BYTES) != 0:
            raise EngineError(f"engine facade: {error.value.decode(errors='replace')}")
        self._handle: ctypes.c_void_p | None = handle
        self._closing = threading.Lock()
        info = FacadeInfo()
        self._lib.md_engine_info(self._handle, ctypes.byref(info))
        self.info = ModelInfo(info.height, info.width, info.num_classes, info.queue_length)
        self._mask = np.zeros((info.height, info.width), np.uint8)
        self._error = ctypes.create_string_buffer(_ERROR_BYTES)

    def _declare(self) -> None:
        lib = self._lib
        lib.md_engine_create.argtypes = [ctypes.POINTER(FacadeOptions),
                                         ctypes.POINTER(ctypes.c_void_p),
                                         ctypes.c_char_p, ctypes.c_size_t]
        lib.md_engine_segment.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32,
                                          ctypes.c_void_p, ctypes.POINTER(ctypes.c_int64),
                                          ctypes.c_char_p, ctypes.c_size_t]
        lib.md_engine_apply_update.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t,
                                               ctypes.c_char_p, ctypes.c_size_t]
        lib.md_engine_stats.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
        lib.md_engine_info.argtypes = [ctypes.c_void_p, ctypes.POINTER(FacadeInfo)]
        lib.md_engine_destroy.argtypes = [ctypes.c_void_p]

    def segment(self, rgb: np.ndarray) -> tuple[np.ndarray, int]:
        """(argmax mask [H, W] uint8, a copy; invoke µs) of one uint8 RGB frame [H, W, 3]."""
        if rgb.shape != (self.info.height, self.info.width, 3) or rgb.dtype != np.uint8:
            raise EngineError(f"frame {rgb.shape} {rgb.dtype}: the model takes uint8 "
                              f"{self.info.height}x{self.info.width}x3")
        rgb = np.ascontiguousarray(rgb)
        invoke_us = ctypes.c_int64()
        code = self._lib.md_engine_segment(self._handle, rgb.ctypes.data, rgb.strides[0],
                                           self._mask.ctypes.data, ctypes.byref(invoke_us),
                                           self._error, _ERROR_BYTES)
        if code != 0:
            raise EngineError(f"segment: {self._error.value.decode(errors='replace')}")
        return self._mask.copy(), int(invoke_us.value)

    def apply_update(self, packet: bytes) -> ApplyResult:
        record = ctypes.create_string_buffer(_RECORD_BYTES)
        code = self._lib.md_engine_apply_update(self._handle, packet, len(packet), record,
                                                _RECORD_BYTES)
        if code < 0:
            raise EngineError(f"apply_update: {record.value.decode(errors='replace')}")
        return ApplyResult(code == 0, json.loads(record.value))

    def stats(self) -> dict[str, Any]:
        size = _RECORD_BYTES
        while True:
            buffer = ctypes.create_string_buffer(size)
            needed = self._lib.md_engine_stats(self._handle, buffer, size)
            if needed == 0:
                return json.loads(buffer.value)
            size = needed + 1

    def close(self) -> None:
        with self._closing:
            if self._handle:
                self._lib.md_engine_destroy(self._handle)
                self._handle = None

    def __enter__(self) -> "FacadeEngine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
