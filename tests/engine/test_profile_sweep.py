"""The profile and sweep flows and their CLI commands, on tiny models and real bikes.mp4 frames."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mobdistill.cli import main
from mobdistill.errors import UsageError
from mobdistill.export.manifest import Manifest
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
    rows = list(csv.DictReader((out / "frames.csv").open()))
    assert [r["phase"] for r in rows] == ["warmup"] + ["measure"] * 6
    measured_ms = np.array([float(r["invoke_us"]) for r in rows[1:]]) / 1000
    ms = models["tiny_stateful"]["invoke_ms"]  # the report's figures are the CSV's frames
    assert np.isclose(ms["p50_ms"], np.percentile(measured_ms, 50), rtol=1e-3, atol=1e-4)
    assert np.isclose(ms["max_ms"], measured_ms.max(), rtol=1e-3, atol=1e-4)
    assert (out / "latency.png").read_bytes()[:4] == b"\x89PNG"


def test_profile_cli_op_profile_table_and_json(engine_binary, stateless_manifest, tmp_path,
                                              capsys):
    code = main(["profile", "--artifact", str(stateless_manifest), "--num_runs", "3",
                 "--out", str(tmp_path), "--enable_op_profiling", "--json"])
    assert code == 0
    captured = capsys.readouterr()
    (models,) = json.loads(captured.out)["results"]["host"].values()
    section = models["tiny_stateless"]["op_profile"]
    assert [p["label"] for p in section["passes"]] == ["delegate", "builtin"]
    builtin = section["passes"][1]
    times = [op["avg_ms"] for op in builtin["ops"]]
    assert times == sorted(times, reverse=True)
    convs = [op for op in builtin["ops"] if op["name"] == "CONV_2D"]
    assert len(convs) == 3 and all(op["flops"] > 0 for op in convs)
    # the head: 2 x H x W x 2 classes x 8 channels multiply-accumulates (1x1 conv)
    assert min(op["flops"] for op in convs) == 2 * 16 * 24 * 2 * 8
    assert "op profile, builtin pass (cpu, 3 runs)" in captured.err
    assert f"  {'rank':>4}  {'op':34s}" in captured.err and "top op types:" in captured.err


def test_profile_cli_bad_artifact_exits_2(tmp_path, capsys):
    assert main(["profile", "--artifact", str(tmp_path / "missing.manifest.json")]) == 2
    assert "not found" in capsys.readouterr().err


@pytest.mark.slow  # converting a MobileVOS graph takes ~3 min on 2 cores: `make test-full`
def test_sweep_exports_each_queue_length_and_pools_rounds(engine_binary, tiny_export, tmp_path,
                                                          capsys):
    """Real tiny MobileVOS exports for Q=1 and Q=2, profiled in two interleaved rounds; stdout
    holds only the JSON (the converters' chatter must not reach it). Q=2 is the suite's shared
    tiny export, placed where the sweep looks for earlier exports (reused, as a second sweep
    reuses); Q=1 is converted here."""
    out = tmp_path / "sweep"
    shared = tiny_export("mobilevos").manifest_path.parent
    shutil.copytree(shared, out / "export" / "mobilevos-q2-tiny")
    code = main(["sweep", "--model", "mobilevos", "--tiny", "--queue-lengths", "1,2",
                 "--num_runs", "3", "--warmup_runs", "0", "--rounds", "2", "--out", str(out),
                 "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["num_runs"] == 6  # two interleaved rounds, pooled
    for point, q in zip(result["points"], (1, 2), strict=True):
        assert point["queue_length"] == q
        manifest = Manifest.load(Path(point["manifest"]))
        assert manifest.memory is not None and manifest.memory.queue_length == q
        step = manifest.signature(manifest.memory.step_signature)
        assert step.input_with_role("memory").shape[0] == q  # the graph itself holds Q slots
        pooled = []
        for round_dir in ("round0", "round1"):
            rows = list(csv.DictReader((out / f"q{q}" / round_dir / "frames.csv").open()))
            pooled += [float(r["invoke_us"]) / 1000 for r in rows if r["phase"] == "measure"]
        assert len(pooled) == 6
        assert np.isclose(point["p50_ms"], np.percentile(pooled, 50), rtol=1e-6)
        assert np.isclose(point["p90_ms"], np.percentile(pooled, 90), rtol=1e-6)
    assert Path(result["points"][0]["manifest"]).parent == out / "export" / "mobilevos-q1-tiny"
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
