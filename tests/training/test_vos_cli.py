"""`mobdistill vos data|train|evaluate` end to end on a tiny budget: a DAVIS folder from a real
clip with the selfie teacher's masks, one teacher and one student iteration, a checkpoint the
exporter's loader accepts, and J&F of a tiny export through the engine."""

from __future__ import annotations

import json
from pathlib import Path

from mobdistill.cli import main
from mobdistill.export.checkpoint import load_checkpoint
from mobdistill.models import mobilevos


def test_data_train_evaluate(tiny_export, tmp_path: Path, capsys) -> None:
    davis_root = tmp_path / "davis"
    for split in ("train", "val"):
        assert main(["vos", "data", "--out", str(davis_root), "--clip", "carphone_pristine.mp4",
                     "--split", split, "--size", "64x64", "--frames", "6"]) == 0
    assert (davis_root / "Annotations/480p/carphone_pristine/00005.png").is_file()
    out = tmp_path / "run"
    assert main(["vos", "train", "--davis", str(davis_root), "--out", str(out), "--tiny",
                 "--size", "64x64", "--iterations", "1", "--teacher-iterations", "1",
                 "--lr", "1e-3", "--invert-probability", "0.5"]) == 0
    report = json.loads((out / "train.json").read_text())
    assert len(report["student"]["losses"]) == 1 and report["settings"]["loss"] == "unified"
    assert report["settings"]["invert_probability"] == "0.5"
    load_checkpoint(mobilevos.build(mobilevos.tiny_config()), out / "student.pt")
    capsys.readouterr()
    manifest = tiny_export("mobilevos", formats=("tflite",)).manifest_path
    assert main(["vos", "evaluate", "--artifact", str(manifest), "--davis", str(davis_root),
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["sequences"][0]["frames"] == 6
    assert 0.0 <= result["overall"]["J&F"] <= 1.0


def test_evaluate_refuses_a_missing_artifact(tmp_path: Path, capsys) -> None:
    code = main(["vos", "evaluate", "--artifact", str(tmp_path / "none.json"), "--davis",
                 str(tmp_path)])
    assert code == 2 and "not found" in capsys.readouterr().err


def test_train_refuses_an_invert_probability_outside_0_1(tmp_path: Path, capsys) -> None:
    code = main(["vos", "train", "--davis", str(tmp_path), "--out", str(tmp_path / "run"),
                 "--invert-probability", "1.5"])
    assert code == 2 and "--invert-probability must lie in [0, 1]" in capsys.readouterr().err
