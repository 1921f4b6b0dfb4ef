"""The profile and sweep flows and their CLI commands, on tiny models and real bikes.mp4 frames."""

from __future__ import annotations

import json

import numpy as np
import pytest

import tiny_models
from mobdistill.cli import main
from mobdistill.errors import UsageError
from mobdistill.runtime.frames import decode_to_raw
from mobdistill.runtime.sweep import parse_int_list


def test_decode_bikes_to_raw(tmp_path):
    frames = decode_to_raw(None, tmp_path / "f.rgb", resolution=(16, 24), max_frames=3)
    assert frames.count == 3 and frames.video.endswith("bikes.mp4")
    data = np.fromfile(frames.path, np.uint8)
    assert data.size == 3 * 16 * 24 * 3 and data.std() > 5  # real pixels, not a blank frame


def test_parse_int_list():
    assert parse_int_list("1,2,4-6") == [1, 2, 4, 5, 6]
    assert parse_int_list("3, 1-2,3") == [1, 2, 3]
    for bad in ("", "0-3", "a", "5-2"):
        with pytest.raises(UsageError):
            parse_int_list(bad)


def test_profile_cli_writes_reports(engine_binary, stateful_manifest, tmp_path, capsys):
    out = tmp_path / "prof"
    code = main(["profile", "--artifact", str(stateful_manifest), "--num_runs", "6",
                 "--warmup_runs", "1", "--out", str(out), "--json"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    entry = printed["results"]["host"]
    (runtime, models), = entry.items()
    assert runtime.startswith("litert-2.") and models["tiny_stateful"]["queue_length"] == 3
    ms = models["tiny_stateful"]["invoke_ms"]
    assert ms["min_ms"] <= ms["p50_ms"] <= ms["max_ms"]
    rows = (out / "frames.csv").read_text().splitlines()
    assert rows[0].startswith("run,frame,phase") and len(rows) == 1 + 7
    assert (out / "latency.png").read_bytes()[:4] == b"\x89PNG"


def test_profile_cli_bad_artifact_exits_2(tmp_path, capsys):
    assert main(["profile", "--artifact", str(tmp_path / "missing.manifest.json")]) == 2
    assert "not found" in capsys.readouterr().err


def test_sweep_over_queue_lengths(engine_binary, tmp_path, monkeypatch, capsys):
    import mobdistill.runtime.sweep as sweep_mod

    built = {q: tiny_models.build_stateful(tmp_path / f"export-q{q}", queue_length=q)
             for q in (1, 3)}

    def fake_export(model, *, out_dir, resolution, queue_length, tiny):
        return built[queue_length]

    monkeypatch.setattr(sweep_mod, "export_if_needed", fake_export)
    capsys.readouterr()  # the converter's own chatter
    out = tmp_path / "sweep"
    code = main(["sweep", "--model", "mobilevos", "--queue-lengths", "1,3", "--num_runs", "5",
                 "--rounds", "2", "--out", str(out), "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert [p["queue_length"] for p in result["points"]] == [1, 3]
    assert result["num_runs"] == 10  # two interleaved rounds, pooled
    assert sorted(p.name for p in (out / "q3").iterdir()) == ["round0", "round1"]
    for p in result["points"]:
        assert p["p10_ms"] <= p["p50_ms"] <= p["p90_ms"]
    assert (out / "sweep.csv").is_file() and (out / "sweep.png").is_file()


def test_gpu_request_without_delegate_reports_cpu_fallback(engine_binary, stateless_manifest,
                                                           tmp_path, capsys):
    """benchmark_model-style delegate flags; a GPU request never silently falls back."""
    code = main(["profile", "--artifact", str(stateless_manifest), "--num_runs", "3",
                 "--use_gpu", "--out", str(tmp_path), "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    by_runtime = next(iter(report["results"].values()))
    result = next(iter(next(iter(by_runtime.values())).values()))
    assert result["delegate_requested"] == "gpu" and result["delegate_used"] == "cpu"
    assert any("GPU delegate unavailable" in w for w in result["warnings"])
    with pytest.raises(SystemExit) as usage:
        main(["profile", "--artifact", str(stateless_manifest), "--use_nnapi", "maybe"])
    assert usage.value.code == 2
