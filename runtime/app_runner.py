"""The harness app (android/harness) as a device runner: `--runner app`.

The engine binary runner (runtime/engine.py) stages `mobdistill-engine` in /data/local/tmp and
runs it from the shell. This runner runs the same engine code inside the harness app's process
(`md_engine_benchmark_main` through JNI), which is what users of an app get (ART process, the
app's delegate set-up, foreground thermal state). Over ADB it:

* installs or updates the APK when it is missing or differs (`pm install -r` of a verified staged
  copy), after checking that the phone's ABIs match the APK's native libraries;
* pushes models, manifests and frames into the app's files: staged in /data/local/tmp (size and
  sha256 checked), copied by `run-as` to a `.part` name, sha256 checked again, renamed;
* starts the benchmark with the engine's own flags as extras (`am instrument -w`, or `am start
  -W` and polling for the summary), with a timeout;
* delivers an update schedule's packets into an update folder of the app's while it runs, with
  the key pushed like a model (0600), and removes both after the run (runtime/app_updates.py);
* fetches the JSONL, summary (and masks) back through `run-as cat` (sha256 checked) and returns
  the same `ProfileResult` as the engine runner, `runner="app"`. A crash comes back with the
  run's logcat lines.

`run_benchmark(AppTarget(device, apk), ...)` is what profile, sweep and stream call.

`run-as` works only for debuggable builds: the debug APK (`./gradlew :harness:assembleDebug`).
"""

from __future__ import annotations

import enum
import json
import logging
import posixpath
import re
import secrets
import shlex
import time
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mobdistill.errors import DeviceError, UsageError
from mobdistill.export.manifest import Manifest
from mobdistill.files import sha256_file
from mobdistill.runtime.app_updates import AppUpdates
from mobdistill.runtime.device import CommandResult, Device, LocalDevice
from mobdistill.runtime.engine import (
    REPO_ROOT,
    EngineOptions,
    EngineRunError,
    ProfileResult,
    load_records,
    read_json,
    run_engine,
)

log = logging.getLogger(__name__)

PACKAGE = "org.mobdistill.harness"
INSTRUMENTATION = f"{PACKAGE}/.BenchmarkInstrumentation"
BENCHMARK_ACTIVITY = f"{PACKAGE}/.BenchmarkActivity"
# What `./gradlew :harness:assembleDebug` writes (AGP's layout), with Gradle's metadata beside it.
DEFAULT_APK = REPO_ROOT / "android" / "harness" / "build" / "outputs" / "apk" / "debug" / \
    "harness-debug.apk"
GRADLE_METADATA = "output-metadata.json"
STAGING = "app-staging"  # under the device workdir: files on their way into the app
LOGCAT_FILTER = ["mobdistill:V", "AndroidRuntime:V", "DEBUG:V", "libc:V", "TestRunner:V", "*:S"]
_SHORT_S = 60.0  # pm, run-as and am start answer in seconds
_POLL_S = 0.5
_SPLIT = "@@mobdistill-split@@"
# (serial, package) -> sha256 of the APK this process installed or found installed there
_CURRENT: dict[tuple[str, str], str] = {}


class Runner(enum.Enum):
    """Where profile/sweep run the engine: the shell binary, or inside the harness app."""

    ENGINE = "engine"
    APP = "app"


class StartMode(enum.Enum):
    INSTRUMENT = "instrument"  # `am instrument -w`: blocks and reports a result bundle
    ACTIVITY = "activity"  # `am start -W`, then poll for the summary


@dataclass(frozen=True)
class ApkInfo:
    """What the host knows of an APK file: its native-library ABIs and Gradle's versionCode."""

    path: Path
    sha256: str
    size: int
    abis: frozenset[str]
    version_code: int | None  # from Gradle's output-metadata.json beside the APK, if present


@dataclass(frozen=True)
class InstalledApp:
    """The harness as the phone's package manager reports it."""

    apk_path: str
    version_code: int | None
    debuggable: bool


@dataclass(frozen=True)
class InstrumentationResult:
    code: int | None  # INSTRUMENTATION_CODE: -1 RESULT_OK, 0 RESULT_CANCELED; None: never ended
    results: dict[str, str]  # INSTRUMENTATION_RESULT: key=value
    failed: str | None  # INSTRUMENTATION_FAILED / _ABORTED text
    raw: str

    @property
    def crashed(self) -> bool:
        return "shortMsg" in self.results or self.code is None


def default_apk(apk: Path | None) -> Path | None:
    """`--apk`, else the Gradle debug build of this checkout when it exists, else None (then an
    installed harness is used as it is)."""
    if apk is not None:
        return apk
    return DEFAULT_APK if DEFAULT_APK.is_file() else None


def read_apk(path: Path) -> ApkInfo:
    """ABIs of `lib/<abi>/*.so` in the APK and the versionCode Gradle wrote beside it."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"APK {path} not found: build it with `cd android && ./gradlew "
                         ":harness:assembleDebug` (writes {DEFAULT_APK.relative_to(REPO_ROOT)})")
    try:
        with zipfile.ZipFile(path) as apk:
            names = apk.namelist()
    except (zipfile.BadZipFile, OSError) as err:
        raise UsageError(f"{path} is not an APK (not a zip file: {err})") from err
    if "AndroidManifest.xml" not in names:
        raise UsageError(f"{path} is not an APK: it has no AndroidManifest.xml")
    abis = frozenset(n.split("/")[1] for n in names
                     if n.startswith("lib/") and n.endswith(".so") and n.count("/") == 2)
    return ApkInfo(path, sha256_file(path), path.stat().st_size, abis, _gradle_version(path))


def _gradle_version(apk: Path) -> int | None:
    metadata = apk.parent / GRADLE_METADATA
    try:
        elements = json.loads(metadata.read_text())["elements"]
        for element in elements:
            if element.get("outputFile") == apk.name:
                return int(element["versionCode"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def parse_instrumentation(text: str) -> InstrumentationResult:
    """`am instrument -w` output (without -r): RESULT lines, CODE, or FAILED/ABORTED."""
    results: dict[str, str] = {}
    code: int | None = None
    failed: str | None = None
    for line in text.splitlines():
        key, sep, value = line.partition(": ")
        if not sep:
            continue
        if key == "INSTRUMENTATION_RESULT":
            name, _, item = value.partition("=")
            results[name] = item
        elif key == "INSTRUMENTATION_CODE" and value.strip().lstrip("-").isdigit():
            code = int(value)
        elif key in ("INSTRUMENTATION_FAILED", "INSTRUMENTATION_ABORTED"):
            failed = value.strip()
    return InstrumentationResult(code, results, failed, text)


def engine_extras(flags: list[str]) -> dict[str, str]:
    """Engine flags (`--name=value`, from EngineOptions.to_flags) as the app's extras."""
    extras = {}
    for flag in flags:
        name, sep, value = flag.removeprefix("--").partition("=")
        if not flag.startswith("--") or not sep:
            raise UsageError(f"engine flag {flag!r} is not --name=value")
        extras[name] = value
    return extras


class HarnessApp:
    """The harness app on one device, reached through `pm`, `run-as` and `am` over the shell."""

    def __init__(self, device: Device, package: str = PACKAGE) -> None:
        self.device = device
        self.package = package
        self._data_dir: str | None = None

    # -- shell -----------------------------------------------------------------------------
    def _run(self, argv: list[str], *, timeout_s: float = _SHORT_S) -> CommandResult:
        done = self.device.run(argv, timeout_s=timeout_s)
        if done.timed_out:
            raise DeviceError(f"`{' '.join(argv[:3])}` did not finish in {timeout_s:g} s on "
                              f"{self.device.serial}")
        return done

    def _run_as(self, script: str, *, timeout_s: float = _SHORT_S, stdin: str | None = None
                ) -> str:
        """`script` run by sh as the app's user, in its data folder; its stdout. `stdin`: a
        device file the shell user opens for it (one the app's user may not read itself)."""
        if stdin is None:
            done = self._run(["run-as", self.package, "sh", "-c", script], timeout_s=timeout_s)
        else:
            q = shlex.quote
            done = self._run(["sh", "-c", f"run-as {q(self.package)} sh -c {q(script)} < "
                                          f"{q(stdin)}"], timeout_s=timeout_s)
        text = (done.stdout + done.stderr).strip()
        if done.exit_code != 0:
            raise self._run_as_error(text, script)
        return done.stdout

    def _run_as_error(self, text: str, script: str) -> DeviceError:
        serial = self.device.serial
        if "not debuggable" in text:
            return DeviceError(
                f"the harness on {serial} is a release build: `run-as` (how mobdistill reaches "
                f"the app's files) works only for a debuggable build. Install the debug APK: "
                f"`cd android && ./gradlew :harness:installDebug`, or pass --apk "
                f"{DEFAULT_APK.relative_to(REPO_ROOT)} (uninstall the release build first: "
                f"`adb uninstall {self.package}`)")
        if "unknown package" in text or "not installed" in text:
            return DeviceError(f"{self.package} is not installed on {serial}; pass --apk")
        return DeviceError(f"run-as {self.package} on {serial} failed ({script[:80]}): "
                           f"{text[-400:] or 'no output'}")

    # -- package ---------------------------------------------------------------------------
    def installed(self) -> InstalledApp | None:
        """The installed harness, or None."""
        q = shlex.quote(self.package)
        done = self._run(["sh", "-c", f"pm path {q}; echo {_SPLIT}; dumpsys package {q}"])
        listing, _, dump = done.stdout.partition(_SPLIT)
        paths = [ln.removeprefix("package:").strip() for ln in listing.splitlines()
                 if ln.startswith("package:")]
        if not paths:
            return None
        version = re.search(r"versionCode=(\d+)", dump)
        flags = " ".join(re.findall(r"flags=\[([^\]]*)\]", dump))
        base = next((p for p in paths if p.endswith("/base.apk")), paths[0])
        return InstalledApp(base, int(version.group(1)) if version else None,
                            "DEBUGGABLE" in flags.split())

    def check_abi(self, apk: ApkInfo) -> None:
        """Refuse an APK whose native libraries are built for none of the device's ABIs."""
        info = self.device.describe()
        device_abis = [a for a in (info.get("abilist") or info.get("abi", "")).split(",") if a]
        if apk.abis and not apk.abis & set(device_abis):
            raise DeviceError(
                f"{apk.path.name} has native libraries for {', '.join(sorted(apk.abis))} only, "
                f"but {self.device.serial} runs {', '.join(device_abis) or 'an unknown ABI'}: "
                "build the APK for this phone's ABI (android/build.gradle.kts `abis`, e.g. "
                "-Pabis=" + (device_abis[0] if device_abis else "arm64-v8a") + ")")

    def ensure_installed(self, apk_path: Path | None) -> InstalledApp:
        """Install or update the harness from `apk_path` when missing or different."""
        current = self.installed()
        if apk_path is None:
            if current is None:
                raise DeviceError(
                    f"the harness app ({self.package}) is not installed on {self.device.serial} "
                    f"and no APK was given: build it with `cd android && ./gradlew "
                    f":harness:assembleDebug` and pass --apk "
                    f"{DEFAULT_APK.relative_to(REPO_ROOT)} (or install it with "
                    "`./gradlew :harness:installDebug`)")
            return current
        apk = read_apk(apk_path)
        self.check_abi(apk)
        where = (self.device.serial, self.package)
        if current is not None and (_CURRENT.get(where) == apk.sha256
                                    or self._remote_sha256(current.apk_path) == apk.sha256):
            _CURRENT[where] = apk.sha256
            return current
        _CURRENT.pop(where, None)
        if (current is not None and current.version_code is not None
                and apk.version_code is not None and apk.version_code < current.version_code):
            raise DeviceError(
                f"{apk.path.name} (versionCode {apk.version_code}) is older than the harness on "
                f"{self.device.serial} (versionCode {current.version_code}): pass a newer APK, "
                f"or uninstall the installed one first (`adb uninstall {self.package}`)")
        self._install(apk)
        installed = self.installed()
        if installed is None:
            raise DeviceError(f"pm reported success but {self.package} is not installed on "
                              f"{self.device.serial}")
        _CURRENT[where] = apk.sha256
        return installed

    def _install(self, apk: ApkInfo) -> None:
        staged = self.device.stage(apk.path, f"{STAGING}/harness.apk")
        try:
            done = self._run(["pm", "install", "-r", staged], timeout_s=300)
        finally:
            self.device.remove(staged)
        text = (done.stdout + done.stderr).strip()
        if "Success" in text.splitlines():
            log.info("installed %s on %s", apk.path.name, self.device.serial)
            return
        fixes = {
            "INSTALL_FAILED_NO_MATCHING_ABIS": "build the APK for this phone's ABI",
            "INSTALL_FAILED_UPDATE_INCOMPATIBLE": f"the installed harness is signed with "
            f"another key: `adb uninstall {self.package}`, then retry",
            "INSTALL_FAILED_VERSION_DOWNGRADE": f"`adb uninstall {self.package}`, then retry",
            "INSTALL_FAILED_INSUFFICIENT_STORAGE": "free some storage on the phone",
        }
        fix = next((f for code, f in fixes.items() if code in text), "see the reason above")
        raise DeviceError(f"installing {apk.path.name} on {self.device.serial} failed: "
                          f"{text[-300:] or 'no output'}; {fix}")

    def _remote_sha256(self, path: str) -> str | None:
        done = self._run(["sh", "-c", f"sha256sum {shlex.quote(path)} 2>/dev/null || "
                                      f"toybox sha256sum {shlex.quote(path)}"])
        digest = done.stdout.split()[0] if done.exit_code == 0 and done.stdout.split() else ""
        return digest if len(digest) == 64 else None

    # -- the app's files -------------------------------------------------------------------
    def data_dir(self) -> str:
        """The app's data folder (`run-as` starts there); fails plainly on a release build."""
        if self._data_dir is None:
            self._data_dir = self._run_as("pwd").strip()
            if not self._data_dir.startswith("/"):
                raise DeviceError(f"run-as {self.package} pwd on {self.device.serial} printed "
                                  f"{self._data_dir!r}, not a folder")
        return self._data_dir

    def files_dir(self) -> str:
        return posixpath.join(self.data_dir(), "files")

    def app_sha256(self, *app_paths: str) -> dict[str, str]:
        """sha256 of each app file that exists (one `run-as` call for all of them)."""
        quoted = " ".join(shlex.quote(p) for p in app_paths)
        out = self._run_as(f"for f in {quoted}; do [ -f \"$f\" ] && sha256sum \"$f\"; done; true")
        digests = {}
        for line in out.splitlines():
            digest, _, path = line.partition("  ")
            if len(digest) == 64 and path in app_paths:
                digests[path] = digest
        return digests

    def push_all(self, files: dict[str, Path], *, timeout_s: float = 600) -> dict[str, str]:
        """`push` for files/`relative` -> local; the ones already there unchanged are kept."""
        targets = {rel: posixpath.join(self.files_dir(), rel) for rel in files}
        present = self.app_sha256(*targets.values())
        for rel, local in files.items():
            if present.get(targets[rel]) != sha256_file(local):
                self.push(local, rel, timeout_s=timeout_s)
        return targets

    def push(self, local: Path, relative: str, *, timeout_s: float = 600,
             private: bool = False) -> str:
        """Copy `local` to files/`relative` in the app, verified (staged copy, then the app's
        copy: size and sha256); returns the app path. A `private` file (a key) is staged 0600
        and reaches the app's user through the shell's redirection, and stays 0600 there."""
        local = Path(local)
        target = posixpath.join(self.files_dir(), relative)
        digest, size = sha256_file(local), local.stat().st_size
        staged = self.device.stage(local, f"{STAGING}/{secrets.token_hex(4)}.{local.name}",
                                   timeout_s=timeout_s, private=private)
        folder, name = posixpath.split(target)
        part = posixpath.join(folder, f".{name}.part")
        q = shlex.quote
        check = f"wc -c < {q(part)} && sha256sum {q(part)}"
        try:
            if private:
                out = self._run_as(f"umask 077 && mkdir -p {q(folder)} && cat > {q(part)} && "
                                   f"{check}", timeout_s=timeout_s, stdin=staged)
            else:
                out = self._run_as(f"mkdir -p {q(folder)} && cp {q(staged)} {q(part)} && {check}",
                                   timeout_s=timeout_s)
        finally:
            self.device.remove(staged)
        words = out.split()
        if len(words) < 2 or words[0] != str(size) or words[1] != digest:
            self._run_as(f"rm -f {q(part)}")
            raise DeviceError(f"the copy of {local} in {self.package}'s files on "
                              f"{self.device.serial} does not match (size/sha256 {words[:2]} vs "
                              f"{size} {digest}); removed it, try again")
        self._run_as(f"mv -f {q(part)} {q(target)}")
        return target

    def remove(self, *app_paths: str) -> None:
        self._run_as("rm -rf " + " ".join(shlex.quote(p) for p in app_paths))

    def run_as(self, script: str, *, timeout_s: float = _SHORT_S) -> str:
        """`script` as the app's user in its data folder (stdout); DeviceError if it fails."""
        return self._run_as(script, timeout_s=timeout_s)

    def fetch_all(self, files: dict[str, Path], *, timeout_s: float = 600) -> list[str]:
        """Copy app files (app path -> local path) to the host, each sha256 checked, and
        return the ones fetched; missing files are skipped, and a local file is replaced only
        by a complete, verified copy."""
        expected = self.app_sha256(*files)
        if not expected:
            return []
        staging = posixpath.join(self.device.workdir(), STAGING)
        staged = {p: f"{staging}/{secrets.token_hex(4)}.{posixpath.basename(p)}" for p in expected}
        q = shlex.quote
        script = f"mkdir -p {q(staging)}" + "".join(
            f" && run-as {q(self.package)} cat {q(p)} > {q(s)}" for p, s in staged.items())
        try:
            done = self._run(["sh", "-c", script], timeout_s=timeout_s)
            if done.exit_code != 0:
                raise self._run_as_error((done.stdout + done.stderr).strip(), "cat")
            for app_path, remote in staged.items():
                local = Path(files[app_path])
                part = local.with_name(f".{local.name}.fetch")
                self.device.fetch(remote, part, timeout_s=timeout_s)
                if sha256_file(part) != expected[app_path]:
                    part.unlink(missing_ok=True)
                    raise DeviceError(f"{app_path} changed or was damaged on its way from "
                                      f"{self.device.serial}; fetch it again")
                part.replace(local)
        finally:
            self._run(["rm", "-f", *staged.values()])
        return list(expected)

    # -- running ---------------------------------------------------------------------------
    def device_time(self) -> str:
        """The phone's clock in logcat's -T format, to fetch only a run's lines later."""
        return self._run(["date", "+%m-%d %H:%M:%S.000"]).stdout.strip()

    def logcat(self, since: str | None, *, lines: int = 80) -> str:
        argv = ["logcat", "-d", "-v", "brief"] + (["-T", since] if since else []) + LOGCAT_FILTER
        done = self._run(argv)
        return "\n".join(done.stdout.strip().splitlines()[-lines:])

    def force_stop(self) -> None:
        self._run(["am", "force-stop", self.package])

    def instrument(self, extras: dict[str, str], *, timeout_s: float) -> InstrumentationResult:
        argv = ["am", "instrument", "-w"]
        for name, value in extras.items():
            argv += ["-e", name, value]
        done = self.device.run(argv + [INSTRUMENTATION], timeout_s=timeout_s)
        if done.timed_out:
            return InstrumentationResult(None, {"shortMsg": f"timed out after {timeout_s:g} s"},
                                         None, done.stdout)
        return parse_instrumentation(done.stdout + done.stderr)

    def start_activity(self, extras: dict[str, str]) -> None:
        """`am start -W` of the benchmark activity; it returns once the activity is up."""
        argv = ["am", "start", "-W", "-n", BENCHMARK_ACTIVITY]
        for name, value in extras.items():
            argv += ["--es", name, value]
        done = self._run(argv)
        text = (done.stdout + done.stderr).strip()
        if done.exit_code != 0 or "Error" in text:
            raise DeviceError(f"`am start` of the harness on {self.device.serial} failed: "
                              f"{text[-300:]}")

    def wait_for_summary(self, summary: str, *, timeout_s: float) -> str | None:
        """Wait for `summary` or `summary.error` of a started run; the error text, if any."""
        deadline = time.monotonic() + timeout_s
        q = shlex.quote
        while time.monotonic() < deadline:
            # Liveness first: a process that was gone before the files were looked at and
            # left neither file has died.
            state = self._run_as(
                f"pidof {q(self.package)} >/dev/null && alive=running || alive=gone; "
                f"if [ -f {q(summary)}.error ]; then echo error; cat {q(summary)}.error; "
                f"elif [ -f {q(summary)} ]; then echo done; else echo $alive; fi")
            status, _, rest = state.partition("\n")
            if status == "done":
                return None
            if status == "error":
                return rest.strip() or "the benchmark failed"
            if status == "gone":
                raise AppEnded("the harness process died before writing a summary")
            time.sleep(_POLL_S)
        raise AppEnded(f"no summary after {timeout_s:g} s")


class AppEnded(DeviceError):
    """The app process ended without an answer (crash, kill, timeout)."""


@dataclass(frozen=True)
class AppTarget:
    """`--runner app`: benchmarks on `device` run inside the harness app, installed or updated
    from `apk` when it is missing or different."""

    device: Device
    apk: Path | None = None
    start: StartMode = StartMode.INSTRUMENT

    def __post_init__(self) -> None:
        if isinstance(self.device, LocalDevice):
            raise UsageError("--runner app runs the harness app on a phone: give --device "
                             "SERIAL (`mobdistill devices` lists them)")


def run_benchmark(target: Device | AppTarget, manifest_path: Path,
                  options: EngineOptions | None = None, *, frames_path: Path | None = None,
                  out_dir: Path, output_masks: bool = False) -> ProfileResult:
    """One engine run on `target`: the binary on a Device (`run_engine`), or inside the harness
    app on an AppTarget (`run_app`); the same ProfileResult either way, its `runner` says which."""
    if isinstance(target, AppTarget):
        return run_app(target.device, manifest_path, options, frames_path=frames_path,
                       out_dir=out_dir, output_masks=output_masks, apk=target.apk,
                       start=target.start)
    return run_engine(target, manifest_path, options, frames_path=frames_path, out_dir=out_dir,
                      output_masks=output_masks)


def run_app(
    device: Device,
    manifest_path: Path,
    options: EngineOptions | None = None,
    *,
    frames_path: Path | None = None,
    out_dir: Path,
    output_masks: bool = False,
    apk: Path | None = None,
    start: StartMode = StartMode.INSTRUMENT,
    **overrides: Any,
) -> ProfileResult:
    """`run_engine`'s counterpart: the benchmark inside the harness app. The same per-frame
    records, update events, masks and summary come back; EngineRunError (with `.partial`) when
    it fails. An update schedule is delivered into the app's update folder (app_updates.py)."""
    options = replace(options or EngineOptions(), **overrides)
    manifest = Manifest.load(Path(manifest_path), check_files=False)
    tflite = manifest.tflite_path
    if not tflite.is_file():
        raise UsageError(f"manifest {manifest.path} lists {tflite}, which does not exist; "
                         "re-export the model")
    app = HarnessApp(device)
    tag = f"run-{secrets.token_hex(4)}"
    installed = app.ensure_installed(apk)
    app.data_dir()  # a release build fails here, before anything is pushed
    updates = AppUpdates(app, tag, options)
    local = Path(out_dir)
    local.mkdir(parents=True, exist_ok=True)
    # One folder per manifest content: a sweep's queue lengths stay side by side in the app.
    folder = f"models/{sha256_file(manifest.path)[:16]}"
    models = app.push_all({f"{folder}/{manifest.path.name}": manifest.path,
                           f"{folder}/{tflite.name}": tflite})
    extras = {"tag": tag, "manifest": models[f"{folder}/{manifest.path.name}"],
              "graph": models[f"{folder}/{tflite.name}"]}
    files = app.files_dir()
    remote = {"jsonl": f"{files}/{tag}.jsonl", "summary.json": f"{files}/{tag}.summary.json"}
    if output_masks:
        remote["masks"] = extras["output_masks"] = f"{files}/{tag}.masks"
    try:
        if frames_path is not None:
            extras["frames"] = app.push(Path(frames_path), f"{tag}.rgb")
        updates.prepare(options.update_key_file, timeout_s=options.timeout_s)
        app_options = replace(options, update_schedule=None, update_dir=updates.folder)
        extras.update(engine_extras(app_options.to_flags(
            {"update_key_file": updates.key} if updates.key else {})))
        if updates.due_later and start is StartMode.INSTRUMENT:
            # `am instrument -w` holds the shell until the run ends; delivery needs it meanwhile
            log.info("starting the harness with `am start`: updates are delivered while it runs")
            start = StartMode.ACTIVITY
        since = app.device_time()
        log.info("running the harness benchmark on %s", device.serial)
        exit_code, timed_out, message = _start(app, start, extras, remote, options, updates)
    finally:
        updates.cleanup()
    if timed_out:
        app.force_stop()  # the run outlives a killed `am`; stop it before fetching
    if exit_code != 0:
        message += _logcat_note(app, since)
    fetched = {key: local / f"engine.{key}" for key in remote}
    try:
        app.fetch_all({remote[key]: fetched[key] for key in remote})
        app.remove(*remote.values(), *([extras["frames"]] if "frames" in extras else []))
    except DeviceError as err:  # the outputs stay in the app's files for another try
        log.warning("could not fetch the run's outputs (kept on the device): %s", err)
    frames, events = load_records(fetched["jsonl"], updates.record_names())
    device_info = {**device.describe(), "runner": Runner.APP.value,
                   "app_version_code": str(installed.version_code)}
    result = ProfileResult(
        model=manifest.model_name, manifest_path=str(manifest.path), device=device_info,
        options=options, frames=frames, update_events=events,
        summary=read_json(fetched["summary.json"]) if exit_code == 0 else {},
        jsonl_path=str(fetched["jsonl"]), summary_path=str(fetched["summary.json"]),
        output_masks_path=str(fetched["masks"]) if output_masks else None,
        runner=Runner.APP.value)
    (local / "stderr.txt").write_text(message)
    if exit_code != 0 or not result.summary:
        kept = f"{len(frames)} completed frame(s) kept in {result.jsonl_path}"
        what = "timed out and was stopped" if timed_out else "failed"
        raise EngineRunError(f"the harness benchmark {what} on {device.serial}: "
                             f"{message or 'it wrote no summary'}\n{kept}", result)
    return result


def _start(app: HarnessApp, start: StartMode, extras: dict[str, str], remote: dict[str, str],
           options: EngineOptions, updates: AppUpdates) -> tuple[int, bool, str]:
    """(exit code, timed out, message) of one benchmark in the app."""
    if start is StartMode.ACTIVITY:
        began = time.monotonic()
        try:
            app.start_activity(extras)
            updates.deliver(remote["jsonl"], remote["summary.json"], package=app.package,
                            timeout_s=options.timeout_s)
            left = max(options.timeout_s - (time.monotonic() - began), _POLL_S)
            error = app.wait_for_summary(remote["summary.json"], timeout_s=left)
        except AppEnded as crash:
            timed_out = "no summary" in str(crash)
            return 1, timed_out, f"the harness app: {crash}"
        return (1, False, error) if error else (0, False, "")
    result = app.instrument(extras, timeout_s=options.timeout_s)
    if result.failed and result.code is None and "shortMsg" not in result.results:
        raise DeviceError(f"`am instrument` could not start {INSTRUMENTATION} on "
                          f"{app.device.serial}: {result.failed}. Is the installed harness "
                          "current? Pass --apk to update it")
    if result.crashed:
        short = result.results.get("shortMsg", result.failed or "no result")
        timed_out = short.startswith("timed out")
        return 1, timed_out, f"the harness app crashed: {short}"
    exit_code = int(result.results.get("exit_code", "1") or 1)
    if exit_code != 0 or result.code != -1:
        return exit_code or 1, False, result.results.get("error", "the benchmark failed")
    return 0, False, ""


def _logcat_note(app: HarnessApp, since: str) -> str:
    try:
        lines = app.logcat(since)
    except DeviceError as err:
        return f"\n(logcat unavailable: {err})"
    return f"\nlogcat of the run:\n{lines}" if lines else "\n(logcat: no lines for the run)"
