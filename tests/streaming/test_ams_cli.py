"""`mobdistill update verify`: argument parsing and exit codes (library call mocked)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mobdistill.cli import main
from mobdistill.runtime import update_verify as native


@pytest.mark.parametrize("status, code", [("ok", 0), ("bad_hmac", 1)])
def test_update_verify(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, status: str,
                       code: int) -> None:
    seen = {}

    def fake(manifest, updates, **kw):
        seen.update(manifest=manifest, updates=updates, **kw)
        return native.VerifyUpdateResult(str(manifest), kw["engine"], "00", [
            native.PacketVerdict(str(u), status, "", 1, 1, 3) for u in updates])

    monkeypatch.setattr(native, "verify_update", fake)
    key = tmp_path / "key"
    key.write_bytes(b"secret")
    argv = ["update", "verify", "--artifact", "m.manifest.json", "--update", "a.mdup",
            "--update", "b.mdup", "--hmac-key-file", str(key), "--engine", "python", "--json"]
    assert main(argv) == code
    assert seen["updates"] == [Path("a.mdup"), Path("b.mdup")]
    assert seen["hmac_key"] == b"secret" and seen["engine"] == "python"


def test_update_verify_python_engine_on_vectors(tmp_path: Path, vectors_dir: Path) -> None:
    from mobdistill.runtime.update_verify import _python_verdict
    from mobdistill.contract.wire import TensorLocation

    table = {2: TensorLocation(64, 400), 5: TensorLocation(512, 1200), 8: TensorLocation(1744, 64)}
    base = (vectors_dir / "base.bin").read_bytes()
    import hashlib
    verdict = _python_verdict(vectors_dir / "ok_f16_delta.mdup", base, table,
                              hashlib.sha256(base).digest(), None, 0)
    assert verdict.status == "ok" and verdict.values == 40
