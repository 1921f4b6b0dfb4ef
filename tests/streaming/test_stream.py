"""`mobdistill stream` end to end on a real clip with a tiny student, and the uplink's bytes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mobdistill.cli import main
from mobdistill.contract import uplink
from mobdistill.experiments import stream
from mobdistill.video import read_frames

RESULT_FIELDS = {"scheme", "settings", "frames", "duration_s", "miou_mean",
                 "miou_per_clip", "miou_over_time", "uplink", "downlink", "updates", "latency",
                 "out_dir", "timings_s"}


@pytest.fixture(scope="module")
def run_cli(tmp_path_factory):
    cache = tmp_path_factory.mktemp("students")

    def run(scheme: str, out: Path, capsys, monkeypatch) -> dict:
        monkeypatch.setattr(stream, "cache_root", lambda: cache)
        argv = ["stream", "--scheme", scheme, "--video", "carphone_pristine.mp4",
                "--max-frames", "30", "--resolution", "64x128", "--tiny", "--iterations", "1",
                "--batch-size", "1", "--t-update", "0.4", "--server-speedup", "1000",
                "--pretrain-iterations", "2", "--realtime", "--out", str(out), "--json"]
        assert main(argv) == 0
        return json.loads(capsys.readouterr().out)

    return run


def _check_common(result: dict, out: Path) -> None:
    assert RESULT_FIELDS <= set(result)
    assert result["frames"] == 30
    assert 0.0 <= result["miou_mean"] <= 1.0
    assert result["miou_over_time"] and "0:carphone_pristine.mp4" in result["miou_per_clip"]
    assert result["latency"]["all"]["count"] == 30
    lines = (out / "frames.csv").read_text().splitlines()
    assert len(lines) == 31 and lines[0].startswith("frame,time_s,clip,model_version,miou")
    assert json.loads((out / "stream.json").read_text())["miou_mean"] == result["miou_mean"]


def test_stream_none_has_no_updates(run_cli, tmp_path, capsys, monkeypatch):
    result = run_cli("none", tmp_path, capsys, monkeypatch)
    _check_common(result, tmp_path)
    assert result["downlink"]["bytes"] == 0 and result["uplink"]["bytes"] == 0
    assert result["updates"] == []


def test_stream_ams_updates_reach_the_engine(run_cli, tmp_path, capsys, monkeypatch):
    result = run_cli("ams", tmp_path, capsys, monkeypatch)
    _check_common(result, tmp_path)
    assert result["uplink"]["frames"] > 0 and result["uplink"]["bytes"] > 0
    applied = [u for u in result["updates"] if u["engine"] and u["engine"]["status"] == "applied"]
    assert applied, result["updates"]
    assert result["downlink"]["packets_applied"] == len(applied)
    for u in applied:
        assert u["engine"]["swapped_frame"] >= u["engine"]["received_frame"] == u["arrival_frame"]
        assert (tmp_path / "packets" / f"update-{u['sequence']:04d}.mdup").stat().st_size \
            == u["bytes"]
    versions = [int(line.split(",")[3]) for line in
                (tmp_path / "frames.csv").read_text().splitlines()[1:]]
    assert versions[0] == 0 and versions[-1] >= 1 and versions == sorted(versions)


def test_deliver_supersedes_waiting_base_relative_packets():
    s = stream.Stream(np.zeros((10, 2, 2, 3), np.uint8), np.arange(10) * 0.1, ["c"] * 10, 1.0)
    planned = [stream.PlannedUpdate(i + 1, b"x" * 1250, 1, 0.0, ready, 0.0)
               for i, ready in enumerate((0.0, 0.05, 0.08, 2.0))]
    stream.deliver(planned, s, link_mbps=0.1)  # 1250 B at 0.1 Mbit/s = 0.1 s per packet
    assert [p.status for p in planned] == ["delivered", "superseded", "delivered", "late"]
    assert planned[0].arrival_frame == 1 and planned[2].sent_s == pytest.approx(0.1)


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


def test_searched_deflate_stays_wire_v1_for_the_cpp_decoder(verify_tool, tmp_path):
    from mobdistill.contract import wire
    from mobdistill.runtime.update_verify import run_verify_tool

    rng = np.random.default_rng(0)
    patches = [wire.TensorPatch(0, 4096, np.sort(rng.choice(4096, 400, replace=False)),
                                rng.normal(0, 0.05, 400).astype(np.float32))]
    base = bytes(32)
    plain = wire.encode_update(patches, base_sha256=base, sequence=1)
    searched = wire.encode_update(patches, base_sha256=base, sequence=1, search_deflate=True)
    assert len(searched) <= len(plain)
    a, b = (wire.decode_update(x, expected_base_sha256=base).tensors[0] for x in (plain, searched))
    assert np.array_equal(a.indices, b.indices) and np.array_equal(a.values, b.values)
    (tmp_path / "searched.mdup").write_bytes(searched)
    [row] = run_verify_tool(verify_tool, [tmp_path / "searched.mdup"], base_sha256=base)
    assert row["status"] == "ok", row


def test_full_update_makes_the_engine_match_the_server_student(tmp_path, monkeypatch):
    """γ=100 %, no delay: after the swap the engine's masks are the server student's masks
    (the decisive end-to-end check of fold/permutation, wire rounding and the engine's apply)."""
    import torch

    from mobdistill.export.manifest import load as load_manifest
    from mobdistill.server.session import ServerConfig, Session
    from mobdistill.runtime.device import LocalDevice
    from mobdistill.server.teachers import get_teacher

    monkeypatch.setattr(stream, "cache_root", lambda: tmp_path / "students")
    config = stream.StreamConfig(videos=("carphone_pristine.mp4",), max_frames_per_clip=12,
                                 resolution=(64, 128), aspp_channels=16, pretrain_iterations=2,
                                 realtime=True)
    teacher = get_teacher(config.teacher)
    student, manifest_path = stream.prepare_student(config, teacher)
    s = stream.load_stream(config.videos, config.resolution, config.max_frames_per_clip)
    session = Session("t", student, load_manifest(manifest_path), teacher,
                      ServerConfig(iterations=3, batch_size=2, lr=1e-2, gamma=1.0))
    for i in range(0, 12, 3):
        session.add_frame(float(s.times_s[i]), s.frames[i])
    result = session.train_phase(0.4)
    (tmp_path / "packets").mkdir()
    (tmp_path / "packets" / "update-0001.mdup").write_bytes(result.packet)
    update = stream.PlannedUpdate(1, result.packet, result.num_changed, 0.0, 0.0, 0.0,
                                  status="delivered", arrival_frame=0)
    masks, _, events = stream.replay_engine(s, manifest_path, [update], config, tmp_path,
                                            LocalDevice())
    [event] = events
    assert event["status"] == "applied", event
    after = slice(int(event["swapped_frame"]) + 1, None)
    x = torch.from_numpy(s.frames).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        trained = session.student(x).argmax(1).numpy()[after]
        base = student(x).argmax(1).numpy()[after]
    assert (trained != base).mean() > 0.01  # the update really changed the predictions
    assert (masks[after] == trained).mean() > 0.995  # float16 values: a few boundary pixels


def test_stream_cli_maps_update_mode():
    from mobdistill.cli import build_parser
    from mobdistill.cli.stream_cmd import config_from_args

    def config(*argv: str):
        return config_from_args(build_parser(["stream"]).parse_args(["stream", *argv]))

    assert config("--update-mode", "base-relative").mode == "base-relative"
    assert config().mode == "cumulative"  # the paper's mode, measured best
    with pytest.raises(SystemExit):
        config("--update-mode", "sometimes")
