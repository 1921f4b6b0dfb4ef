"""A fleet on one server (AMS §4 and App. E, Fig. 10): N = 1, 2, 4, 8 live host clients on one
`mobdistill serve`, in one process or on Ray actors (`--ray`, a local cluster with 2 CPU slots),
with the Adaptive Training Rate on and off; from these, devices per server at under 1 mIoU
point of loss against one device.

Each client is `runtime.live_client` (the real engine through its C facade) playing a real
playlist at its frame rate over loopback; half the devices play ``A`` (people close up:
carphone, cup, carphone distorted, cup, carphone; 28 s), half ``B`` (a fixed camera over a
campus path: 28 s of vtest, what ATR slows down for). The starting student is pretrained briefly
on the pretraining clips only (none of these), so adapting to a device's own clips pays: the
N = 1 runs report each playlist's mIoU with AMS against the same starting model with no
adaptation (every frame through the same engine, no server).

Time scale: the paper's clock x ``TIME_SCALE`` (T_update = δt = 10 s x 0.25 = 2.5 s, T_horizon
= 240 s x 0.25 = 60 s, ASR rates / 0.25), with the paper's K = 20, lr 1e-3 and γ 5 % on a
32x64 student, so a 28 s playlist gets ~11 phases alone. A phase takes ~1-1.5 s on one core
here, so one trainer thread keeps up with about two devices: N = 1 leaves it idle half the
time, N = 8 asks for several times what it can run, so updates come later (staleness) — the
contention Fig. 10 is about, at a scale where 8 clients, the teacher and training fit the 2
cores (the JSON records the CPU all processes used, the server's share, and each client's lag
behind real time).

Per run: per device mIoU vs the teacher over every frame, staleness (the upload the server
trained on -> the frame the engine swapped on) p50/p99, the server's training time per phase
and per device and the wait before each phase, the server's CPU (all its processes: Ray's too)
and peak memory, the host's load average. Per configuration: each device's mIoU loss against
its playlist's single-device run, mean and 95 % CI over devices; devices per server = the
largest measured N whose mean loss (and, separately, whose CI's upper end) is under 1 point.
Between measured N, a linear interpolation of the loss is reported as a model, not a result.

    python benchmarks/fleet.py [--counts 1 2 4 8] [--modes single ray] [--atr on off]
        [--lock /path/to/bench.lock] [--autogroup-nice -20] [--deadline HH:MM]
        [--out results/fleet.json]

Preparation (pretraining, export, teacher labels, the no-adaptation masks) runs first in a
`nice -n 19` child. Every run holds ``--lock`` (flock) while its server and clients run, so
timing benchmarks on a shared host never overlap. Runs merge into ``--out`` (same settings
only; a run with the same configuration is replaced), so configurations can be measured in
separate invocations. On Linux with the autogroup scheduler, plain `nice` does not reach across
sessions: ``--autogroup-nice`` gives the run's sessions (this one, the server's, Ray's) that
priority while the lock is held, and the JSON records it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import provenance  # noqa: E402

from mobdistill.experiments import pretrain  # noqa: E402
from mobdistill.experiments.clips import resolve_clip  # noqa: E402
from mobdistill.experiments.config import StreamConfig  # noqa: E402
from mobdistill.experiments.live import client_command, serve_arguments  # noqa: E402
from mobdistill.server.live_store import DeviceRegistry  # noqa: E402
from mobdistill.server.rates import miou  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
TIME_SCALE = 0.25
PLAYLISTS = {"A": ("carphone_pristine.mp4", "cup.mp4", "carphone_distorted.mp4", "cup.mp4",
                   "carphone_pristine.mp4"),
             "B": ("vtest.avi",)}
MAX_FRAMES = {"A": None, "B": 280}  # per clip: A is 28 s (whole clips), B 28 s of vtest
# The starting student: 200 Adam steps on the pretraining clips (docs/clips.md; none of the
# playlists' clips), the paper benchmark's cached one. The paper's K, lr and γ.
CONFIG = StreamConfig(resolution=(32, 64), aspp_channels=16, iterations=20, batch_size=4,
                      time_scale=TIME_SCALE, lr=1e-3, gamma=0.05, pretrain_iterations=200,
                      num_threads=1, uplink_codec="jpeg", seed=0)
RAY_CPUS = 2
T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36}  # t(0.975, n-1)


# ----------------------------------------------------------------------------- processes
class Server:
    """`mobdistill serve --json` as a child; status lines kept, CPU and memory sampled over the
    whole process tree (Ray's daemons and actors are its descendants)."""

    def __init__(self, state: Path, ray: bool, atr: bool, cache: Path,
                 autogroup_nice: int | None) -> None:
        command = [sys.executable, "-m", "mobdistill", "serve", "--json", "--port", "0",
                   "--state-dir", str(state), *serve_arguments(CONFIG, cache)]
        if ray:
            command += ["--ray", "--ray-cpus", str(RAY_CPUS)]
        if not atr:
            command.append("--no-atr")
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True,
                                        start_new_session=True)
        if autogroup_nice is not None:
            set_autogroup_nice(self.process.pid, autogroup_nice)
        self.events: list[dict[str, Any]] = []
        self.listening = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        if not self.listening.wait(600) or self.process.poll() is not None:
            self.stop()
            raise RuntimeError(f"the server did not start: {self.events[-3:]}")
        self.port = next(e["port"] for e in self.events if e["event"] == "listening")
        self.manifest = Path(next(e["manifest"] for e in self.events if e["event"] == "model"))
        self.sampler = TreeSampler([self.process.pid], autogroup_nice)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("{"):
                self.events.append(json.loads(line))
                if self.events[-1]["event"] == "listening":
                    self.listening.set()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.reader.join(10)


def set_autogroup_nice(pid: int | str, nice: int) -> None:
    """Linux's autogroup scheduler shares the CPU between sessions first, so another session's
    `nice -n 19` work still takes its full share from a timed run; a run's own session (and
    Ray's, which start their own) gets a priority here instead."""
    try:
        Path(f"/proc/{pid}/autogroup").write_text(str(nice))
    except OSError:
        pass  # no autogroup scheduler, or the process is gone


class TreeSampler:
    """Every second: the CPU seconds and resident memory of some processes and their
    descendants, and the whole host's busy CPU (other users' work included)."""

    def __init__(self, roots: list[int], autogroup_nice: int | None = None) -> None:
        self.roots = set(roots)
        self.autogroup_nice = autogroup_nice
        self.cpu: dict[int, float] = {}
        self.peak_rss_mb = 0.0
        self.stopped = threading.Event()
        self.start_cpu = self._sample()
        self.start_host = _host_cpu()
        self.start = time.monotonic()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _sample(self) -> float:
        tick = os.sysconf("SC_CLK_TCK")
        page_mb = os.sysconf("SC_PAGE_SIZE") / 2**20
        stats = {}
        for entry in filter(str.isdigit, os.listdir("/proc")):
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick,
                               int(fields[21]) * page_mb)
        tree, frontier = set(), set(self.roots)
        while frontier:
            tree |= frontier
            frontier = {p for p, (ppid, _, _) in stats.items() if ppid in frontier} - tree
        for pid in tree & stats.keys():
            self.cpu[pid] = stats[pid][1]
            if self.autogroup_nice is not None:
                set_autogroup_nice(pid, self.autogroup_nice)
        self.peak_rss_mb = max(self.peak_rss_mb,
                               sum(stats[p][2] for p in tree & stats.keys()))
        return sum(self.cpu.values())

    def _loop(self) -> None:
        while not self.stopped.wait(1.0):
            self._sample()

    def finish(self) -> dict[str, float]:
        self.stopped.set()
        self.thread.join()
        self._sample()
        wall = time.monotonic() - self.start
        used = sum(self.cpu.values()) - self.start_cpu
        busy, total = (b - a for a, b in zip(self.start_host, _host_cpu()))
        return {"cpu_s": round(used, 2), "wall_s": round(wall, 2),
                "cpu_cores": round(used / wall, 3), "peak_rss_mb": round(self.peak_rss_mb, 1),
                "host_busy_cores": round((os.cpu_count() or 1) * busy / max(total, 1), 3)}


def _host_cpu() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def client(port: int, manifest: Path, playlist: str, device: bytes, key: Path,
           out: Path) -> subprocess.Popen:
    config = replace(CONFIG, max_frames_per_clip=MAX_FRAMES[playlist])
    command = client_command(port, manifest, [resolve_clip(c) for c in PLAYLISTS[playlist]],
                             device, key, out, config)
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


@contextlib.contextmanager
def holding(lock: Path | None, autogroup_nice: int | None) -> Iterator[None]:
    """The shared host's benchmark lock (flock, as `flock(1)` takes it), if one is given, and
    while it is held this session's autogroup priority."""
    with contextlib.ExitStack() as stack:
        if lock is not None:
            handle = stack.enter_context(open(lock, "a"))
            fcntl.flock(handle, fcntl.LOCK_EX)
            stack.callback(fcntl.flock, handle, fcntl.LOCK_UN)
        if autogroup_nice is not None:
            set_autogroup_nice("self", autogroup_nice)
            stack.callback(set_autogroup_nice, "self", 0)
        yield


# ----------------------------------------------------------------------------- preparation
def prepare(cache: Path, work: Path) -> None:
    """The starting point (pretrained, exported), each playlist's teacher labels and the
    starting model's masks on every frame (no adaptation), through the client's own engine."""
    from mobdistill.experiments.student import prepare_student
    from mobdistill.runtime.facade import FacadeEngine
    from mobdistill.runtime.live_client import load_clips
    from mobdistill.server.teachers import load_teacher

    teacher = load_teacher(CONFIG.teacher, class_names=CONFIG.teacher_classes)
    _, manifest = prepare_student(CONFIG, teacher, cache=cache)
    for name in PLAYLISTS:
        path = work / f"playlist-{name}.npz"
        if path.is_file():
            continue
        frames, times, _ = load_clips(tuple(resolve_clip(c) for c in PLAYLISTS[name]),
                                      CONFIG.resolution, MAX_FRAMES[name])
        labels = np.stack([teacher.labels(f) for f in frames])
        engine = FacadeEngine(Path(manifest), update_key=None, device_id=bytes(16),
                              insecure_updates=True)
        start = np.stack([engine.segment(f)[0] for f in frames])
        engine.close()
        np.savez_compressed(path, times=times, labels=labels, no_adaptation=start,
                            num_classes=teacher.num_classes)


class Playlists:
    """What `prepare` saved: capture times, teacher labels, the no-adaptation masks."""

    def __init__(self, work: Path) -> None:
        self.data = {name: dict(np.load(work / f"playlist-{name}.npz")) for name in PLAYLISTS}

    def miou(self, name: str, masks: np.ndarray) -> float:
        data = self.data[name]
        classes = int(data["num_classes"])
        return float(np.mean([miou(m, t, classes) for m, t in zip(masks, data["labels"])]))

    def no_adaptation(self, name: str) -> float:
        return self.miou(name, self.data[name]["no_adaptation"])


# ----------------------------------------------------------------------------- one run
def device_row(out: Path, playlist: str, playlists: Playlists) -> dict[str, Any]:
    times = playlists.data[playlist]["times"]
    summary = json.loads((out / "client.json").read_text())
    n, (h, w) = len(times), CONFIG.resolution
    masks = np.fromfile(out / "masks.bin", np.uint8).reshape(n, h, w)
    stale = []
    for u in summary["updates"]:
        engine = u.get("engine") or {}
        if engine.get("status") == "applied" and u.get("boundary_s") is not None:
            stale.append(float(times[engine["swapped_frame"]] - u["boundary_s"]))
    return {"playlist": playlist, "frames": n, "miou": round(playlists.miou(playlist, masks), 5),
            "miou_no_adaptation": round(playlists.no_adaptation(playlist), 5),
            "updates_applied": len(stale), "staleness_s": [round(s, 3) for s in stale],
            "chunks_dropped": summary["counters"]["chunks_dropped"],
            "connections": summary["counters"]["connections"],
            "lag_s": round(summary["wall_s"] - summary["duration_s"], 3)}


def phase_waits(events: list[dict[str, Any]]) -> list[float]:
    """Per phase: seconds from the upload that made the device due to the phase's start
    (server clock) — how long it queued behind other devices' phases."""
    waits: list[float] = []
    due_at: dict[str, float] = {}
    for e in events:
        if e["event"] == "frames" and e.get("due"):
            due_at.setdefault(e["device"], e["time"])
        elif e["event"] == "trained" and e["device"] in due_at:
            waits.append(max(0.0, e["time"] - e["train_wall_s"] - due_at.pop(e["device"])))
    return waits


def run_once(count: int, mode: str, atr: bool, playlist_of: list[str], cache: Path,
             playlists: Playlists, lock: Path | None,
             autogroup_nice: int | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="fleet-") as tmp:
        state = Path(tmp)
        registry = DeviceRegistry(state / "devices.json")
        devices = []
        for k in range(count):
            entry = registry.enroll(f"device-{k}")
            key = state / f"device-{k}.key"
            key.write_bytes(entry.key)
            key.chmod(0o600)
            devices.append((entry.device_id, key))
        with holding(lock, autogroup_nice):
            load_start = list(os.getloadavg())
            started = time.time()
            server = Server(state, mode == "ray", atr, cache, autogroup_nice)
            try:
                clients = [client(server.port, server.manifest, playlist_of[k], d, key,
                                  state / f"out-{k}") for k, (d, key) in enumerate(devices)]
                everything = TreeSampler([server.process.pid, *(c.pid for c in clients)],
                                         autogroup_nice)
                for c in clients:
                    _, err = c.communicate(timeout=600)
                    if c.returncode != 0:
                        raise RuntimeError(f"a client failed: {err[-2000:]}")
                usage, all_usage = server.sampler.finish(), everything.finish()
            finally:
                server.stop()
            load_end = list(os.getloadavg())
        rows = [device_row(state / f"out-{k}", playlist_of[k], playlists)
                for k in range(count)]
    trained = [e for e in server.events if e["event"] == "trained"]
    for row, (device, _) in zip(rows, devices):
        mine = [e["train_wall_s"] for e in trained if e["device"] == device.hex()]
        row["train_s"], row["phases"] = round(sum(mine), 3), len(mine)
    stale = [s for r in rows for s in r["staleness_s"]]
    return {"n": count, "mode": mode, "atr": atr, "playlists": playlist_of, "seed": CONFIG.seed,
            "started_utc": dt.datetime.fromtimestamp(started, dt.timezone.utc).isoformat(),
            "devices": rows,
            "phase_wall_s": _percentiles([e["train_wall_s"] for e in trained]),
            "phase_wait_s": _percentiles(phase_waits(server.events)),
            "staleness_s": _percentiles(stale),
            "train_s_per_device": round(float(np.mean([r["train_s"] for r in rows])), 3),
            "server": usage, "server_and_clients": all_usage,
            "client_lag_s_max": max(r["lag_s"] for r in rows),
            "load_average_start": load_start, "load_average_end": load_end,
            "moved": sum(e["event"] == "moved" for e in server.events),
            "ray_environment": {k: v for k, v in os.environ.items() if k.startswith("RAY_")}}


def _percentiles(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"count": 0, "p50": None, "p99": None, "mean": None}
    return {"count": len(values), "p50": round(float(np.percentile(values, 50)), 4),
            "p99": round(float(np.percentile(values, 99)), 4),
            "mean": round(float(np.mean(values)), 4)}


# ----------------------------------------------------------------------------- summary
def _mean_ci(points: list[float]) -> tuple[float, list[float] | None]:
    mean = float(np.mean(points))
    if len(points) < 2:
        return mean, None
    half = T95.get(len(points) - 1, 1.96) * float(np.std(points, ddof=1)) / np.sqrt(len(points))
    return mean, [round(mean - half, 3), round(mean + half, 3)]


def summarise(runs: list[dict[str, Any]], mode: str, atr: bool) -> dict[str, Any]:
    """Per N: each device's mIoU loss (points) against its playlist alone (same seed), mean and
    95 % CI over the devices of every seed; at N = 1 the gain of AMS over no adaptation."""
    mine = [r for r in runs if r["mode"] == mode and r["atr"] == atr]
    alone = {(r["seed"], r["devices"][0]["playlist"]): r["devices"][0]
             for r in mine if r["n"] == 1}
    gain = {f"seed {seed} {name}": {
        "ams": row["miou"], "no_adaptation": row["miou_no_adaptation"],
        "gain_points": round(100 * (row["miou"] - row["miou_no_adaptation"]), 2)}
        for (seed, name), row in sorted(alone.items())}
    table = []
    for n in sorted({r["n"] for r in mine} - {1}):
        at_n = [r for r in mine if r["n"] == n]
        points = [100 * (alone[r["seed"], d["playlist"]]["miou"] - d["miou"])
                  for r in at_n for d in r["devices"] if (r["seed"], d["playlist"]) in alone]
        if not points:
            continue
        mean, ci = _mean_ci(points)

        def over_runs(key: str, part: str | None = None) -> float | None:
            values = [(r[part] if part else r)[key] for r in at_n]
            values = [v for v in values if v is not None]
            return round(float(np.mean(values)), 4) if values else None

        stale = [s for r in at_n for d in r["devices"] for s in d["staleness_s"]]
        table.append({"n": n, "seeds": sorted(r["seed"] for r in at_n),
                      "devices": len(points), "loss_points_mean": round(mean, 3),
                      "loss_points_ci95": ci,
                      "staleness_p50_s": _percentiles(stale)["p50"],
                      "staleness_p99_s": _percentiles(stale)["p99"],
                      "updates_applied_per_device": round(float(np.mean(
                          [d["updates_applied"] for r in at_n for d in r["devices"]])), 2),
                      "phase_wall_p50_s": over_runs("p50", "phase_wall_s"),
                      "phase_wait_p50_s": over_runs("p50", "phase_wait_s"),
                      "train_s_per_device": over_runs("train_s_per_device"),
                      "server_cpu_cores": round(float(np.mean(
                          [r["server"]["cpu_cores"] for r in at_n])), 3),
                      "server_peak_rss_mb": max(r["server"]["peak_rss_mb"] for r in at_n),
                      "all_cpu_cores": round(float(np.mean(
                          [r["server_and_clients"]["cpu_cores"] for r in at_n])), 3),
                      "client_lag_s_max": max(r["client_lag_s_max"] for r in at_n)})
    return {"n1_vs_no_adaptation": gain, "losses": table,
            "devices_under_1_point": devices_per_server(table)}


def devices_per_server(table: list[dict[str, Any]]) -> dict[str, Any]:
    """The largest measured N whose mean loss is under 1 point (every smaller N too); the same
    with the CI's upper end; and, as a model, where a linear interpolation crosses 1 point."""
    def largest(under) -> int:
        best = 1
        for row in table:
            if not under(row):
                break
            best = row["n"]
        return best

    by_mean = largest(lambda r: r["loss_points_mean"] < 1.0)
    by_ci = largest(lambda r: r["loss_points_ci95"] is not None and r["loss_points_ci95"][1] < 1)
    points = [(1, 0.0)] + [(r["n"], r["loss_points_mean"]) for r in table]
    crossing = None
    for (n0, l0), (n1, l1) in zip(points, points[1:]):
        if l0 < 1.0 <= l1:
            crossing = round(n0 + (1.0 - l0) * (n1 - n0) / (l1 - l0), 2)
            break
    measured = [1, *(r["n"] for r in table)]
    return {"measured_mean_under_1": by_mean, "measured_ci_upper_under_1": by_ci,
            "measured_n": measured,
            "bounded_by_largest_measured": by_mean == max(measured),
            "model_linear_crossing_n": crossing,
            "model_note": "linear interpolation of the mean loss between measured N: a model, "
                          "not a measurement"}


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, (loss_ax, stale_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    for k, (name, table) in enumerate(summary.items()):
        rows = table["losses"]
        if not rows:
            continue
        shift = 1 + 0.03 * (k - 1.5)  # side by side on the log axis
        n = [1] + [r["n"] for r in rows]
        loss = [0.0] + [r["loss_points_mean"] for r in rows]
        low = [0.0] + [r["loss_points_mean"] - r["loss_points_ci95"][0]
                       if r["loss_points_ci95"] else 0.0 for r in rows]
        high = [0.0] + [r["loss_points_ci95"][1] - r["loss_points_mean"]
                        if r["loss_points_ci95"] else 0.0 for r in rows]
        line = loss_ax.errorbar([x * shift for x in n], loss, yerr=[low, high], marker="o",
                                capsize=3, label=name)
        color = line.lines[0].get_color()
        stale_ax.plot([r["n"] for r in rows], [r["staleness_p50_s"] or np.nan for r in rows],
                      marker="o", color=color, label=f"{name} p50")
        stale_ax.plot([r["n"] for r in rows], [r["staleness_p99_s"] or np.nan for r in rows],
                      marker="x", linestyle="--", color=color, label=f"{name} p99")
    loss_ax.axhline(1.0, color="grey", linestyle="--", linewidth=0.8)
    loss_ax.set(xlabel="devices on one server", ylabel="mIoU loss vs one device (points)",
                xscale="log", xticks=[1, 2, 4, 8], xticklabels=["1", "2", "4", "8"],
                title="mean, 95 % CI over devices")
    stale_ax.set(xlabel="devices on one server", ylabel="staleness (s)", xscale="log",
                 xticks=[2, 4, 8], xticklabels=["2", "4", "8"],
                 title="upload trained on -> swap frame")
    for ax in (loss_ax, stale_ax):
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    loss_ax.legend(fontsize=8)
    stale_ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


# ----------------------------------------------------------------------------- main
def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    return {"config": {k: v for k, v in asdict(CONFIG).items()
                       if k not in ("videos", "max_frames_per_clip", "seed")},
            "seed": "per run (`seed`): the starting student (pretrained with that seed) and "
                    "the server's sampling",
            "pretraining": "200 steps on the pretraining clips; the clips played here are none "
                           "of them (docs/clips.md)",
            "time_scale": TIME_SCALE, "t_update_s": CONFIG.update_interval_s,
            "delta_t_s": CONFIG.asr_interval_s, "t_horizon_s": CONFIG.horizon_s,
            "playlists": PLAYLISTS, "max_frames_per_clip": MAX_FRAMES,
            "ray_local_cpus": RAY_CPUS, "client_uplink": CONFIG.uplink_codec,
            "gpu": "none: this host has no GPU; every figure is a 2-core CPU measurement",
            "autogroup_nice_during_runs": args.autogroup_nice}


def plan_runs(args: argparse.Namespace) -> list[tuple[int, str, bool, list[str]]]:
    plan = []
    for atr in args.atr:
        for mode in args.modes:
            for count in args.counts:
                if count == 1:  # one device alone on each playlist: the baselines
                    plan += [(1, mode, atr == "on", ["A"]), (1, mode, atr == "on", ["B"])]
                else:
                    plan.append((count, mode, atr == "on", ["A", "B"] * (count // 2)))
    return plan


def main() -> int:
    global CONFIG
    parser = argparse.ArgumentParser()
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--modes", nargs="+", default=["single", "ray"])
    parser.add_argument("--atr", nargs="+", default=["on", "off"])
    parser.add_argument("--seed", type=int, default=CONFIG.seed,
                        help="starting student (pretrained with this seed) and server sampling")
    parser.add_argument("--lr", type=float, default=CONFIG.lr, help="server Adam step")
    parser.add_argument("--gamma", type=float, default=CONFIG.gamma,
                        help="fraction of parameters each phase trains and sends")
    parser.add_argument("--lock", type=Path, help="hold this flock file during each run")
    parser.add_argument("--autogroup-nice", type=int,
                        help="during each run, this autogroup nice for the run's sessions "
                             "(Linux; e.g. -20 on a host where other sessions' work is niced)")
    parser.add_argument("--deadline", help="UTC HH:MM: start no run after this")
    parser.add_argument("--cache", type=Path, default=pretrain.cache_root(),
                        help="pretrained students (default: the one `mobdistill stream` uses)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) /
                        "mobdistill-fleet", help="teacher labels and no-adaptation masks")
    parser.add_argument("--prepare-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS / "fleet.json")
    args = parser.parse_args()
    CONFIG = replace(CONFIG, lr=args.lr, gamma=args.gamma, seed=args.seed)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.prepare_only:
        prepare(args.cache, args.work)
        return 0
    # Preparation is not timed: it runs at the lowest priority, before any lock is taken.
    subprocess.run(["nice", "-n", "19", sys.executable, __file__, "--prepare-only", "--cache",
                    str(args.cache), "--work", str(args.work), "--seed", str(args.seed)],
                   check=True)
    playlists = Playlists(args.work)
    deadline = None
    if args.deadline:
        hour, minute = map(int, args.deadline.split(":"))
        deadline = dt.datetime.now(dt.timezone.utc).replace(hour=hour, minute=minute, second=0)
    settings = settings_of(args)
    runs: list[dict[str, Any]] = []
    if args.out.is_file():  # earlier invocations' runs, when measured with these settings
        earlier = json.loads(args.out.read_text())
        if earlier.get("settings") == json.loads(json.dumps(settings)):
            runs = earlier["runs"]
    skipped = []
    for count, mode, atr, playlist_of in plan_runs(args):
        if deadline and dt.datetime.now(dt.timezone.utc) > deadline:
            skipped.append({"n": count, "mode": mode, "atr": atr, "playlists": playlist_of})
            continue
        start = time.perf_counter()
        run = run_once(count, mode, atr, playlist_of, args.cache, playlists, args.lock,
                       args.autogroup_nice)
        runs = [r for r in runs if (r["n"], r["mode"], r["atr"], r["playlists"], r["seed"]) !=
                (count, mode, atr, playlist_of, args.seed)] + [run]
        print(json.dumps({"n": count, "mode": mode, "atr": atr,
                          "miou": [d["miou"] for d in run["devices"]],
                          "applied": [d["updates_applied"] for d in run["devices"]],
                          "phase_wall_s": run["phase_wall_s"], "server": run["server"],
                          "load": run["load_average_start"],
                          "seconds": round(time.perf_counter() - start, 1)}), flush=True)
        write(args.out, settings, runs, skipped)
    write(args.out, settings, runs, skipped)
    return 0


def write(out: Path, settings: dict[str, Any], runs: list[dict[str, Any]],
          skipped: list[dict[str, Any]]) -> None:
    summary = {}
    for mode in ("single", "ray"):
        for atr in (True, False):
            if any(r["mode"] == mode and r["atr"] == atr for r in runs):
                summary[f"{mode}, ATR {'on' if atr else 'off'}"] = summarise(runs, mode, atr)
    result = {**provenance(settings), "seeds": sorted({r["seed"] for r in runs}), "runs": runs,
              "summary": summary,
              "not_measured_this_invocation": skipped}
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial")
    partial.write_text(json.dumps(result, indent=1) + "\n")
    partial.replace(out)
    plot(summary, out.with_suffix(".png"))


if __name__ == "__main__":
    sys.exit(main())
