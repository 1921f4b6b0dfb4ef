"""`--runner app`, `doctor` and the harness's extras, against the ADB peer with the Android
framework stand-in (tests/support/android_framework.py).

Stand-ins: pm/am/run-as/logcat and the APK (a zip with a plain-XML manifest). Real: the ADB
protocol, the host tooling, and the benchmark: the stand-in APK carries the host build of the
engine core (libmobdistill_facade_host.so) and liblitert-lm.so, and the "app process" calls
`md_engine_benchmark_main` with the flags BenchmarkRequest.kt makes of the extras.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from adb_peer import AdbPeer
from profile_checks import check_runner_labels

from mobdistill.cli import main
from mobdistill.errors import DeviceError
from mobdistill.runtime.adb_device import AdbDevice, AdbOptions, open_shell_device
from mobdistill.runtime.app_runner import (
    PACKAGE,
    HarnessApp,
    StartMode,
    engine_extras,
    run_app,
)
from mobdistill.runtime.engine import Delegate, EngineOptions, EngineRunError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))
import android_framework  # noqa: E402

FILES = f"/data/user/0/{PACKAGE}/files"


@pytest.fixture(scope="module")
def harness_apk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stand-in harness APK with the real engine core and TFLite runtime for x86_64."""
    from mobdistill.runtime.engine import find_engine, runtime_library

    facade = find_engine().parent / android_framework.ENGINE_LIB
    return android_framework.build_apk(
        tmp_path_factory.mktemp("apk") / "harness-debug.apk",
        libs={f"x86_64/{android_framework.ENGINE_LIB}": facade,
              f"x86_64/{android_framework.RUNTIME_LIB}": runtime_library()})


@pytest.fixture(scope="module")
def phone(tmp_path_factory: pytest.TempPathFactory, adbkey: Path) -> Iterator[AdbPeer]:
    """One peer for the module: the 130 MB APK is pushed and installed once."""
    public = (adbkey.parent / "adbkey.pub").read_bytes()
    with AdbPeer(tmp_path_factory.mktemp("phone"), auth="keys", trusted_keys=(public,),
                 io_timeout_s=10) as peer:
        yield peer


@pytest.fixture
def model(stateless_manifest: Path) -> Path:
    return stateless_manifest


def _app_files(peer: AdbPeer) -> Path:
    path = peer.host_path(FILES)
    assert path is not None
    return path


def _logcat(peer: AdbPeer) -> str:
    path = peer.root / "framework" / "logcat.jsonl"
    return path.read_text() if path.is_file() else ""


def test_profile_cli_runner_app(phone: AdbPeer, home: Path, harness_apk: Path, model: Path,
                                tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "profile"
    code = main(["profile", "--artifact", str(model), "--device", phone.serial,
                 "--runner", "app", "--apk", str(harness_apk), "--num_runs", "3",
                 "--num_threads", "2", "--out", str(out), "--json"])
    assert code == 0, capsys.readouterr().err
    report = json.loads(capsys.readouterr().out)
    (per_runtime,) = report["results"][phone.serial].values()
    entry = per_runtime[next(iter(per_runtime))]
    assert entry["runner"] == "app" and entry["num_runs"] == 3 and entry["num_threads"] == 2
    assert entry["delegate_used"] == "xnnpack" and entry["invoke_ms"]["p50_ms"] > 0
    assert report["devices"][phone.serial]["runner"] == "app"
    rows = (out / "frames.csv").read_text().splitlines()
    assert [r.split(",")[2] for r in rows[1:]] == ["warmup", "measure", "measure", "measure"]
    check_runner_labels(out, "app")
    # the engine flags went through as extras, unrenamed, and the app's outputs were cleaned
    assert "--num_threads=2" in _logcat(phone) and "--num_runs=3" in _logcat(phone)
    files = _app_files(phone)
    assert list(files.glob("models/*/tiny_stateless.tflite"))
    assert not list(files.glob("run-*")), "fetched outputs stay behind in the app"
    staging = phone.host_path("/data/local/tmp/mobdistill/app-staging")
    assert staging is not None and not list(staging.iterdir())


def _packets(manifest_path: Path, key: bytes, device_id: bytes) -> list[bytes]:
    """Cumulative packets 1..3 for the tiny DeepLab, each moving 5 % of its biggest tensor."""
    import hashlib

    import numpy as np

    from mobdistill.contract import wire

    manifest = json.loads(manifest_path.read_text())
    tflite = manifest_path.parent / manifest["artifacts"][0]["file"]
    entry = max(manifest["parameter_map"]["entries"], key=lambda e: e["buffer_size"])
    numel = entry["buffer_size"] // 4
    rng = np.random.default_rng(0)
    index = np.sort(rng.choice(numel, numel // 20, replace=False))
    return [wire.encode_update([wire.TensorPatch(entry["tensor_index"], numel, index,
                                                 rng.normal(0, 0.5, index.size))],
                               base_sha256=hashlib.sha256(tflite.read_bytes()).digest(),
                               sequence=sequence, device_id=device_id, hmac_key=key)
            for sequence in (1, 2, 3)]


def test_update_schedule_is_delivered_into_the_app(phone: AdbPeer, options: AdbOptions,
                                                   harness_apk: Path, tiny_export,
                                                   tmp_path: Path) -> None:
    """Packet 1 waits in the folder before the first frame, packet 2 is renamed into place once
    runs 0-4 are done, packet 3 (after the last run) never is; the key and the folder go. With
    --update_blocking each packet is swapped in before the run after it arrived, however slowly
    this host builds it."""
    import tiny_models

    manifest = tiny_export("deeplab", formats=("tflite",)).manifest_path
    key, device_id = b"k" * 32, bytes(range(16))
    schedule = tmp_path / "schedule.jsonl"
    lines = []
    for sequence, (frame, packet) in enumerate(zip((0, 5, 50), _packets(manifest, key,
                                                                         device_id)), 1):
        (tmp_path / f"p{sequence}.mdup").write_bytes(packet)
        lines.append(json.dumps({"frame": frame, "packet": f"p{sequence}.mdup",
                                 "sequence": sequence}))
    schedule.write_text("\n".join(lines) + "\n")
    (tmp_path / "key").write_bytes(key)
    height, width = json.loads(manifest.read_text())["model"]["resolution"]
    frames = tiny_models.random_frames(tmp_path / "frames.rgb", 10, (height, width))
    run = EngineOptions(num_runs=10, warmup_runs=0, run_delay_s=0.03, timeout_s=120,
                        update_schedule=schedule, update_key_file=tmp_path / "key",
                        update_device_id=device_id.hex(), update_blocking=True)
    # long enough for `pm install` of the 130 MB APK when this test is the module's first
    patient = replace(options, transport_timeout_s=60.0, read_timeout_s=120.0)
    with AdbDevice.open(phone.serial, options=patient) as device:
        result = run_app(device, manifest, run, frames_path=frames, out_dir=tmp_path / "run",
                         output_masks=True, apk=harness_apk)
    assert result.runner == "app"
    first, second = result.update_events
    assert (first.sequence, first.source, first.status) == (1, "dir", "applied")
    assert (first.received_frame, first.swapped_frame) == (0, 0)
    assert first.packet == str(tmp_path / "p1.mdup")
    assert (second.sequence, second.status) == (2, "applied"), second.message
    assert 5 <= second.received_frame <= second.swapped_frame <= 9
    versions = [f.model_version for f in result.frames]
    assert versions == [1] * second.swapped_frame + [2] * (10 - second.swapped_frame)
    assert Path(result.output_masks_path).stat().st_size == 10 * height * width
    files = _app_files(phone)
    assert not list(files.glob("updates/*")) and not list(files.glob("keys/*"))


def test_live_run_in_app_reports_the_apps_error_and_removes_the_key(
        phone: AdbPeer, options: AdbOptions, harness_apk: Path, model: Path,
        tmp_path: Path) -> None:
    """The live mode itself is Kotlin (unverified here): the stand-in app answers with an error
    file, which comes back as the error, and the pushed key and frames do not stay behind."""
    from mobdistill.errors import EngineError
    from mobdistill.runtime.app_live import LiveServer, run_live_app

    key = tmp_path / "phone.key"
    key.write_bytes(b"k" * 32)
    frames = tmp_path / "frames.rgb"
    frames.write_bytes(bytes(16 * 24 * 3 * 2))
    server = LiveServer("127.0.0.1:7447", "00" * 16, key)
    patient = replace(options, transport_timeout_s=60.0, read_timeout_s=120.0)
    with AdbDevice.open(phone.serial, options=patient) as device:
        with pytest.raises(EngineError, match="live run .* failed: .*runs no Kotlin"):
            run_live_app(device, model, frames, server, EngineOptions(run_delay_s=0.05,
                                                                      timeout_s=60),
                         out_dir=tmp_path / "out", apk=harness_apk)
    logged = _logcat(phone)
    assert "runs no Kotlin" in logged
    files = _app_files(phone)
    assert not list(files.glob("keys/*")) and not list(files.glob("live-*.rgb"))


# The live tests' tiny starting point (tests/support/live_harness.py TINY, made once per run by
# the `live_student` fixture), streamed in real time: packets land at their frames.
STREAM_TINY = ["--video", "carphone_pristine.mp4", "--max-frames", "40", "--resolution",
               "64x128", "--tiny", "--pretrain-iterations", "2", "--iterations", "5",
               "--batch-size", "2", "--lr", "1e-2", "--t-update", "0.3", "--server-speedup",
               "1000", "--realtime"]


@pytest.mark.slow  # the server side trains the student (seconds per update on 2 cores)
def test_stream_cli_runner_app(phone: AdbPeer, adbkey: Path, harness_apk: Path, live_student,
                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    """AMS packets go into the app's update folder while its engine runs; its update records,
    masks and frames come back as the same stream report as the engine runner's."""
    from mobdistill.experiments import pretrain

    monkeypatch.setattr(pretrain, "cache_root", lambda: live_student[0])
    out = tmp_path / "stream"
    capsys.readouterr()
    code = main(["stream", "--scheme", "ams", *STREAM_TINY, "--device", phone.serial,
                 "--adb-key", str(adbkey), "--runner", "app", "--apk", str(harness_apk),
                 "--out", str(out), "--json"])
    assert code == 0, capsys.readouterr().err
    result = json.loads(capsys.readouterr().out)
    assert result["frames"] == 40 and result["latency"]["all"]["count"] == 40
    applied = [u for u in result["updates"] if (u["engine"] or {}).get("status") == "applied"]
    assert len(applied) >= 2 and result["downlink"]["packets_applied"] == len(applied)
    for update in applied:  # taken from the folder no earlier than the run it was due
        engine = update["engine"]
        assert engine["received_frame"] >= update["arrival_frame"] > 0
        assert engine["swapped_frame"] >= engine["received_frame"]
    events = [json.loads(line) for line in (out / "engine" / "engine.jsonl").read_text()
              .splitlines() if '"event"' in line]
    assert {e["source"] for e in events} == {"dir"}
    versions = [int(r.split(",")[3]) for r in (out / "frames.csv").read_text().splitlines()[1:]]
    assert versions[0] == 0 and versions[-1] == len(applied), "the masks are the new models'"
    logged = _logcat(phone)
    assert "--update_dir=" in logged and "--update_key_file=" in logged
    assert "--update_device_id=" in logged and "--insecure_updates" not in logged
    files = _app_files(phone)
    assert not list(files.glob("updates/*")) and not list(files.glob("keys/*")), \
        "the run's update folder and key stay in the app"


@pytest.mark.slow
def test_sweep_cli_runner_app(phone: AdbPeer, home: Path, harness_apk: Path, model: Path,
                              stateful_manifest: Path, tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    """Each queue length's model is pushed into the app (the session's two tiny models stand in
    for two queue lengths' exports)."""
    import mobdistill.runtime.sweep as sweep_mod

    built = {1: model, 2: stateful_manifest}
    monkeypatch.setattr(sweep_mod, "export_if_needed",
                        lambda model, *, queue_length, **_: built[queue_length])
    capsys.readouterr()
    code = main(["sweep", "--model", "mobilevos", "--queue-lengths", "1-2", "--num_runs", "2",
                 "--device", phone.serial, "--runner", "app", "--apk", str(harness_apk),
                 "--out", str(tmp_path / "sweep"), "--json"])
    assert code == 0, capsys.readouterr().err
    result = json.loads(capsys.readouterr().out)
    assert result["runner"] == "app" and result["device"] == phone.serial
    assert [p["queue_length"] for p in result["points"]] == [1, 2]
    assert all(p["p50_ms"] > 0 for p in result["points"])
    models = _app_files(phone) / "models"
    pushed = {p.name for p in models.glob("*/*.tflite")}
    assert pushed >= {"tiny_stateless.tflite", "tiny_stateful.tflite"}


@pytest.mark.slow
def test_activity_start_and_polling(phone: AdbPeer, options: AdbOptions, harness_apk: Path,
                                    model: Path, tmp_path: Path) -> None:
    with AdbDevice.open(phone.serial, options=options) as device:
        result = run_app(device, model, EngineOptions(num_runs=2, timeout_s=120),
                         out_dir=tmp_path, apk=harness_apk, start=StartMode.ACTIVITY)
    assert [f.phase for f in result.frames] == ["warmup", "measure", "measure"]
    assert result.summary["frames"]["measure"] == 2


@pytest.mark.slow
def test_engine_error_in_the_app_is_reported(phone: AdbPeer, options: AdbOptions,
                                             harness_apk: Path, model: Path,
                                             tmp_path: Path) -> None:
    """A model the engine refuses (manifest sha256 does not match the graph) fails with the
    engine's message and the run's logcat lines."""
    broken = tmp_path / "broken"
    broken.mkdir()
    manifest = json.loads(model.read_text())
    for name in [a["file"] for a in manifest["artifacts"]]:
        (broken / name).write_bytes((model.parent / name).read_bytes()[:-8] + b"\0" * 8)
    (broken / model.name).write_text(json.dumps(manifest))
    with AdbDevice.open(phone.serial, options=options) as device:
        with pytest.raises(EngineRunError, match="(?s)sha256.*logcat of the run"):
            run_app(device, broken / model.name, EngineOptions(num_runs=1, timeout_s=60),
                    out_dir=tmp_path / "run", apk=harness_apk)


def _tiny_apk(tmp_path: Path, name: str, *, libs: dict[str, Path] | None = None,
              **kwargs) -> Path:
    return android_framework.build_apk(tmp_path / name / "harness-debug.apk", libs=libs,
                                       **kwargs)


@pytest.mark.slow
def test_install_update_skip_and_downgrade(peer: AdbPeer, device: AdbDevice,
                                           tmp_path: Path) -> None:
    app = HarnessApp(device)
    assert app.installed() is None
    v1 = _tiny_apk(tmp_path, "v1", version_code=1)
    assert app.ensure_installed(v1).version_code == 1
    base = peer.root / "data" / "app" / f"{PACKAGE}-1" / "base.apk"
    stamp = base.stat().st_mtime_ns
    assert app.ensure_installed(v1).version_code == 1
    assert base.stat().st_mtime_ns == stamp, "an unchanged APK is installed again"
    v2 = _tiny_apk(tmp_path, "v2", version_code=2)
    installed = app.ensure_installed(v2)
    assert installed.version_code == 2 and installed.debuggable
    with pytest.raises(DeviceError, match="older than the harness.*adb uninstall"):
        app.ensure_installed(v1)
    assert app.installed().version_code == 2


def test_not_installed_and_no_apk(device: AdbDevice, model: Path, tmp_path: Path) -> None:
    with pytest.raises(DeviceError, match="not installed.*no APK.*assembleDebug.*--apk"):
        run_app(device, model, EngineOptions(num_runs=1), out_dir=tmp_path, apk=None)


def test_release_build_says_run_as_needs_debuggable(peer: AdbPeer, device: AdbDevice,
                                                    model: Path, tmp_path: Path) -> None:
    release = _tiny_apk(tmp_path, "release", debuggable=False)
    with pytest.raises(DeviceError, match="release build.*debuggable.*installDebug"):
        run_app(device, model, EngineOptions(num_runs=1), out_dir=tmp_path, apk=release)
    assert not (peer.root / "data" / "user" / "0" / PACKAGE / "files" / "models").exists()


def test_abi_mismatch_is_refused_before_install(tmp_path: Path, adbkey: Path,
                                                options: AdbOptions) -> None:
    lib = tmp_path / "libx.so"
    lib.write_bytes(b"\x7fELF")
    arm_only = _tiny_apk(tmp_path, "arm", libs={"arm64-v8a/libmobdistill_jni.so": lib})
    public = (adbkey.parent / "adbkey.pub").read_bytes()
    with AdbPeer(tmp_path / "x86", auth="keys", trusted_keys=(public,),
                 props={"ro.product.cpu.abilist": "x86_64"}) as x86_phone:
        with AdbDevice.open(x86_phone.serial, options=options) as device:
            app = HarnessApp(device)
            with pytest.raises(DeviceError, match="arm64-v8a only.*runs x86_64"):
                app.ensure_installed(arm_only)
            assert app.installed() is None
            # the phone's own package manager refuses it too, with its own words
            staged = device.stage(arm_only, "arm.apk")
            done = device.run(["pm", "install", "-r", staged])
            assert "INSTALL_FAILED_NO_MATCHING_ABIS" in done.stdout


@pytest.mark.parametrize("start", [StartMode.INSTRUMENT,
                                   pytest.param(StartMode.ACTIVITY, marks=pytest.mark.slow)])
def test_app_crash_comes_back_with_logcat(device: AdbDevice, model: Path, tmp_path: Path,
                                          start: StartMode) -> None:
    """An APK without the engine library: the app dies loading it (UnsatisfiedLinkError)."""
    lib = tmp_path / "libother.so"
    lib.write_bytes(b"\x7fELF")
    broken = _tiny_apk(tmp_path, "nolib", libs={"x86_64/libother.so": lib})
    with pytest.raises(EngineRunError, match="(?s)(crashed|died).*UnsatisfiedLinkError"):
        run_app(device, model, EngineOptions(num_runs=1, timeout_s=30), out_dir=tmp_path,
                apk=broken, start=start)


@pytest.mark.slow
def test_doctor_json(phone: AdbPeer, home: Path, harness_apk: Path, model: Path,
                     tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["doctor", "--device", phone.serial, "--artifact", str(model), "--apk",
                 str(harness_apk), "--out", str(tmp_path), "--json"])
    assert code == 0, capsys.readouterr().err
    report = json.loads(capsys.readouterr().out)
    device = report["device"]
    assert (device["model"], device["abi"], device["os"], device["soc"]) == (
        "Peer Phone 1", "x86_64", "Android 14", "LB1000")
    assert report["app"]["installed"] is True and report["app"]["debuggable"] is True
    assert report["delegates"]["xnnpack"]["loads"] is True
    assert report["delegates"]["gpu"]["loads"] is False  # no GPU delegate on the host build
    assert report["versions"]["engine"] and report["versions"]["runtime"]
    for runner in ("engine", "app"):
        assert report["profiles"][runner]["frames"] == 10, report["profiles"][runner]
        assert report["profiles"][runner]["p50_ms"] > 0


def test_doctor_without_model_or_app(device: AdbDevice) -> None:
    from mobdistill.runtime.doctor import doctor, format_report

    report = doctor(device)
    assert report["app"] == {"installed": False, "package": PACKAGE}
    assert "delegates" not in report and "--artifact" in report["notes"][0]
    assert "not installed" in format_report(report)


def test_usb_access_denied_says_how_to_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    import usb1
    from adb_shell.transport.usb_transport import UsbTransport

    def denied(**_: object) -> None:
        raise usb1.USBErrorAccess()

    monkeypatch.setattr(UsbTransport, "find_adb", denied)
    with pytest.raises(DeviceError, match="no permission.*udev") as caught:
        open_shell_device("0123456789ABCDEF", AdbOptions())
    assert caught.value.state == "no permissions"


# -- the extras: what the tooling sends, as the app's Kotlin reads them ----------------------
def _tooling_extras() -> list[dict[str, str]]:
    """Extras exactly as run_app builds them, for a few option sets."""
    base = {"tag": "run-0a1b2c3d", "manifest": f"{FILES}/models/k/m.manifest.json",
            "graph": f"{FILES}/models/k/m.tflite"}
    return [
        {**base, **engine_extras(EngineOptions().to_flags())},
        {**base, "frames": f"{FILES}/run-0a1b2c3d.rgb", **engine_extras(EngineOptions(
            num_threads=4, num_runs=7, warmup_runs=0, delegate=Delegate.GPU, run_delay_s=0.04,
            record_sensors=True).to_flags())},
        {"model": "mobilevos", "queue": "4", "num_runs": "5"},
    ]


REFUSED = [{"threads": "4"}, {"frames": "100"}, {"jsonl": "/x"}, {"num-runs": "3"},
           {"tag": "../escape"}, {"queue": "four"}]


def test_extras_mirror_refuses_old_and_app_owned_names() -> None:
    for extras in REFUSED:
        with pytest.raises(ValueError):
            android_framework.benchmark_args(extras, FILES, "/lib/liblitert-lm.so")
    args, jsonl, _ = android_framework.benchmark_args(_tooling_extras()[0], FILES, "/r.so")
    assert "--num_threads=1" in args and "--use_xnnpack=true" in args
    assert jsonl == f"{FILES}/run-0a1b2c3d.jsonl" and "--random_input=true" in args


def test_kotlin_benchmark_request_matches(android_host) -> None:
    """BenchmarkRequest.kt (compiled by android/verify_host.sh) turns the tooling's extras into
    the same engine flags as the peer's mirror, and refuses the same extras with the same text."""
    cases = _tooling_extras() + REFUSED
    blocks = _kotlin_check(android_host, "benchmark", cases)
    for extras, block in zip(cases, blocks, strict=True):
        try:
            expected = android_framework.benchmark_args(extras, FILES, RUNTIME)[0]
        except ValueError as err:
            expected = [f"error: {err}"]
        assert block == expected, extras


RUNTIME = "/data/app/x/lib/x86_64/liblitert-lm.so"


def _kotlin_check(android_host, mode: str, cases: list[dict[str, str]]) -> list[list[str]]:
    """BenchmarkRequestCheckKt's answer per case: its lines (engine args, or a LiveRequest)."""
    argv = [mode, FILES, RUNTIME]
    for extras in cases:
        argv += ["//", *(f"{k}={v}" for k, v in extras.items())]
    done = android_host.run_check("BenchmarkRequestCheckKt", *argv)
    assert done.returncode == 0, done.stdout + done.stderr
    blocks = [b.strip().splitlines() for b in done.stdout.split("\n\n") if b.strip()]
    assert len(blocks) == len(cases), done.stdout
    return blocks


def test_kotlin_live_request_reads_what_the_tooling_sends(android_host) -> None:
    """LiveRequest.kt (the harness's live mode) reads the extras runtime/app_live.py sends as
    the run the tooling meant, and refuses extras the live loop would otherwise ignore."""
    from mobdistill.runtime.app_live import LiveServer, live_extras

    device_id = "00112233445566778899aabbccddeeff"
    keyed = live_extras("live-0a1b2c3d", f"{FILES}/models/k/m.manifest.json",
                        f"{FILES}/live-0a1b2c3d.rgb",
                        LiveServer("10.0.2.2:7447", device_id, Path("/host/phone.key")),
                        EngineOptions(num_threads=2, num_runs=90, run_delay_s=0.04),
                        f"{FILES}/keys/live-0a1b2c3d.key")
    insecure = live_extras("live-1", f"{FILES}/m.json", f"{FILES}/live-1.rgb",
                           LiveServer("[::1]:7447", device_id, None, tls=True),
                           EngineOptions(delegate=Delegate.CPU, num_runs=5, run_delay_s=0.5),
                           None)
    refused = [{**keyed, "warmup_runs": "1"}, {**keyed, "ams_server": "phone"},
               {k: v for k, v in keyed.items() if k != "frames"},
               {**keyed, "insecure_updates": "true"}, {**keyed, "update_device_id": "abc"}]
    blocks = _kotlin_check(android_host, "live", [keyed, insecure, *refused])
    out = f"{FILES}/live-0a1b2c3d"
    assert blocks[0] == [
        "server=10.0.2.2:7447 tls=false", f"manifest={FILES}/models/k/m.manifest.json",
        f"runtime_lib={RUNTIME}", f"frames={out}.rgb max_frames=90 interval_s=0.04",
        "threads=2 delegate=xnnpack", f"device_id={device_id}",
        f"key_file={FILES}/keys/live-0a1b2c3d.key insecure=false state_file=none",
        f"outputs={out}.live.jsonl {out}.masks {out}.live.json"]
    assert blocks[1][0] == "server=::1:7447 tls=true"
    assert blocks[1][3:5] == [f"frames={FILES}/live-1.rgb max_frames=5 interval_s=0.5",
                              "threads=1 delegate=cpu"]
    assert blocks[1][6] == "key_file=none insecure=true state_file=none"
    errors = [block[0] for block in blocks[2:]]
    assert all(e.startswith("error: ") for e in errors), errors
    assert "'warmup_runs' does not apply to the live mode" in errors[0]
    assert "HOST:PORT" in errors[1] and "'frames'" in errors[2]
    assert "one of them" in errors[3] and "32 hex digits" in errors[4]
