"""`mobdistill doctor`: one report about a device that a user can attach to a bug.

Device identity (model, ABI, Android version, SoC), CPU governors and frequencies, thermal zones,
whether the harness app is installed, and, given a model: the engine and runtime versions, which
delegates load (the engine reports the one that ran; a request can fall back), and a 10-frame
profile with each runner (engine binary, harness app). Every probe that fails is recorded with
its error instead of ending the report.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from mobdistill.errors import MobdistillError
from mobdistill.runtime.app_runner import AppTarget, HarnessApp, Runner, run_benchmark
from mobdistill.runtime.device import Device
from mobdistill.runtime.engine import Delegate, EngineOptions, ProfileResult, run_engine

log = logging.getLogger(__name__)

PROFILE_FRAMES = 10
_SPLIT = "@@doctor@@"
_SYSFS_SCRIPT = (
    "for c in /sys/devices/system/cpu/cpu[0-9]*; do [ -d \"$c/cpufreq\" ] || continue; "
    "echo \"${c##*/} $(cat $c/cpufreq/scaling_governor 2>/dev/null || echo ?) "
    "$(cat $c/cpufreq/scaling_cur_freq 2>/dev/null || echo ?) "
    "$(cat $c/cpufreq/cpuinfo_max_freq 2>/dev/null || echo ?)\"; done; "
    f"echo {_SPLIT}; "
    "for z in /sys/class/thermal/thermal_zone*; do [ -r \"$z/temp\" ] || continue; "
    "echo \"$(cat $z/type 2>/dev/null || echo ${z##*/}) $(cat $z/temp 2>/dev/null)\"; done; true"
)


def read_cpu_and_thermal(device: Device) -> tuple[dict[str, Any], dict[str, float]]:
    """({cpuN: {governor, cur_khz, max_khz}}, {zone type: degrees C}) from sysfs."""
    done = device.run(["sh", "-c", _SYSFS_SCRIPT], timeout_s=30)
    cpus_text, _, zones_text = done.stdout.partition(_SPLIT)
    cpus: dict[str, Any] = {}
    for line in cpus_text.split("\n"):
        parts = line.split()
        if len(parts) == 4:
            cpus[parts[0]] = {"governor": parts[1], "cur_khz": _int(parts[2]),
                              "max_khz": _int(parts[3])}
    zones: dict[str, float] = {}
    for line in zones_text.split("\n"):
        name, _, value = line.strip().rpartition(" ")
        if name and value.lstrip("-").isdigit():
            millidegrees = int(value)  # most zones report m°C; a few report °C
            zones[name] = millidegrees / 1000.0 if abs(millidegrees) > 1000 else float(millidegrees)
    return cpus, zones


def _int(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def _profile_entry(result: ProfileResult) -> dict[str, Any]:
    invoke = result.summary.get("invoke", {})
    return {"frames": len(result.measured_invoke_us()),
            "p50_ms": round(invoke.get("p50_us", 0) / 1000.0, 3),
            "p90_ms": round(invoke.get("p90_us", 0) / 1000.0, 3),
            "delegate_used": result.summary.get("delegate_used"),
            "engine_version": result.summary.get("engine_version"),
            "runtime_version": result.summary.get("runtime_version")}


def doctor(device: Device, *, manifest: Path | None = None, apk: Path | None = None,
           options: EngineOptions | None = None, out_dir: Path | None = None) -> dict[str, Any]:
    """The report as a JSON-ready dict (see the module docstring)."""
    options = options or EngineOptions()
    info = device.describe()
    report: dict[str, Any] = {"schema": "mobdistill.doctor", "device": info, "notes": []}
    cpus, zones = read_cpu_and_thermal(device)
    report["cpu"], report["thermal_c"] = cpus, zones
    is_phone = info.get("kind") == "adb"
    app = HarnessApp(device) if is_phone else None
    report["app"] = _app_state(app)
    if manifest is None:
        report["notes"].append("pass --artifact MANIFEST (e.g. a tiny export: `mobdistill export "
                               "--model deeplab --tiny`) for versions, delegates and profiles")
        return report
    work = Path(out_dir or tempfile.mkdtemp(prefix="mobdistill-doctor-"))
    quick = replace(options, num_runs=1, warmup_runs=0)
    report["delegates"] = {}
    for delegate in Delegate:
        try:
            result = run_engine(device, manifest, replace(quick, delegate=delegate),
                                out_dir=work / f"delegate-{delegate.value}")
            report["delegates"][delegate.value] = {
                "loads": result.summary.get("delegate_used") == delegate.value,
                "used": result.summary.get("delegate_used"),
                "warnings": result.summary.get("warnings", [])}
        except MobdistillError as err:
            report["delegates"][delegate.value] = {"loads": False, "error": str(err)}
    profile_options = replace(options, num_runs=PROFILE_FRAMES, warmup_runs=1)
    report["profiles"] = {}
    runners = [Runner.ENGINE] + ([Runner.APP] if is_phone else [])
    for runner in runners:
        try:
            target = AppTarget(device, apk) if runner is Runner.APP else device
            result = run_benchmark(target, manifest, profile_options,
                                   out_dir=work / f"profile-{runner.value}")
            report["profiles"][runner.value] = _profile_entry(result)
        except MobdistillError as err:
            report["profiles"][runner.value] = {"error": str(err)}
    engine = report["profiles"].get("engine", {})
    report["versions"] = {"engine": engine.get("engine_version"),
                          "runtime": engine.get("runtime_version")}
    if app is not None:
        report["app"] = _app_state(app)  # after a possible install from --apk
    return report


def _app_state(app: HarnessApp | None) -> dict[str, Any]:
    if app is None:
        return {"installed": None, "note": "the harness app runs on Android devices only"}
    try:
        installed = app.installed()
    except MobdistillError as err:
        return {"installed": None, "error": str(err)}
    if installed is None:
        return {"installed": False, "package": app.package}
    return {"installed": True, "package": app.package, "version_code": installed.version_code,
            "debuggable": installed.debuggable, "apk": installed.apk_path}


def format_report(report: dict[str, Any]) -> str:
    """The report as text, one fact per line."""
    info = report["device"]
    name = " ".join(filter(None, (info.get("manufacturer"), info.get("model"))))
    lines = [f"device    {info.get('serial')}: {name}",
             f"os        {info.get('os')} (sdk {info.get('sdk', '-')})",
             f"abi       {info.get('abi')} ({info.get('abilist', '') or '-'})",
             f"soc       {info.get('soc', '-')}"]
    governors = sorted({c["governor"] for c in report["cpu"].values()})
    lines.append(f"cpu       {len(report['cpu'])} with cpufreq; governors "
                 f"{', '.join(governors) or 'unreadable'}")
    hottest = max(report["thermal_c"].items(), key=lambda kv: kv[1], default=None)
    lines.append(f"thermal   {len(report['thermal_c'])} zones" +
                 (f"; hottest {hottest[0]} {hottest[1]:.1f} C" if hottest else ""))
    app = report["app"]
    lines.append("app       " + ("installed, versionCode "
                                 f"{app.get('version_code')}, debuggable {app.get('debuggable')}"
                                 if app.get("installed") else
                                 app.get("note") or app.get("error") or "not installed"))
    if "versions" in report:
        lines.append(f"engine    {report['versions']['engine']}, runtime "
                     f"{report['versions']['runtime']}")
    for name, entry in report.get("delegates", {}).items():
        lines.append(f"delegate  {name}: " + ("loads" if entry.get("loads") else
                                             f"falls back to {entry['used']}" if entry.get("used")
                                             else f"fails: {entry.get('error', '')[:160]}"))
    for name, entry in report.get("profiles", {}).items():
        lines.append(f"profile   {name}: " + (
            f"{entry['frames']} frames, p50 {entry['p50_ms']} ms, p90 {entry['p90_ms']} ms, "
            f"{entry['delegate_used']}" if "error" not in entry else
            f"failed: {entry['error'][:300]}"))
    lines += [f"note      {note}" for note in report["notes"]]
    return "\n".join(lines)
