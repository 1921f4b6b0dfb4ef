"""`mobdistill update verify` end to end: a real tiny export, real packets, the real C++ tool
(built on demand, as after `make demo`) and the Python reference, with key and device id."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mobdistill.cli import main
from mobdistill.contract import wire
from mobdistill.contract.wire import TensorPatch, ValueCoding


@pytest.fixture(scope="module")
def artifact(tiny_export) -> tuple[Path, dict]:
    export = tiny_export("deeplab", formats=("tflite",))
    return export.manifest_path, json.loads(export.manifest_path.read_text())


def _packets(tmp_path: Path, manifest: dict, key: bytes, device: bytes) -> dict[str, Path]:
    base = bytes.fromhex(manifest["artifacts"][0]["sha256"])
    entry = max(manifest["parameter_map"]["entries"], key=lambda e: e["buffer_size"])
    numel = entry["buffer_size"] // 4
    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(numel, numel // 10, replace=False))
    patch = TensorPatch(entry["tensor_index"], numel, idx, rng.normal(0, 0.1, idx.size))

    def write(name: str, **kw) -> Path:
        kw = {"device_id": device, "hmac_key": key, **kw}
        path = tmp_path / f"{name}.mdup"
        path.write_bytes(wire.encode_update([patch], base_sha256=base, sequence=1,
                                            value_coding=ValueCoding.F16, **kw))
        return path

    return {"ok": write("ok"), "bad_hmac": write("forged", hmac_key=b"another key"),
            "wrong_device": write("other", device_id=bytes(16))}


@pytest.mark.parametrize("engine", ["cpp", "python"])
def test_update_verify_end_to_end(artifact, tmp_path: Path, engine: str,
                                  capsys: pytest.CaptureFixture) -> None:
    manifest_path, manifest = artifact
    key, device = wire.new_key(), wire.new_device_id()
    packets = _packets(tmp_path, manifest, key, device)
    key_file = tmp_path / "device.key"
    key_file.write_bytes(key)
    argv = ["update", "verify", "--artifact", str(manifest_path), "--device-id", device.hex(),
            "--engine", engine, "--json"]
    assert main(argv + ["--hmac-key-file", str(key_file), "--update", str(packets["ok"])]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["packets"][0]["status"] == "ok" and result["packets"][0]["values"] > 0

    rejected = [packets["bad_hmac"], packets["wrong_device"]]
    assert main(argv + ["--hmac-key-file", str(key_file)]
                + [a for p in rejected for a in ("--update", str(p))]) == 1
    statuses = [p["status"] for p in json.loads(capsys.readouterr().out)["packets"]]
    assert statuses == ["bad_hmac", "wrong_device"]

    assert main(argv + ["--update", str(packets["ok"])]) == 1  # no key: refused by default
    assert json.loads(capsys.readouterr().out)["packets"][0]["status"] == "bad_hmac"


def test_update_verify_insecure_is_explicit(artifact, tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    manifest_path, manifest = artifact
    device = wire.new_device_id()
    unsigned = _packets(tmp_path, manifest, b"", device)["ok"]  # hmac_key=b"": no HMAC
    argv = ["update", "verify", "--artifact", str(manifest_path), "--device-id", device.hex(),
            "--update", str(unsigned), "--json"]
    assert main(argv) == 1
    assert main(argv + ["--insecure"]) == 0
    captured = capsys.readouterr()
    assert "WARNING" in captured.err and '"status": "ok"' in captured.out
    with pytest.raises(SystemExit):
        main(argv + ["--insecure", "--hmac-key-file", str(tmp_path / "k")])
    assert main(argv[:5] + ["abcd"] + argv[6:]) == 2  # device id must be 16 bytes
