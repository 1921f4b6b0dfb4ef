"""`mobdistill stream` end to end on a real clip with a tiny student and the real engine; the
link; the uplink's bytes; bring-your-own teachers."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import numpy as np
import pytest

from mobdistill.cli import build_parser, main, stream_cmd
from mobdistill.cli.stream_cmd import config_from_args
from mobdistill.contract import uplink, wire
from mobdistill.experiments import pretrain, replay, student
from mobdistill.experiments.clips import Stream, load_stream
from mobdistill.experiments.config import StreamConfig
from mobdistill.experiments.simulate import PlannedUpdate, deliver
from mobdistill.video import read_frames

RESULT_FIELDS = {"scheme", "settings", "frames", "duration_s", "miou_with_background",
                 "miou_foreground", "uplink", "downlink", "updates", "latency", "out_dir",
                 "timings_s", "runner"}
# A clip and budget where AMS's gain over no adaptation is large (5 phases of K=5 at Adam lr 1e-2:
# with the paper's 1e-3 this tiny budget left seed 2 at exactly the none score).
TINY = ["--video", "carphone_pristine.mp4", "--max-frames", "60", "--resolution", "64x128",
        "--tiny", "--iterations", "5", "--batch-size", "2", "--lr", "1e-2", "--t-update", "0.4",
        "--server-speedup", "1000", "--pretrain-iterations", "2",
        "--pretrain-clips", "bigbuckbunny.mp4", "--realtime"]
# AMS − none, mIoU with background, TINY, per seed (none: 0.285 on seeds 0-2, whose tiny start
# predicts background everywhere, 0.215 on seed 4). Seed 3 was not measured: the shared host ran
# out of time before the deadline.
MARGINS = {0: 0.171, 1: 0.175, 2: 0.140, 4: 0.202}
MIN_GAIN = min(MARGINS.values()) / 2


@pytest.fixture(scope="module")
def student_cache(tmp_path_factory) -> Path:
    """One pretrained, exported tiny student for the whole module (export is the slow part)."""
    return tmp_path_factory.mktemp("students")


@pytest.fixture(autouse=True)
def _use_student_cache(student_cache, monkeypatch) -> None:
    monkeypatch.setattr(pretrain, "cache_root", lambda: student_cache)


@pytest.fixture()
def run_cli(selfie_model, capsys):
    def run(scheme: str, out: Path, *extra: str) -> dict:
        assert main(["stream", "--scheme", scheme, *TINY, "--out", str(out), "--json",
                     *extra]) == 0
        return json.loads(capsys.readouterr().out)

    return run


def _check_common(result: dict, out: Path) -> None:
    assert RESULT_FIELDS <= set(result)
    assert result["frames"] == 60 and result["latency"]["all"]["count"] == 60
    for name in ("miou_with_background", "miou_foreground"):
        assert result[name]["definition"] and "0:carphone_pristine.mp4" in result[name]["per_clip"]
    lines = (out / "frames.csv").read_text().splitlines()
    assert len(lines) == 61 and lines[0].startswith("frame,time_s,clip,model_version,miou")
    saved = json.loads((out / "stream.json").read_text())
    assert saved["miou_with_background"] == result["miou_with_background"]


def test_stream_none_has_no_updates(run_cli, tmp_path):
    result = run_cli("none", tmp_path)
    _check_common(result, tmp_path)
    assert result["downlink"]["bytes"] == 0 and result["uplink"]["bytes"] == 0
    assert result["updates"] == []
    assert result["runner"] == "engine"  # the binary replayed it (--runner app would say "app")


def test_ams_improves_on_no_adaptation(run_cli, tmp_path):
    """Authenticated AMS packets reach the engine and make its masks better than no adaptation.
    Measured with TINY (mIoU with background, AMS − none): MARGINS below; the assertion runs
    seed 0 and asks for half the smallest margin."""
    none = run_cli("none", tmp_path / "none")
    result = run_cli("ams", tmp_path / "ams")
    _check_common(result, tmp_path / "ams")
    assert result["settings"]["link_mbps"] is None and not result["settings"]["insecure_updates"]
    assert result["uplink"]["frames"] > 0 and result["uplink"]["bytes"] > 0
    applied = [u for u in result["updates"] if u["engine"] and u["engine"]["status"] == "applied"]
    assert applied and result["downlink"]["packets_applied"] == len(applied)
    assert result["downlink"]["packets_delivered"] == len(applied)  # every arrival applied
    for u in applied:
        assert u["engine"]["swapped_frame"] >= u["engine"]["received_frame"] == u["arrival_frame"]
    versions = [int(line.split(",")[3]) for line in
                (tmp_path / "ams" / "frames.csv").read_text().splitlines()[1:]]
    assert versions[0] == 0 and versions[-1] >= 1 and versions == sorted(versions)
    gain = result["miou_with_background"]["mean"] - none["miou_with_background"]["mean"]
    assert gain > MIN_GAIN, (gain, MARGINS)


def test_one_time_sends_the_whole_model_once_after_its_first_minute(run_cli, tmp_path):
    """One-Time: one packet at 60 s x time-scale (here 1 s of the 2 s clip) changing (nearly)
    every deployed parameter, applied by the engine; nothing after it."""
    result = run_cli("one-time", tmp_path, "--time-scale", str(1 / 60))
    _check_common(result, tmp_path)
    [update] = result["updates"]
    assert update["boundary_s"] == pytest.approx(1.0)
    assert update["engine"]["status"] == "applied"
    assert update["values"] > 0.5 * _tiny_student_parameters()  # AMS's γ: 0.05
    assert result["settings"]["gamma"] == 1.0  # recorded as run, not as asked
    first_new = update["engine"]["swapped_frame"]
    versions = [int(line.split(",")[3]) for line in
                (tmp_path / "frames.csv").read_text().splitlines()[1:]]
    assert set(versions[:update["arrival_frame"]]) == {0} and set(versions[first_new + 1:]) == {1}


def _tiny_student_parameters() -> int:
    from mobdistill.models import registry

    entry = registry.get("deeplab")
    model = entry.build(entry.config_type(num_classes=2, aspp_channels=16))
    return sum(p.numel() for p in model.parameters())


def test_jit_threshold_sets_how_often_it_trains(run_cli, tmp_path):
    """JIT through the engine: at threshold 0 the student always 'meets' it (no packet, δ
    doubles); at 0.99 it trains on every teacher frame, every packet applied."""
    easy = run_cli("jit", tmp_path / "easy", "--jit-threshold", "0")
    hard = run_cli("jit", tmp_path / "hard", "--jit-threshold", "0.99")
    _check_common(hard, tmp_path / "hard")
    assert easy["updates"] == [] and easy["uplink"]["frames"] == 3  # frames 0, 16, 32
    assert hard["uplink"]["frames"] == 8  # frames 0, 8, ..., 56: δ stays at δ_min
    assert len(hard["updates"]) >= 1
    assert hard["downlink"]["packets_applied"] == len(hard["updates"])
    assert hard["downlink"]["kbit_s_paper_clock"] == hard["downlink"]["kbit_s"]  # real frames


def test_remote_tracking_runs_no_student_and_sends_labels_down(run_cli, tmp_path):
    """Remote+Tracking: JPEG samples up at 1 fps of video time (whatever the server clock's
    time scale), zlib label maps down, tracked on the device side; no engine, no packets. Close
    to the teacher on a 2 s talking-head clip."""
    result = run_cli("remote-tracking", tmp_path, "--time-scale", "0.05")
    assert result["frames"] == 60 and result["latency"]["all"]["count"] == 0
    assert result["uplink"]["codec"] == "jpeg" and result["uplink"]["frames"] == 2  # 0 s, 1 s
    assert result["uplink"]["kbit_s_paper_clock"] == result["uplink"]["kbit_s"]  # video clock
    assert result["downlink"]["label_maps"] == 2 and result["downlink"]["bytes"] > 0
    assert result["updates"] == [] and result["runner"] == "tracker"
    assert result["settings"]["tracking_flow"]["window"] == 8  # 64 x 128 / 1024
    assert result["miou_with_background"]["mean"] > 0.6


def test_capped_link_queues_cumulative_packets_and_reports_late_ones():
    s = Stream(np.zeros((10, 2, 2, 3), np.uint8), np.arange(10) * 0.1, ["c"] * 10, 1.0)
    planned = [PlannedUpdate(i + 1, b"x" * 1250, 1, 0.0, ready, 0.0)
               for i, ready in enumerate((0.0, 0.05, 0.08, 2.0))]
    deliver(planned, s, link_mbps=0.1)  # 1250 B at 0.1 Mbit/s = 0.1 s per packet, in order
    assert [p.status for p in planned] == ["delivered", "delivered", "delivered", "late"]
    assert [p.sent_s for p in planned[:3]] == pytest.approx([0.0, 0.1, 0.2])
    assert [p.arrival_frame for p in planned[:3]] == [1, 2, 3]
    deliver(planned, s, link_mbps=None)  # no cap: a packet arrives when it is ready
    assert [p.arrival_frame for p in planned[:3]] == [0, 1, 1] and planned[3].status == "late"


def test_stream_cli_defaults_are_the_papers():
    def config(*argv: str) -> StreamConfig:
        return config_from_args(build_parser(["stream"]).parse_args(["stream", *argv]))

    default = config()
    assert default.iterations == 20 and default.link_mbps is None
    assert default.gamma == 0.05 and not default.insecure_updates
    assert config("--iterations", "5").iterations == 5  # the documented speed option
    assert config("--insecure-updates").insecure_updates
    assert config("--link-mbps", "10").link_mbps == 10.0
    assert default.asr_interval_s == pytest.approx(2.0) == default.update_interval_s
    assert (default.selection, default.delta_scope) == ("paper", "all")  # AMS's own


def test_update_coding_flags_reach_the_server_session():
    from mobdistill.experiments.simulate import server_config
    from mobdistill.server import structured

    assert stream_cmd.SELECTIONS == structured.SELECTIONS  # the parser's copy of the list
    args = ["stream", "--value-coding", "qdelta", "--selection", "rows", "--delta-scope", "phase",
            "--gamma", "0.08"]
    server = server_config(config_from_args(build_parser(["stream"]).parse_args(args)))
    assert (server.selection, server.delta_scope, server.gamma) == ("rows", "phase", 0.08)
    with pytest.raises(SystemExit):
        build_parser(["stream"]).parse_args(["stream", "--delta-scope", "rows"])


def test_key_file_is_private_and_removed():
    with replay.private_key_file(b"k" * 32) as path:
        assert path.read_bytes() == b"k" * 32
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert not path.exists() and not path.parent.exists()


@pytest.mark.parametrize("codec", uplink.CODECS)
def test_uplink_counts_the_encoded_bytes(codec):
    frames = list(read_frames("carphone_pristine.mp4", 6, size=(64, 128)))
    times = [i * 0.2 for i in range(6)]
    chunk = uplink.send(frames, times, codec=codec)
    if codec == "h264":
        assert chunk.num_bytes == len(uplink.encode_h264(frames, times))
    else:
        assert chunk.num_bytes == sum(len(uplink.encode_jpeg(f)) for f in frames)
    assert len(chunk.decoded) == 6 and chunk.decoded[0].shape == (64, 128, 3)
    error = np.abs(chunk.decoded[0].astype(int) - frames[0].astype(int)).mean()
    assert 0 < error < 20  # lossy but recognisable
    assert uplink.send([], [], codec=codec).num_bytes == 0


def test_searched_deflate_is_accepted_by_the_cpp_decoder(verify_tool, tmp_path):
    from mobdistill.runtime.update_verify import run_verify_tool, write_table

    rng = np.random.default_rng(0)
    patches = [wire.TensorPatch(0, 4096, np.sort(rng.choice(4096, 400, replace=False)),
                                rng.normal(0, 0.05, 400).astype(np.float32))]
    base, device, key = bytes(32), wire.new_device_id(), wire.new_key()
    kw = dict(base_sha256=base, sequence=1, device_id=device, hmac_key=key)
    plain = wire.encode_update(patches, **kw)
    searched = wire.encode_update(patches, search_deflate=True, **kw)
    assert len(searched) <= len(plain)
    a, b = (wire.decode_update(x, expected_base_sha256=base, expected_device_id=device,
                               hmac_key=key).tensors[0] for x in (plain, searched))
    assert np.array_equal(a.indices, b.indices) and np.array_equal(a.values, b.values)
    (tmp_path / "searched.mdup").write_bytes(searched)
    table = write_table(tmp_path / "table.txt", {0: wire.TensorLocation(0, 4096 * 4, "float32")})
    [row] = run_verify_tool(verify_tool, [tmp_path / "searched.mdup"], base_sha256=base,
                            device_id=device, table=table, hmac_key=key)
    assert row["status"] == "ok", row


def test_full_update_makes_the_engine_match_the_server_student(tmp_path, selfie_model):
    """γ=100 %, no delay: after the swap the engine's masks are the server student's masks
    (the decisive end-to-end check of fold/permutation, wire rounding, keys and the engine's
    apply)."""
    import torch

    from mobdistill.export.manifest import load as load_manifest
    from mobdistill.runtime.device import LocalDevice
    from mobdistill.server.session import ServerConfig, Session
    from mobdistill.server.teachers import get_teacher

    config = StreamConfig(videos=("carphone_pristine.mp4",), max_frames_per_clip=12,
                          resolution=(64, 128), aspp_channels=16, pretrain_iterations=2,
                          pretrain_clips=("bigbuckbunny.mp4",),
                          realtime=True)
    teacher = get_teacher(config.teacher)
    model, manifest_path = student.prepare_student(config, teacher)
    s = load_stream(config.videos, config.resolution, config.max_frames_per_clip)
    session = Session("t", model, load_manifest(manifest_path), teacher,
                      ServerConfig(iterations=3, batch_size=2, lr=1e-2, gamma=1.0))
    for i in range(0, 12, 3):
        session.add_frame(float(s.times_s[i]), s.frames[i])
    result = session.train_phase(0.4)
    (tmp_path / "packets").mkdir()
    (tmp_path / "packets" / replay.packet_name(1)).write_bytes(result.packet)
    update = PlannedUpdate(1, result.packet, result.num_changed, 0.0, 0.0, 0.0,
                           status="delivered", arrival_frame=0)
    masks, _, events = replay.replay_engine(s, manifest_path, [update], config, tmp_path,
                                            LocalDevice(), session.credentials)
    [event] = events
    assert event.status == "applied", event
    after = slice(int(event.swapped_frame) + 1, None)
    x = torch.from_numpy(s.frames).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        trained = session.student(x).argmax(1).numpy()[after]
        base = model(x).argmax(1).numpy()[after]
    assert (trained != base).mean() > 0.01  # the update really changed the predictions
    assert (masks[after] == trained).mean() > 0.995  # float16 values: a few boundary pixels


def test_engine_refuses_packets_for_another_device(tmp_path, selfie_model):
    """The run's key and device id reach the engine: a packet made for another device is
    rejected (``wrong_device``) and the model stays at version 0."""
    from mobdistill.export.manifest import load as load_manifest
    from mobdistill.runtime.device import LocalDevice
    from mobdistill.server.session import ServerConfig, Session, UpdateCredentials
    from mobdistill.server.teachers import get_teacher

    config = StreamConfig(videos=("carphone_pristine.mp4",), max_frames_per_clip=6,
                          resolution=(64, 128), aspp_channels=16, pretrain_iterations=2,
                          pretrain_clips=("bigbuckbunny.mp4",))
    teacher = get_teacher(config.teacher)
    model, manifest_path = student.prepare_student(config, teacher)
    s = load_stream(config.videos, config.resolution, config.max_frames_per_clip)
    session = Session("t", model, load_manifest(manifest_path), teacher,
                      ServerConfig(iterations=1, batch_size=1))
    session.add_frame(0.0, s.frames[0])
    (tmp_path / "packets").mkdir()
    (tmp_path / "packets" / replay.packet_name(1)).write_bytes(session.train_phase(0.1).packet)
    update = PlannedUpdate(1, b"", 0, 0.0, 0.0, 0.0, status="delivered", arrival_frame=0)
    other = UpdateCredentials(wire.new_device_id(), session.credentials.hmac_key)
    _, records, events = replay.replay_engine(s, manifest_path, [update], config, tmp_path,
                                              LocalDevice(), other)
    [event] = events
    assert (event.status, event.reason) == ("rejected", "wrong_device"), event
    assert {r.model_version for r in records} == {0}


def test_bring_your_own_teacher_file(tmp_path, selfie_model):
    """--teacher takes a .tflite (here the selfie model's own file: the same labels as the
    built-in) or file.py:factory."""
    from mobdistill.server import teachers

    frame = read_frames("carphone_pristine.mp4", 1, size=(64, 128))[0]
    builtin = teachers.get_teacher("selfie")
    from_file = teachers.load_teacher(str(selfie_model))
    assert from_file.class_names == ("background", "person")
    assert np.array_equal(from_file.labels(frame), builtin.labels(frame))
    script = tmp_path / "my_teacher.py"
    script.write_text("import numpy as np\nfrom mobdistill.server.teachers import CallableTeacher\n"
                      "def make():\n    return CallableTeacher(lambda f: (f[..., 0] > 100)"
                      ".astype(np.int64), class_names=('bg', 'red'))\n")
    custom = teachers.load_teacher(f"{script}:make")
    assert custom.class_names == ("bg", "red") and custom.labels(frame).shape == (64, 128)
    assert student.teacher_tag(f"{script}:make").startswith("my_teacher.")
    with pytest.raises(Exception, match="no function"):
        teachers.load_teacher(f"{script}:missing")
    with pytest.raises(Exception, match="neither a built-in"):
        teachers.load_teacher(str(tmp_path / "absent.onnx"))


@pytest.mark.slow  # a JITNet export: ~40 CPU-s
def test_jitnet_streams_colocated_with_box_weighted_updates_from_their_own_frame(
        selfie_model, capsys, tmp_path):
    """JITNet through the same machinery (pretrain, export, server, packets, engine), co-located
    as in JITNet's paper: the teacher runs on frames 0, 8, 16 (δ_min, threshold 0.99 unmet),
    nothing crosses a link, and each update is the model of its own teacher frame on."""
    assert main(["stream", "--model", "jitnet", "--tiny", "--scheme", "jit", "--colocated",
                 "--jit-threshold", "0.99", "--jit-box-weight", "5", "--gamma", "1",
                 "--update-blocking", "--video", "carphone_pristine.mp4", "--max-frames", "24",
                 "--resolution", "32x64", "--pretrain-iterations", "2",
                 "--pretrain-clips", "bigbuckbunny.mp4", "--out", str(tmp_path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["settings"]["model"] == "jitnet" and result["settings"]["jit_box_weight"] == 5
    assert result["server"]["teacher_frames"] == 3 and result["server"]["train_steps"] >= 3
    assert result["uplink"]["bytes"] == 0
    arrivals = [u["arrival_frame"] for u in result["updates"]]
    assert arrivals and set(arrivals) <= {0, 8, 16}
    assert result["downlink"]["packets_applied"] == len(arrivals)
    versions = [int(line.split(",")[3]) for line in
                (tmp_path / "frames.csv").read_text().splitlines()[1:]]
    for k, frame in enumerate(arrivals, start=1):
        assert versions[frame] == k  # applied before its own frame ran


def test_runner_names_what_plays_the_stream() -> None:
    """stream.json's ``runner``: the engine binary on a device, the harness app on an AppTarget
    (the rule `run_benchmark` dispatches on)."""
    from unittest import mock

    from mobdistill.runtime.app_runner import AppTarget
    from mobdistill.runtime.device import Device, LocalDevice

    assert replay.runner_of(LocalDevice()) == "engine"
    phone = mock.create_autospec(Device, instance=True)  # no phone here; nothing is called
    assert replay.runner_of(phone) == "engine"
    assert replay.runner_of(AppTarget(phone)) == "app"
