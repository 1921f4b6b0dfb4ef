"""A stand-in for the Android framework's shell tools in the ADB peer's sandbox: `pm`, `am`,
`run-as`, `dumpsys package`, `logcat`, `pidof` (tests/support/adb_peer.py puts one launcher per
tool in the sandbox's /system/bin; each runs `python android_framework.py TOOL ARGS...`).

What is a stand-in: the package manager, ActivityManager, instrumentation, run-as and logcat
(their command lines and output formats follow AOSP's), and the APK: a zip whose
AndroidManifest.xml is plain XML (a real one is aapt2's binary XML) with `lib/<abi>/*.so`.
What is real: the ADB protocol, the host tooling driving it, and the benchmark itself. The
"app process" loads the APK's `libmobdistill_facade_host.so` (the host build of the engine core
that the app's JNI library links) and calls `md_engine_benchmark_main` with the engine flags
that the harness's BenchmarkRequest.kt makes of the extras (`benchmark_args` mirrors it; the
JVM test checks the two agree).

State lives in the sandbox: /data/app/<pkg>-1/ (base.apk, lib/<abi>/), /data/user/0/<pkg>/
(the app's data folder), framework/packages/<pkg>.json, framework/logcat.jsonl,
framework/running/<pkg>.pid.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from xml.etree import ElementTree

ANDROID_NS = "{http://schemas.android.com/apk/res/android}"
ENGINE_LIB = "libmobdistill_facade_host.so"
RUNTIME_LIB = "liblitert-lm.so"
APP_EXTRAS = {"tag", "model", "queue"}
APP_OWNED = {"jsonl", "summary", "runtime_lib"}
RENAMED = {"threads": "num_threads", "warmup": "warmup_runs", "frames_file": "frames",
           "delegate": "use_xnnpack, use_gpu or use_nnapi (true|false)"}
ROOT = Path(os.environ.get("PEER_ROOT", "/nonexistent"))
FRAMEWORK = ROOT / "framework"


# -- BenchmarkRequest.kt, mirrored ---------------------------------------------------------
def benchmark_args(extras: dict[str, str], files_dir: str, runtime_lib: str
                   ) -> tuple[list[str], str, str]:
    """(engine args, jsonl, summary) as BenchmarkRequest.fromExtras makes them; ValueError
    with its message for extras it refuses."""
    for name, value in extras.items():
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise ValueError(f"extra '{name}' is not an engine flag name ([a-z][a-z0-9_]*)")
        if name in APP_OWNED:
            raise ValueError(f"extra '{name}' is set by the app (outputs come from 'tag')")
        if name in RENAMED:
            raise ValueError(f"extra '{name}' is now the engine flag {RENAMED[name]}")
        if name == "frames" and value.isdigit():
            raise ValueError("extra 'frames' is the engine's raw RGB frames file; the number "
                             "of timed runs is 'num_runs'")
    tag = extras.get("tag", "run")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", tag):
        raise ValueError(f"extra 'tag' must be a plain file name, not '{tag}'")
    queue = extras.get("queue")
    if queue is not None and not re.fullmatch(r"[+-]?\d+", queue):
        raise ValueError(f"extra 'queue' must be an integer, not '{queue}'")
    suffix = f"_q{int(queue)}" if queue is not None else ""
    model = extras.get("model", "mobilevos")
    jsonl, summary = f"{files_dir}/{tag}.jsonl", f"{files_dir}/{tag}.summary.json"
    args = [] if "manifest" in extras else [
        f"--manifest={files_dir}/models/{model}{suffix}.manifest.json"]
    args.append(f"--runtime_lib={runtime_lib}")
    args += [f"--{k}={extras[k]}" for k in sorted(extras) if k not in APP_EXTRAS]
    if "frames" not in extras and "random_input" not in extras:
        args.append("--random_input=true")
    return args + [f"--jsonl={jsonl}", f"--summary={summary}"], jsonl, summary


# -- packages ------------------------------------------------------------------------------
def _record(package: str) -> dict | None:
    path = FRAMEWORK / "packages" / f"{package}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _code_dir(package: str) -> Path:
    return ROOT / "data" / "app" / f"{package}-1"


def _data_dir(package: str) -> Path:
    return ROOT / "data" / "user" / "0" / package


def _device(path: Path) -> str:
    return "/" + str(path.relative_to(ROOT))


def _parse_apk(path: Path) -> dict:
    with zipfile.ZipFile(path) as apk:
        manifest = ElementTree.fromstring(apk.read("AndroidManifest.xml"))
        libs = [n for n in apk.namelist() if n.startswith("lib/") and n.endswith(".so")]
    app = manifest.find("application")
    package = manifest.get("package", "")

    def names(tag: str) -> list[str]:
        return [e.get(f"{ANDROID_NS}name", "") for e in manifest.iter(tag)]

    return {"package": package,
            "version_code": int(manifest.get(f"{ANDROID_NS}versionCode", "1")),
            "debuggable": app is not None and app.get(f"{ANDROID_NS}debuggable") == "true",
            "abis": sorted({n.split("/")[1] for n in libs}),
            "instrumentation": names("instrumentation"), "activities": names("activity")}


def pm(args: list[str]) -> int:
    if args[:1] == ["path"] and len(args) == 2:
        if _record(args[1]) is None:
            return 1
        print(f"package:{_device(_code_dir(args[1]) / 'base.apk')}")
        return 0
    if args[:1] == ["install"]:
        return _install([a for a in args[1:] if a.startswith("-")], args[-1])
    if args[:1] == ["uninstall"] and len(args) == 2:
        if _record(args[1]) is None:
            print("Failure [DELETE_FAILED_INTERNAL_ERROR]")
            return 1
        shutil.rmtree(_code_dir(args[1]), ignore_errors=True)
        shutil.rmtree(_data_dir(args[1]), ignore_errors=True)
        (FRAMEWORK / "packages" / f"{args[1]}.json").unlink()
        print("Success")
        return 0
    print(f"pm: unsupported by the test peer: {' '.join(args)}", file=sys.stderr)
    return 255


def _install(flags: list[str], apk_path: str) -> int:
    print("Performing Streamed Install")
    try:
        info = _parse_apk(Path(apk_path))
    except (OSError, zipfile.BadZipFile, KeyError, ElementTree.ParseError) as err:
        print(f"Failure [INSTALL_PARSE_FAILED_NOT_APK: Failed to parse {apk_path}: {err}]")
        return 1
    package = info["package"]
    abilist = _prop("ro.product.cpu.abilist").split(",")
    abi = next((a for a in abilist if a in info["abis"]), None)
    if info["abis"] and abi is None:
        print("Failure [INSTALL_FAILED_NO_MATCHING_ABIS: Failed to extract native libraries, "
              "res=-113]")
        return 1
    old = _record(package)
    if old is not None and "-r" not in flags:
        print(f"Failure [INSTALL_FAILED_ALREADY_EXISTS: Attempt to re-install {package} "
              "without first uninstalling.]")
        return 1
    if old is not None and info["version_code"] < old["version_code"] and "-d" not in flags:
        print("Failure [INSTALL_FAILED_VERSION_DOWNGRADE]")
        return 1
    code = _code_dir(package)
    shutil.rmtree(code, ignore_errors=True)
    (code / "lib").mkdir(parents=True)
    shutil.copyfile(apk_path, code / "base.apk")
    if abi is not None:
        (code / "lib" / abi).mkdir()
        with zipfile.ZipFile(apk_path) as apk:
            for name in apk.namelist():
                if name.startswith(f"lib/{abi}/") and name.endswith(".so"):
                    target = code / "lib" / abi / Path(name).name
                    with apk.open(name) as src, open(target, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
    (_data_dir(package) / "files").mkdir(parents=True, exist_ok=True)
    (FRAMEWORK / "packages").mkdir(parents=True, exist_ok=True)
    (FRAMEWORK / "packages" / f"{package}.json").write_text(json.dumps({**info, "abi": abi}))
    print("Success")
    return 0


def _prop(name: str) -> str:
    for line in Path(os.environ["PEER_PROPS"]).read_text().splitlines():
        key, _, value = line.partition("]: [")
        if key == f"[{name}":
            return value.rstrip("]")
    return ""


def dumpsys(args: list[str]) -> int:
    if args[:1] != ["package"] or len(args) != 2:
        print(f"dumpsys: unsupported by the test peer: {' '.join(args)}", file=sys.stderr)
        return 255
    record = _record(args[1])
    if record is None:
        print(f"Unable to find package: {args[1]}")
        return 0
    flags = (["DEBUGGABLE"] if record["debuggable"] else []) + ["HAS_CODE", "ALLOW_CLEAR_USER_DATA"]
    print(f"Packages:\n  Package [{args[1]}] (1a2b3c):\n    userId=10234\n"
          f"    codePath={_device(_code_dir(args[1]))}\n"
          f"    primaryCpuAbi={record['abi'] or 'null'}\n"
          f"    versionCode={record['version_code']} minSdk=26 targetSdk=35\n"
          f"    flags=[ {' '.join(flags)} ]")
    return 0


def run_as(args: list[str]) -> int:
    if not args:
        print("usage: run-as <package-name> [--user <uid>] <command> [<args>]", file=sys.stderr)
        return 1
    record = _record(args[0])
    if record is None:
        print(f"run-as: unknown package: {args[0]}", file=sys.stderr)
        return 1
    if not record["debuggable"]:
        print(f"run-as: package not debuggable: {args[0]}", file=sys.stderr)
        return 1
    os.chdir(_data_dir(args[0]))
    command = args[1:] or ["sh"]
    os.execvp(command[0], command)
    return 127  # not reached


# -- logcat --------------------------------------------------------------------------------
def log(level: str, tag: str, message: str, pid: int | None = None) -> None:
    FRAMEWORK.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%m-%d %H:%M:%S") + f".{int(time.time() * 1000) % 1000:03d}"
    entry = {"time": stamp, "level": level, "tag": tag, "pid": pid or os.getpid(), "msg": message}
    with open(FRAMEWORK / "logcat.jsonl", "a") as handle:
        handle.write(json.dumps(entry) + "\n")


def logcat(args: list[str]) -> int:
    since, tags, i = None, set(), 0
    while i < len(args):
        if args[i] in ("-v", "-t", "-T", "-b"):
            since = args[i + 1] if args[i] == "-T" else since
            i += 2
            continue
        if ":" in args[i] and not args[i].startswith("*"):
            tags.add(args[i].split(":")[0])
        i += 1
    path = FRAMEWORK / "logcat.jsonl"
    for line in path.read_text().splitlines() if path.is_file() else []:
        entry = json.loads(line)
        if (since is None or entry["time"] >= since) and (not tags or entry["tag"] in tags):
            print(f"{entry['level']}/{entry['tag']}({entry['pid']:5d}): {entry['msg']}")
    return 0


# -- am and the app process ----------------------------------------------------------------
def _component(spec: str) -> tuple[str, str]:
    package, _, name = spec.partition("/")
    return package, (package + name if name.startswith(".") else name)


def _declared(package: str, kind: str, name: str) -> bool:
    record = _record(package)
    return record is not None and any(
        (package + n if n.startswith(".") else n) == name for n in record[kind])


def _pid_file(package: str) -> Path:
    return FRAMEWORK / "running" / f"{package}.pid"


def _app_process(package: str, extras: dict[str, str], *, answer: bool) -> subprocess.Popen:
    """The app's process: this script in `app` mode. With `answer`, its result bundle comes
    back on stdout (instrumentation); an activity's goes nowhere."""
    (FRAMEWORK / "running").mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, __file__, "app", package, json.dumps(extras)],
                            cwd=_data_dir(package), start_new_session=True,
                            stdout=subprocess.PIPE if answer else subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, text=True)
    _pid_file(package).write_text(str(proc.pid))
    return proc


def am(args: list[str]) -> int:
    if args[:1] == ["force-stop"] and len(args) == 2:
        _stop(args[1])
        return 0
    extras: dict[str, str] = {}
    rest = args[1:]
    flags, positional = [], []
    i = 0
    while i < len(rest):
        if rest[i] in ("-e", "--es"):
            extras[rest[i + 1]] = rest[i + 2]
            i += 3
        elif rest[i] == "-n":
            positional.append(rest[i + 1])
            i += 2
        elif rest[i].startswith("-"):
            flags.append(rest[i])
            i += 1
        else:
            positional.append(rest[i])
            i += 1
    if args[:1] == ["instrument"] and positional:
        return _instrument(positional[-1], extras)
    if args[:1] == ["start"] and positional:
        return _start(positional[-1], extras)
    print(f"am: unsupported by the test peer: {' '.join(args)}", file=sys.stderr)
    return 255


def _instrument(component: str, extras: dict[str, str]) -> int:
    package, name = _component(component)
    if not _declared(package, "instrumentation", name):
        print(f"INSTRUMENTATION_FAILED: {component}")
        print(f"android.util.AndroidException: INSTRUMENTATION_FAILED: {component}",
              file=sys.stderr)
        return 1
    proc = _app_process(package, extras, answer=True)
    out, _ = proc.communicate()
    _pid_file(package).unlink(missing_ok=True)
    if proc.returncode != 0:  # the process died: how am reports an app crash
        log("E", "AndroidRuntime", f"FATAL EXCEPTION: main Process: {package}, PID: {proc.pid}",
            proc.pid)
        print("INSTRUMENTATION_RESULT: shortMsg=Process crashed.")
        print("INSTRUMENTATION_CODE: 0")
        return 0
    result = json.loads(out)
    for key, value in result["bundle"].items():
        print(f"INSTRUMENTATION_RESULT: {key}={value}")
    print(f"INSTRUMENTATION_CODE: {-1 if result['bundle']['exit_code'] == 0 else 0}")
    return 0


def _start(component: str, extras: dict[str, str]) -> int:
    package, name = _component(component)
    print(f"Starting: Intent {{ cmp={component} (has extras) }}")
    if not _declared(package, "activities", name):
        print(f"Error type 3\nError: Activity class {{{package}/{name}}} does not exist.")
        return 0
    _app_process(package, extras, answer=False)
    print(f"Status: ok\nLaunchState: COLD\nActivity: {component}\nTotalTime: 120\n"
          "WaitTime: 125\nComplete")
    return 0


def _stop(package: str) -> None:
    pid_file = _pid_file(package)
    if pid_file.is_file():
        try:
            os.killpg(int(pid_file.read_text()), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
        pid_file.unlink(missing_ok=True)


def pidof(args: list[str]) -> int:
    pids = []
    for package in args:
        pid_file = _pid_file(package)
        if pid_file.is_file():
            pid = int(pid_file.read_text())
            try:
                os.kill(pid, 0)
                if Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z":
                    pids.append(str(pid))
            except (ProcessLookupError, OSError):
                pass
    if pids:
        print(" ".join(pids))
    return 0 if pids else 1


def app(package: str, extras_json: str) -> int:
    """Benchmarks.kt's runBenchmark: extras -> engine args -> md_engine_benchmark_main."""
    record = _record(package)
    assert record is not None
    files = _data_dir(package) / "files"
    files.mkdir(parents=True, exist_ok=True)
    native = _code_dir(package) / "lib" / (record["abi"] or "none")
    extras = json.loads(extras_json)
    tag = extras.get("tag", "run")
    if "ams_server" in extras:  # Benchmarks.kt's runLiveMode: Kotlin all the way down
        summary = str(files / f"{tag}.live.json")
        return _finish(1, "", summary, "the test peer's Android stand-in runs no Kotlin: the "
                       "live mode (LiveRequest.kt, LiveRun.kt, AmsClient) cannot run here", tag)
    try:
        args, jsonl, summary = benchmark_args(extras, str(files), str(native / RUNTIME_LIB))
    except ValueError as err:
        return _finish(1, "", str(files / f"{tag}.summary.json"), str(err), tag)
    log("I", "mobdistill", "benchmark " + " ".join(args))
    try:
        engine = ctypes.CDLL(str(native / ENGINE_LIB))
    except OSError as err:  # System.loadLibrary failing kills the app
        log("E", "AndroidRuntime", f"java.lang.UnsatisfiedLinkError: {err}")
        return 1
    argv = (ctypes.c_char_p * (len(args) + 1))(b"harness", *(a.encode() for a in args))
    error = ctypes.create_string_buffer(2048)
    code = engine.md_engine_benchmark_main(len(args) + 1, argv, error, 2048)
    log("I", "mobdistill", f"benchmark exit {code}; summary {summary}")
    message = error.value.decode(errors="replace") or (f"engine exit code {code}" if code else "")
    return _finish(code, jsonl, summary, message, tag)


def _finish(code: int, jsonl: str, summary: str, error: str, tag: str) -> int:
    bundle: dict[str, object] = {"exit_code": code, "jsonl": jsonl, "summary": summary}
    if error:
        log("E", "mobdistill", f"benchmark failed: {error}")
        if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", tag):
            Path(summary + ".error").write_text(error)
        bundle["error"] = error
    print(json.dumps({"bundle": bundle}))
    return 0


TOOLS = {"pm": pm, "am": am, "run-as": run_as, "dumpsys": dumpsys, "logcat": logcat,
         "pidof": pidof}

if __name__ == "__main__":
    tool = sys.argv[1]
    if tool == "app":
        sys.exit(app(sys.argv[2], sys.argv[3]))
    sys.exit(TOOLS[tool](sys.argv[2:]))


# -- the stand-in APK (built by tests) ------------------------------------------------------
def build_apk(path: Path, *, package: str = "org.mobdistill.harness", version_code: int = 1,
              debuggable: bool = True, libs: dict[str, Path] | None = None,
              gradle_metadata: bool = True) -> Path:
    """A zip laid out like an APK: a plain-XML AndroidManifest.xml declaring the harness's
    instrumentation and benchmark activity, and `libs` ("abi/libname.so" -> local file) stored
    under lib/. With `gradle_metadata`, Gradle's output-metadata.json is written beside it."""
    debug = ' android:debuggable="true"' if debuggable else ""
    manifest = (
        f'<manifest xmlns:android="http://schemas.android.com/apk/res/android" '
        f'package="{package}" android:versionCode="{version_code}">'
        f'<application{debug}><activity android:name=".BenchmarkActivity"/></application>'
        f'<instrumentation android:name=".BenchmarkInstrumentation" '
        f'android:targetPackage="{package}"/></manifest>')
    path.parent.mkdir(parents=True, exist_ok=True)
    # Native libraries compressed, as AGP packs them with useLegacyPackaging (level 1: fast).
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as apk:
        apk.writestr("AndroidManifest.xml", manifest)
        apk.writestr("classes.dex", b"dex\n035\0")
        for name, local in (libs or {}).items():
            apk.write(local, f"lib/{name}")
    if gradle_metadata:
        (path.parent / "output-metadata.json").write_text(json.dumps({
            "version": 3, "artifactType": {"type": "APK", "kind": "Directory"},
            "applicationId": package, "variantName": "debug",
            "elements": [{"type": "SINGLE", "versionCode": version_code,
                          "versionName": "0.1.0", "outputFile": path.name}]}))
    return path
