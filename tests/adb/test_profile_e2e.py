"""End to end: the real host engine profiled through AdbDevice over the loopback ADB peer.

The peer reports ro.product.cpu.abi=x86_64, so runtime/engine.py stages the host build of
mobdistill-engine and liblitert-lm.so (~130 MB, a few seconds over loopback) into the peer's
sandbox and runs it there with /bin/sh, exactly as it would on a phone over `shell:`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from adb_peer import AdbPeer
from profile_checks import check_runner_labels

from mobdistill.cli import main
from mobdistill.runtime.adb_device import AdbDevice, AdbOptions


@pytest.fixture(scope="module")
def tiny_manifest(stateless_manifest: Path) -> Path:
    return stateless_manifest


def test_run_engine_over_adb(peer: AdbPeer, options: AdbOptions, tiny_manifest: Path,
                             tmp_path: Path) -> None:
    from mobdistill.runtime.engine import run_engine

    with AdbDevice.open(peer.serial, options=options) as phone:
        result = run_engine(phone, tiny_manifest, num_runs=5, warmup_runs=1, timeout_s=120,
                            out_dir=tmp_path / "run")
    assert [f.phase for f in result.frames] == ["warmup"] + ["measure"] * 5
    assert result.summary["frames"]["measure"] == 5 and result.summary["invoke"]["count"] == 5
    assert result.device["kind"] == "adb" and result.device["soc"] == "LB1000"
    assert Path(result.jsonl_path).is_file() and Path(result.summary_path).is_file()
    staged = peer.host_path("/data/local/tmp/mobdistill")
    assert staged is not None and (staged / "mobdistill-engine").is_file()


def test_profile_cli_over_adb(peer: AdbPeer, home: Path, tiny_manifest: Path, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["profile", "--artifact", str(tiny_manifest), "--device", peer.serial,
                 "--num_runs", "3", "--out", str(tmp_path / "profile"), "--json"])
    assert code == 0, capsys.readouterr().err
    report = json.loads(capsys.readouterr().out)
    assert report["devices"][peer.serial]["soc"] == "LB1000"
    (entry,) = report["results"][peer.serial].values()
    assert entry["tiny_stateless"]["num_runs"] == 3
    assert entry["tiny_stateless"]["runner"] == "engine"
    check_runner_labels(tmp_path / "profile", "engine")



def test_sweep_cli_over_adb(peer: AdbPeer, home: Path, tmp_path: Path, monkeypatch,
                            capsys: pytest.CaptureFixture[str]) -> None:
    """`mobdistill sweep --device` runs every queue length through the ADB peer."""
    import tiny_models

    import mobdistill.runtime.sweep as sweep_mod

    built = {q: tiny_models.build_stateful(tmp_path / f"export-q{q}", queue_length=q)
             for q in (1, 2)}
    monkeypatch.setattr(sweep_mod, "export_if_needed",
                        lambda model, *, queue_length, **_: built[queue_length])
    capsys.readouterr()
    code = main(["sweep", "--model", "mobilevos", "--queue-lengths", "1-2", "--num_runs", "4",
                 "--device", peer.serial, "--out", str(tmp_path / "sweep"), "--json"])
    assert code == 0, capsys.readouterr().err
    result = json.loads(capsys.readouterr().out)
    assert result["device"] == peer.serial
    assert [p["queue_length"] for p in result["points"]] == [1, 2]
    assert all(p["p50_ms"] > 0 and p["delegate_used"] == "xnnpack" for p in result["points"])
    assert (tmp_path / "sweep" / "sweep.png").is_file()
