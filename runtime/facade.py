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
                ("insecure_updates", ctypes.c_int32), ("update_state_file", ctypes.c_char_p),
                ("update_build_priority", ctypes.c_char_p)]


class FacadeInfo(ctypes.Structure):
    _fields_ = [(n, ctypes.c_int32) for n in ("height", "width", "num_classes", "queue_length")]


class FacadeImagePlane(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("size", ctypes.c_size_t),
                ("row_stride", ctypes.c_int32), ("pixel_stride", ctypes.c_int32)]


class FacadeCameraImage(ctypes.Structure):
    _fields_ = [("format", ctypes.c_int32), ("width", ctypes.c_int32),
                ("height", ctypes.c_int32), ("rotation_degrees", ctypes.c_int32),
                ("planes", FacadeImagePlane * 3)]


class FacadeTiming(ctypes.Structure):
    _fields_ = [(n, ctypes.c_int64) for n in ("preprocess_us", "invoke_us", "postprocess_us")]


RGBA_8888 = 1  # Android's PixelFormat.RGBA_8888
YUV_420_888 = 35  # Android's ImageFormat.YUV_420_888


@dataclass(frozen=True)
class ImagePlane:
    """One plane as a camera delivers it: bytes, and the strides that address them."""

    data: np.ndarray  # uint8, 1-D; the plane's buffer
    row_stride: int
    pixel_stride: int


@dataclass(frozen=True)
class CameraFrame:
    """A camera frame in sensor orientation; `rotation_degrees` turns it upright (clockwise)."""

    format: int  # RGBA_8888 or YUV_420_888
    width: int
    height: int
    rotation_degrees: int
    planes: tuple[ImagePlane, ...]

    @classmethod
    def from_rgba(cls, rgba: np.ndarray, rotation_degrees: int = 0,
                  row_padding: int = 0) -> "CameraFrame":
        """An RGBA_8888 frame from uint8 [H, W, 4], rows padded by `row_padding` bytes."""
        h, w = rgba.shape[:2]
        padded = np.zeros((h, w * 4 + row_padding), np.uint8)
        padded[:, :w * 4] = rgba.reshape(h, w * 4)
        return cls(RGBA_8888, w, h, rotation_degrees,
                   (ImagePlane(padded.reshape(-1), w * 4 + row_padding, 4),))

    @classmethod
    def from_yuv420(cls, y: np.ndarray, u: np.ndarray, v: np.ndarray, rotation_degrees: int = 0,
                    *, interleaved: bool = False, row_padding: int = 0) -> "CameraFrame":
        """A YUV_420_888 frame from full-size Y and half-size U, V planes (uint8 2-D).

        `interleaved`: chroma laid out as NV21 (V, U alternating, pixel stride 2), the layout
        most Android cameras deliver; otherwise planar (I420, pixel stride 1).
        """
        h, w = y.shape
        luma = np.zeros((h, w + row_padding), np.uint8)
        luma[:, :w] = y
        ch, cw = u.shape
        if interleaved:
            stride = 2 * cw + row_padding
            vu = np.zeros((ch, stride), np.uint8)
            vu[:, 0:2 * cw:2], vu[:, 1:2 * cw:2] = v, u
            flat = vu.reshape(-1)
            size = (ch - 1) * stride + 2 * cw - 1  # each view ends at its own last sample
            chroma = (ImagePlane(flat[1:size + 1], stride, 2), ImagePlane(flat[:size], stride, 2))
        else:
            planes = []
            for plane in (u, v):
                padded = np.zeros((ch, cw + row_padding), np.uint8)
                padded[:, :cw] = plane
                planes.append(ImagePlane(padded.reshape(-1), cw + row_padding, 1))
            chroma = (planes[0], planes[1])
        return cls(YUV_420_888, w, h, rotation_degrees,
                   (ImagePlane(luma.reshape(-1), w + row_padding, 1), *chroma))

    def upright_size(self) -> tuple[int, int]:
        """(H, W) after rotation: what the preview shows."""
        turned = self.rotation_degrees in (90, 270)
        return (self.width, self.height) if turned else (self.height, self.width)

    def to_c(self) -> FacadeCameraImage:
        """The C struct; it points into this frame's arrays (keep the frame alive meanwhile)."""
        image = FacadeCameraImage(self.format, self.width, self.height, self.rotation_degrees)
        for index, plane in enumerate(self.planes):
            data = np.ascontiguousarray(plane.data, dtype=np.uint8)
            if data is not plane.data:
                raise EngineError("plane data must be a contiguous uint8 array")
            image.planes[index] = FacadeImagePlane(data.ctypes.data, data.nbytes,
                                                   plane.row_stride, plane.pixel_stride)
        return image


@dataclass(frozen=True)
class FrameTiming:
    """A frame's timed stages (µs): preprocess includes the camera conversion."""

    preprocess_us: int
    invoke_us: int
    postprocess_us: int


def _declare_image_calls(lib: ctypes.CDLL) -> None:
    lib.md_convert_image.argtypes = [ctypes.POINTER(FacadeCameraImage), ctypes.c_int32,
                                     ctypes.c_int32, ctypes.c_void_p, ctypes.c_char_p,
                                     ctypes.c_size_t]
    lib.md_mask_to_preview.argtypes = [ctypes.c_void_p, ctypes.c_int32, ctypes.c_int32,
                                       ctypes.c_void_p, ctypes.c_int32, ctypes.c_int32,
                                       ctypes.c_int32, ctypes.c_char_p, ctypes.c_size_t]
    lib.md_engine_segment_image.argtypes = [ctypes.c_void_p, ctypes.POINTER(FacadeCameraImage),
                                            ctypes.c_void_p, ctypes.POINTER(FacadeTiming),
                                            ctypes.c_char_p, ctypes.c_size_t]


def _library(library: Path | None) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(library or facade_library(build=False)))
    _declare_image_calls(lib)
    return lib


def convert_image(frame: CameraFrame, height: int, width: int, *,
                  library: Path | None = None) -> np.ndarray:
    """The engine's camera conversion alone: `frame` -> upright uint8 RGB [height, width, 3]
    (what `segment_image` feeds the model). Needs no TFLite runtime."""
    lib = _library(library)
    rgb = np.zeros((height, width, 3), np.uint8)
    error = ctypes.create_string_buffer(_ERROR_BYTES)
    image = frame.to_c()
    if lib.md_convert_image(ctypes.byref(image), width, height, rgb.ctypes.data, error,
                            _ERROR_BYTES) != 0:
        raise EngineError(f"convert image: {error.value.decode(errors='replace')}")
    return rgb


def mask_to_preview(mask: np.ndarray, height: int, width: int, *,
                    library: Path | None = None) -> np.ndarray:
    """An upright model mask [h, w] mapped onto a preview of [height, width] (nearest class)."""
    lib = _library(library)
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    out = np.zeros((height, width), np.uint8)
    error = ctypes.create_string_buffer(_ERROR_BYTES)
    if lib.md_mask_to_preview(mask.ctypes.data, mask.shape[1], mask.shape[0], out.ctypes.data,
                              width, height, width, error, _ERROR_BYTES) != 0:
        raise EngineError(f"mask to preview: {error.value.decode(errors='replace')}")
    return out


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
                 num_threads: int = 1, library: Path | None = None,
                 update_build_priority: str | None = None) -> None:
        self._lib = ctypes.CDLL(str(library or facade_library(build=False)))
        self._declare()
        self._keep = (str(manifest).encode(), str(runtime_library()).encode(), update_key,
                      device_id, str(state_file).encode() if state_file else None)
        options = FacadeOptions(self._keep[0], self._keep[1], None, b"xnnpack", num_threads,
                           update_key, len(update_key or b""), device_id, int(insecure_updates),
                           self._keep[4],
                           update_build_priority.encode() if update_build_priority else None)
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
        _declare_image_calls(lib)

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

    def segment_image(self, frame: CameraFrame) -> tuple[np.ndarray, FrameTiming]:
        """(upright argmax mask [H, W] uint8, a copy; the frame's timed stages) of one camera
        frame of any size: converted, rotated and resized inside the engine."""
        image, timing = frame.to_c(), FacadeTiming()
        code = self._lib.md_engine_segment_image(self._handle, ctypes.byref(image),
                                                 self._mask.ctypes.data, ctypes.byref(timing),
                                                 self._error, _ERROR_BYTES)
        if code != 0:
            raise EngineError(f"segment image: {self._error.value.decode(errors='replace')}")
        return self._mask.copy(), FrameTiming(timing.preprocess_us, timing.invoke_us,
                                              timing.postprocess_us)

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
