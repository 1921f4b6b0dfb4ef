"""--record_sensors: per-frame CPU frequencies and thermal-zone temperatures from a sysfs tree."""

from __future__ import annotations

import json
from pathlib import Path

from mobdistill.runtime.engine import run_engine


def _fake_sysfs(root: Path) -> Path:
    """cpu0 and cpu1 with frequencies, two thermal zones with types, plus things to skip."""
    files = {
        "devices/system/cpu/cpu0/cpufreq/scaling_cur_freq": "1804800\n",
        "devices/system/cpu/cpu1/cpufreq/scaling_cur_freq": "998400\n",
        "devices/system/cpu/cpufreq/policy0/scaling_cur_freq": "1\n",  # not a cpuN
        "class/thermal/thermal_zone0/temp": "41500\n",
        "class/thermal/thermal_zone0/type": "cpu-0-0\n",
        "class/thermal/thermal_zone1/temp": "37250\n",
        "class/thermal/thermal_zone1/type": "battery\n",
        "class/thermal/thermal_zone2/temp": "not a number\n",  # unreadable: left out
        "class/thermal/thermal_zone2/type": "broken\n",
    }
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def _records(result) -> list[dict]:
    lines = Path(result.jsonl_path).read_text().splitlines()
    return [r for r in map(json.loads, lines) if "event" not in r]


def test_records_carry_frequencies_and_temperatures(engine_binary, stateless_manifest, device,
                                                    tmp_path):
    tree = _fake_sysfs(tmp_path / "sys")
    result = run_engine(device, stateless_manifest, warmup_runs=1, num_runs=3, timeout_s=60,
                        extra_flags=("--record_sensors=true", f"--sysfs_root={tree}"))
    assert len(result.frames) == 4
    for f in result.frames:
        assert f.cpu_freq_khz == [1804800, 998400]
        assert f.thermal_c == {"cpu-0-0": 41.5, "battery": 37.25}
        assert f.sensors_us is not None and f.sensors_us >= 0
    # zone order is kept in the raw line
    assert list(_records(result)[0]["thermal_c"]) == ["cpu-0-0", "battery"]
    s = result.summary["sensors"]
    assert s["requested"] and s["recorded"] and s["sysfs_root"] == str(tree)
    assert s["cpus"] == [0, 1]
    assert s["thermal_zones"] == [
        {"zone": "thermal_zone0", "type": "cpu-0-0", "key": "cpu-0-0"},
        {"zone": "thermal_zone1", "type": "battery", "key": "battery"}]
    assert s["read"]["count"] == 4  # every run, warmup included
    # invoke timing is unaffected in shape
    assert result.summary["invoke"]["count"] == 3


def test_missing_tree_gives_plain_records(engine_binary, stateless_manifest, device, tmp_path):
    result = run_engine(device, stateless_manifest, warmup_runs=0, num_runs=2, timeout_s=60,
                        extra_flags=("--record_sensors=true",
                                     f"--sysfs_root={tmp_path / 'no-such-sys'}"))
    assert len(result.frames) == 2
    for record in _records(result):
        assert not {"cpu_freq_khz", "thermal_c", "sensors_us"} & set(record)
    assert all(f.cpu_freq_khz is None and f.thermal_c is None for f in result.frames)
    s = result.summary["sensors"]
    assert s["requested"] and not s["recorded"]
    assert s["cpus"] == [] and s["thermal_zones"] == []


def test_off_by_default_on_hosts(engine_binary, stateless_manifest, device, tmp_path):
    tree = _fake_sysfs(tmp_path / "sys")
    result = run_engine(device, stateless_manifest, warmup_runs=0, num_runs=1, timeout_s=60,
                        extra_flags=(f"--sysfs_root={tree}",))
    assert "cpu_freq_khz" not in _records(result)[0]
    assert result.summary["sensors"] == {
        "requested": False, "recorded": False, "sysfs_root": None, "cpus": [],
        "thermal_zones": [], "read": result.summary["sensors"]["read"]}
