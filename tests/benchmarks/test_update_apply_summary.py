"""The swap-stall benchmark's summary: updating vs steady frames per update, and the bootstrap
interval of the p99 ratio over updates."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "update_apply.py"


@pytest.fixture
def module(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPT.parent))  # the script imports its sibling provenance
    spec = importlib.util.spec_from_file_location("update_apply", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _session(stall_ms: float, seed: int) -> dict:
    """40 frames after 2 warm-up frames, an update arriving every 10 and swapping 2 frames later;
    updating frames cost ``stall_ms`` more."""
    rng = np.random.default_rng(seed)
    records = [{"received_frame": r, "swapped_frame": r + 2} for r in (2, 12, 22, 32)]
    updating = {f for r in records for f in range(r["received_frame"], r["swapped_frame"] + 1)}
    frames = [{"frame": k, "invoke_ms": 10 + rng.normal(0, 0.5) + stall_ms * (k in updating)}
              for k in range(42)]
    return {"frames": frames, "records": records, "warmup_frames": 2}


def test_blocks_partition_the_frames_after_warmup(module) -> None:
    blocks = module.update_blocks([_session(5.0, 0), _session(5.0, 1)], "invoke_ms")
    assert len(blocks) == 8
    assert [len(up) for up, _ in blocks] == [3] * 8
    assert sum(len(up) + len(st) for up, st in blocks) == 2 * 40


def test_interval_separates_a_stall_from_none(module) -> None:
    stalled = [_session(5.0, s) for s in range(5)]
    calm = [_session(0.0, s) for s in range(5)]
    lo, hi = module.p99_ratio_ci(module.update_blocks(stalled, "invoke_ms"))
    assert 1.3 < lo < hi < 1.7  # (15 + noise) / (10 + noise)
    lo, hi = module.p99_ratio_ci(module.update_blocks(calm, "invoke_ms"))
    assert lo < 1.0 < hi < 1.2
