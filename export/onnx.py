"""PyTorch -> ONNX through torch.onnx's dynamo exporter, one file per signature."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from mobdistill.errors import ExportError
from mobdistill.export.deploy import SignatureModule, sample_inputs
from mobdistill.export.tflite import _stdout_to_stderr

OPSET = 18


def onnx_file_name(stem: str, signature: str, count: int) -> str:
    """`<stem>.onnx` for a single-signature model, `<stem>.<signature>.onnx` otherwise."""
    return f"{stem}.onnx" if count == 1 else f"{stem}.{signature}.onnx"


def to_onnx(module: SignatureModule, path: Path) -> None:
    """Export one signature with its deployment input and output names."""
    kwargs = sample_inputs(module.spec)
    try:
        with _stdout_to_stderr(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module, (), kwargs=kwargs, dynamo=True, opset_version=OPSET,
                input_names=[t.name for t in module.spec.inputs],
                output_names=[t.name for t in module.spec.outputs],
                verbose=False,
            )
            if program is None:
                raise ExportError(f"torch.onnx returned no program for {module.spec.name}")
            program.save(str(path), external_data=False)
    except Exception as err:  # the exporter raises many unrelated types
        raise ExportError(
            f"torch.onnx could not export signature {module.spec.name}: {err}") from err
