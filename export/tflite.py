"""PyTorch -> TFLite through litert-torch, plus inspection of the resulting flatbuffer."""

from __future__ import annotations

import contextlib
import os
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from mobdistill.errors import ExportError
from mobdistill.export.deploy import SignatureModule, sample_inputs
from mobdistill.models.blocks import Normalize
from mobdistill.models.mobilevos import MobileVOS


@dataclass(frozen=True)
class FlatBuffer:
    """Read-only view of a .tflite file: op counts and where each weight buffer lives."""

    op_counts: dict[str, int]
    buffers: dict[int, tuple[int, int]]  # buffer index -> (byte offset in file, byte size)
    tensors: list[dict]  # every tensor: subgraph, index, name, shape, dtype, buffer


def to_tflite(modules: dict[str, SignatureModule], path: Path) -> None:
    """Convert all signature modules into one .tflite file with named signatures."""
    import litert_torch

    if not modules:
        raise ExportError("nothing to convert: the model declares no signatures")
    try:
        with _stdout_to_stderr(), row_wide_normalization(modules), batched_memory_read(modules):
            converter = litert_torch
            for name, module in modules.items():
                converter = converter.signature(name, module,
                                                sample_kwargs=sample_inputs(module.spec))
            converter.convert().export(str(path))
    except Exception as err:  # the converter raises many unrelated types
        raise ExportError(f"litert-torch could not convert the model: {err}") from err


@contextlib.contextmanager
def row_wide_normalization(modules: dict[str, SignatureModule]) -> Iterator[None]:
    """While converting: each Normalize's per-channel constants expanded along the frame's width.

    `x * scale - shift` broadcasts [1, 3, 1, 1] constants over [B, 3, H, W]; in the NHWC graph
    that is a run of 3 floats, and XNNPACK's binary kernels then handle 3 elements per call
    (engine op profile, JITNet 720x1280, 2 threads: MUL 4.1 ms + SUB 4.8 ms of a 110-134 ms
    frame, where ONNX Runtime's Sub takes 0.8 ms). [1, 3, 1, W] constants give every element the
    same product and difference, with W * 3 contiguous floats per run. The model is restored after.
    """
    widths = {t.shape[2] for m in modules.values() for t in m.spec.inputs
              if t.role == "frame" and t.layout == "NHWC" and len(t.shape) == 4}
    normalizers = {id(n): n for m in modules.values() for n in m.model.modules()
                   if isinstance(n, Normalize)}
    if len(widths) != 1 or not normalizers:
        yield  # no single frame width to expand to: convert as the model is
        return
    width = widths.pop()
    saved = {key: (n.scale, n.shift) for key, n in normalizers.items()}
    try:
        for n in normalizers.values():
            n.scale = n.scale.expand(1, -1, 1, width).contiguous()
            n.shift = n.shift.expand(1, -1, 1, width).contiguous()
        yield
    finally:
        for key, n in normalizers.items():
            n.scale, n.shift = saved[key]


@contextlib.contextmanager
def batched_memory_read(modules: dict[str, SignatureModule]) -> Iterator[None]:
    """While converting: MobileVOS's memory read as a batched product (BATCH_MATMUL, which
    XNNPACK runs) instead of one that converts to FULLY_CONNECTED with computed weights, which
    TFLite's own kernel runs (models/mobilevos.py, `_query_key_products`). Restored after."""
    students = {id(s): s for m in modules.values() for s in m.model.modules()
                if isinstance(s, MobileVOS)}
    try:
        for s in students.values():
            s.batched_memory_read = True
        yield
    finally:
        for s in students.values():
            s.batched_memory_read = False


def inspect(path: Path) -> FlatBuffer:
    """Parse the flatbuffer with the schema bindings shipped by ai-edge-litert."""
    from ai_edge_litert import schema_py_generated as schema

    data = path.read_bytes()
    model = schema.Model.GetRootAs(data, 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    dtypes = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    codes = [
        names.get(max(model.OperatorCodes(i).BuiltinCode(),
                      model.OperatorCodes(i).DeprecatedBuiltinCode()), "CUSTOM")
        for i in range(model.OperatorCodesLength())
    ]
    ops: Counter[str] = Counter()
    tensors: list[dict] = []
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)
        ops.update(codes[graph.Operators(i).OpcodeIndex()] for i in range(graph.OperatorsLength()))
        for t in range(graph.TensorsLength()):
            tensor = graph.Tensors(t)
            tensors.append({
                "subgraph": s, "index": t, "name": (tensor.Name() or b"").decode(),
                "shape": [int(d) for d in tensor.ShapeAsNumpy()] if tensor.ShapeLength() else [],
                "dtype": dtypes.get(tensor.Type(), "unknown"), "buffer": tensor.Buffer(),
            })
    return FlatBuffer(dict(sorted(ops.items())), dict(_buffer_locations(model)), tensors)


def _buffer_locations(model) -> Iterator[tuple[int, tuple[int, int]]]:
    """(offset, size) in the file of each non-empty buffer, inline or appended (>2 GB models)."""
    for index in range(model.BuffersLength()):
        buffer = model.Buffers(index)
        if buffer.DataLength() > 0:
            vector = buffer._tab.Offset(4)  # field 'data' of table Buffer
            yield index, (buffer._tab.Vector(vector), buffer.DataLength())
        elif buffer.Offset() > 1:
            yield index, (int(buffer.Offset()), int(buffer.Size()))


def read_buffer(data: bytes, location: tuple[int, int], dtype: str = "float32") -> np.ndarray:
    offset, size = location
    return np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<"), count=size // 4,
                         offset=offset)


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """litert-torch prints progress on stdout; keep stdout clean for `--json`."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
