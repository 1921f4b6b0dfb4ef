"""`mobdistill export` from the command line: output, exit codes and every bad input."""

from __future__ import annotations

import json

import pytest
import torch

from mobdistill.cli import main
from mobdistill.errors import VerifyError
from mobdistill.export.api import export_model
from mobdistill.export.verify import Tolerance
from mobdistill.models import registry


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


_OWN_MODEL = """
import torch


class Own(torch.nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, width, 3, padding=1),
                                        torch.nn.ReLU(), torch.nn.Conv2d(width, 2, 1))

    def forward(self, frame: torch.Tensor) -> torch.Tensor:
        return self.body(frame / 255.0)


def build(width: int = 8) -> torch.nn.Module:
    return Own(width)
"""


def test_json_output_and_artifacts(capsys, tmp_path):
    """The CLI's JSON and progress, on a student of one's own (the built-ins' exports are
    checked in test_export.py; the output path is the same for every model)."""
    source, spec = tmp_path / "own.py", tmp_path / "own.json"
    source.write_text(_OWN_MODEL)
    spec.write_text(json.dumps({"name": "own", "resolution": [32, 48], "config": {"width": 4}}))
    out_dir = tmp_path / "out"
    code, out, err = run_cli(capsys, "export", "--model", f"{source}:build", "--config",
                             str(spec), "--format", "tflite", "--out", str(out_dir), "--json")
    assert code == 0, err
    result = json.loads(out)  # stdout holds only the JSON document
    assert result["model"] == "own" and result["resolution"] == [32, 48]
    assert [a["format"] for a in result["artifacts"]] == ["tflite"]
    assert all(c["passed"] for c in result["verification"]["results"])
    assert (out_dir / "own.tflite").is_file() and (out_dir / "own.manifest.json").is_file()
    assert "[1/" in err  # progress goes to stderr
    assert not list(out_dir.glob(".mobdistill-export-*"))


@pytest.mark.parametrize("argv, message", [
    (["--model", "resnet"], "unknown model 'resnet'"),
    (["--model", "deeplab", "--resolution", "250x500"], "divisible by 16"),
    (["--model", "deeplab", "--resolution", "big"], "bad resolution"),
    (["--model", "deeplab", "--tiny", "--format", "tflite,coreml"], "--format"),
    (["--model", "deeplab", "--tiny", "--no-aspp"], "--no-aspp does not apply to deeplab"),
])
def test_usage_errors_exit_2_with_one_line(capsys, tmp_path, argv, message):
    code, out, err = run_cli(capsys, "export", *argv, "--out", str(tmp_path / "out"))
    assert code == 2
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_unwritable_out(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, _, err = run_cli(capsys, "export", "--model", "jitnet", "--tiny",
                           "--out", str(blocker / "sub"))
    assert code == 2 and "cannot write to --out" in err


def _tiny_state(name: str) -> dict[str, torch.Tensor]:
    entry = registry.get(name)
    return entry.build(registry.configure(entry, tiny=True)).state_dict()


def test_mismatched_checkpoint_lists_keys(capsys, tmp_path):
    state = _tiny_state("jitnet")
    first, second, third = list(state)[:3]
    del state[first]
    state["extra.weight"] = torch.zeros(1)
    state[third] = torch.zeros(3, 3)
    path = tmp_path / "bad.pt"
    torch.save({"state_dict": state}, path)
    code, _, err = run_cli(capsys, "export", "--model", "jitnet", "--tiny",
                           "--checkpoint", str(path), "--out", str(tmp_path / "out"))
    assert code == 2
    assert f"1 missing key(s): {first}" in err
    assert "1 unexpected key(s): extra.weight" in err
    assert f"1 mis-shaped key(s): {third}" in err
    assert not (tmp_path / "out").exists()


def test_unreadable_checkpoint(capsys, tmp_path):
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"\x00not a checkpoint")
    code, _, err = run_cli(capsys, "export", "--model", "jitnet", "--tiny",
                           "--checkpoint", str(path), "--out", str(tmp_path / "out"))
    assert code == 2 and "cannot read checkpoint" in err
    code, _, err = run_cli(capsys, "export", "--model", "jitnet", "--tiny",
                           "--checkpoint", str(tmp_path / "missing.pt"), "--out", str(tmp_path))
    assert code == 2 and "not found" in err


class _TwoConvs(torch.nn.Module):
    """A small student of one's own: the publish path is the same for every model."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                        torch.nn.Conv2d(8, 2, 1))

    def forward(self, frame: torch.Tensor) -> torch.Tensor:
        return self.body(frame / 255.0)


def test_failed_verification_keeps_previous_export(tmp_path):
    torch.manual_seed(0)
    entry = registry.custom_entry(_TwoConvs(), name="twoconvs", resolution=(32, 48))
    export_model(entry, out_dir=tmp_path, formats=("tflite",))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert {"twoconvs.tflite", "twoconvs.manifest.json"} <= set(before)
    with pytest.raises(VerifyError, match="nothing was written"):
        export_model(entry, out_dir=tmp_path, formats=("tflite",),
                     tolerance=Tolerance(rel_max_abs=0.0))
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
