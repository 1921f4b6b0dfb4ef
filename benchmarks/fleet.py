"""A fleet on one server (AMS §4 and App. E, Fig. 10): N = 1, 2, 4, 8 live host clients on one
`mobdistill serve`, in one process or on Ray actors (`--ray`, a local cluster with 2 CPU slots),
with the Adaptive Training Rate on and off.

Each client is `runtime.live_client` (the real engine through its C facade) playing a real
playlist at its frame rate over loopback; half the devices play a moving-camera playlist
(``A``: bikes, carphone, bikes, carphone), half a fixed camera (``B``: vtest). The server trains
at the paper's update interval on one time scale (``TIME_SCALE``: T_update = δt = 10 s x scale,
T_horizon = 240 s x scale, ASR rates / scale), K and the batch cut so that 8 clients, the
teacher and training fit 2 quiet cores. Per run: per device mIoU vs the teacher over every frame,
staleness (boundary the server trained at -> the frame the engine swapped on) p50/p99, the
server's training wall time per phase and per device, the server's CPU (all its processes: Ray's
too) and peak memory. Per configuration: the mIoU loss of each device against its playlist's
single-device run, with a 95 % CI over devices, and the largest measured N under 1 mIoU point.

    nice python benchmarks/fleet.py [--counts 1 2 4 8] [--modes single ray] [--atr on off]
                                    [--deadline HH:MM] [--out results/fleet.json]

Runs are ordered by configuration (ATR on: single, Ray; then ATR off); ``--deadline`` (UTC)
stops starting new runs, and the JSON lists what was not measured.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import provenance  # noqa: E402

from mobdistill.experiments.clips import resolve_clip  # noqa: E402
from mobdistill.experiments.config import StreamConfig  # noqa: E402
from mobdistill.experiments.student import prepare_student  # noqa: E402
from mobdistill.runtime.live_client import load_clips  # noqa: E402
from mobdistill.server.live_store import DeviceRegistry  # noqa: E402
from mobdistill.server.rates import miou  # noqa: E402
from mobdistill.server.teachers import load_teacher  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
TIME_SCALE = 0.5  # T_update = δt = 5 s, T_horizon = 120 s (longer than a run: nothing expires)
# lr 0.05 and γ 20 %: on this barely pretrained tiny student, lr 1e-2 at γ 5 % moved no pixel's
# argmax within a 28 s run (a first run measured identical mIoU with 0 and 5 updates applied).
CONFIG = StreamConfig(resolution=(64, 128), aspp_channels=16, iterations=5, batch_size=2,
                      time_scale=TIME_SCALE, lr=0.05, gamma=0.2, pretrain_iterations=2,
                      num_threads=1, uplink_codec="jpeg", seed=0)
PLAYLISTS = {"A": ("bikes.mp4", "carphone_pristine.mp4", "bikes.mp4", "carphone_pristine.mp4"),
             "B": ("vtest.avi",)}
MAX_FRAMES = {"A": None, "B": 280}  # per clip: A is 28 s (whole clips), B 28 s of vtest
T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36}  # t(0.975, n-1)


# ----------------------------------------------------------------------------- processes
class Server:
    """`mobdistill serve --json` as a child; status lines kept, CPU and memory sampled over the
    whole process tree (Ray's daemons and actors are its descendants)."""

    def __init__(self, state: Path, ray: bool, atr: bool, cache: Path) -> None:
        h, w = CONFIG.resolution
        command = [sys.executable, "-m", "mobdistill", "serve", "--json", "--port", "0",
                   "--state-dir", str(state), "--teacher", CONFIG.teacher,
                   "--resolution", f"{h}x{w}", "--tiny",
                   "--pretrain-iterations", str(CONFIG.pretrain_iterations),
                   "--seed", str(CONFIG.seed), "--time-scale", str(CONFIG.time_scale),
                   "--iterations", str(CONFIG.iterations), "--batch-size",
                   str(CONFIG.batch_size), "--lr", str(CONFIG.lr), "--gamma", str(CONFIG.gamma),
                   "--num-threads", "1", "--student-cache", str(cache)]
        if ray:
            command += ["--ray", "--ray-cpus", "2"]
        if not atr:
            command.append("--no-atr")
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True,
                                        start_new_session=True)
        self.events: list[dict[str, Any]] = []
        self.listening = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        if not self.listening.wait(600) or self.process.poll() is not None:
            self.stop()
            raise RuntimeError(f"the server did not start: {self.events[-3:]}")
        self.port = next(e["port"] for e in self.events if e["event"] == "listening")
        self.manifest = Path(next(e["manifest"] for e in self.events if e["event"] == "model"))
        self.sampler = TreeSampler(self.process.pid)

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


class TreeSampler:
    """Every second: the CPU seconds and resident memory of a process and its descendants."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.cpu: dict[int, float] = {}
        self.peak_rss_mb = 0.0
        self.stopped = threading.Event()
        self.start_cpu = self._sample()
        self.start = time.monotonic()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _sample(self) -> float:
        tick = os.sysconf("SC_CLK_TCK")
        page_mb = os.sysconf("SC_PAGE_SIZE") / 2**20
        stats = {}
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(pid)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick,
                               int(fields[21]) * page_mb)
        tree, frontier = set(), {self.root}
        while frontier:
            tree |= frontier
            frontier = {p for p, (ppid, _, _) in stats.items() if ppid in frontier} - tree
        for pid in tree & stats.keys():
            self.cpu[pid] = stats[pid][1]
        self.peak_rss_mb = max(self.peak_rss_mb,
                               sum(stats[p][2] for p in tree & stats.keys()))
        return sum(self.cpu.values())

    def _loop(self) -> None:
        while not self.stopped.wait(1.0):
            self._sample()

    def finish(self) -> dict[str, float]:
        self.stopped.set()
        self.thread.join()
        wall = time.monotonic() - self.start
        used = sum(self.cpu.values()) - self.start_cpu
        return {"cpu_s": round(used, 2), "wall_s": round(wall, 2),
                "cpu_cores": round(used / wall, 3), "peak_rss_mb": round(self.peak_rss_mb, 1)}


def client(port: int, manifest: Path, playlist: str, device: bytes, key: Path,
           out: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "mobdistill.runtime.live_client",
               "--server", f"127.0.0.1:{port}", "--manifest", str(manifest),
               "--video", ",".join(resolve_clip(c) for c in PLAYLISTS[playlist]),
               "--device-id", device.hex(), "--key-file", str(key),
               "--uplink", CONFIG.uplink_codec, "--out", str(out)]
    if MAX_FRAMES[playlist]:
        command += ["--max-frames", str(MAX_FRAMES[playlist])]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


# ----------------------------------------------------------------------------- scoring
class Playlists:
    """Frames, capture times and teacher labels of each playlist, made once."""

    def __init__(self) -> None:
        self.teacher = load_teacher(CONFIG.teacher, class_names=CONFIG.teacher_classes)
        self.data: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def get(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        if name not in self.data:
            frames, times, _ = load_clips(tuple(resolve_clip(c) for c in PLAYLISTS[name]),
                                          CONFIG.resolution, MAX_FRAMES[name])
            labels = np.stack([self.teacher.labels(f) for f in frames])
            self.data[name] = (times, labels)
        return self.data[name]


def device_row(out: Path, playlist: str, playlists: Playlists) -> dict[str, Any]:
    times, labels = playlists.get(playlist)
    summary = json.loads((out / "client.json").read_text())
    n, (h, w) = len(times), CONFIG.resolution
    masks = np.fromfile(out / "masks.bin", np.uint8).reshape(n, h, w)
    scores = [miou(masks[k], labels[k], playlists.teacher.num_classes) for k in range(n)]
    stale = []
    for u in summary["updates"]:
        engine = u.get("engine") or {}
        if engine.get("status") == "applied" and u.get("boundary_s") is not None:
            stale.append(float(times[engine["swapped_frame"]] - u["boundary_s"]))
    return {"playlist": playlist, "frames": n, "miou": round(float(np.mean(scores)), 5),
            "updates_applied": len(stale), "staleness_s": [round(s, 3) for s in stale],
            "chunks_dropped": summary["counters"]["chunks_dropped"],
            "connections": summary["counters"]["connections"]}


def run_once(count: int, mode: str, atr: bool, playlist_of: list[str], cache: Path,
             playlists: Playlists) -> dict[str, Any]:
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
        server = Server(state, mode == "ray", atr, cache)
        try:
            clients = [client(server.port, server.manifest, playlist_of[k], d, key,
                              state / f"out-{k}") for k, (d, key) in enumerate(devices)]
            for c in clients:
                _, err = c.communicate(timeout=600)
                if c.returncode != 0:
                    raise RuntimeError(f"a client failed: {err[-2000:]}")
            usage = server.sampler.finish()
        finally:
            server.stop()
        rows = [device_row(state / f"out-{k}", playlist_of[k], playlists)
                for k in range(count)]
    trained = [e for e in server.events if e["event"] == "trained"]
    per_device: dict[str, float] = {}
    for e in trained:
        per_device[e["device"]] = per_device.get(e["device"], 0.0) + e["train_wall_s"]
    for row, (device, _) in zip(rows, devices):
        row["train_s"] = round(per_device.get(device.hex(), 0.0), 3)
        row["phases"] = sum(e["device"] == device.hex() for e in trained)
    walls = [e["train_wall_s"] for e in trained]
    stale = [s for r in rows for s in r["staleness_s"]]
    return {"n": count, "mode": mode, "atr": atr, "devices": rows,
            "phase_wall_s": _percentiles(walls), "staleness_s": _percentiles(stale),
            "server": usage, "load_average": list(os.getloadavg()),
            "moved": sum(e["event"] == "moved" for e in server.events)}


def _percentiles(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"count": 0, "p50": None, "p99": None, "mean": None}
    return {"count": len(values), "p50": round(float(np.percentile(values, 50)), 4),
            "p99": round(float(np.percentile(values, 99)), 4),
            "mean": round(float(np.mean(values)), 4)}


# ----------------------------------------------------------------------------- summary
def losses(runs: list[dict[str, Any]], mode: str, atr: bool) -> list[dict[str, Any]]:
    """Per N: each device's mIoU loss (points) against its playlist alone, mean and 95 % CI."""
    mine = [r for r in runs if r["mode"] == mode and r["atr"] == atr]
    alone = {r["devices"][0]["playlist"]: r["devices"][0]["miou"] for r in mine if r["n"] == 1}
    table = []
    for r in sorted(mine, key=lambda r: r["n"]):
        if r["n"] == 1:
            continue
        points = [100 * (alone[d["playlist"]] - d["miou"]) for d in r["devices"]
                  if d["playlist"] in alone]
        if len(points) < 2:
            continue
        mean, sd = float(np.mean(points)), float(np.std(points, ddof=1))
        half = T95.get(len(points) - 1, 1.96) * sd / np.sqrt(len(points))
        table.append({"n": r["n"], "loss_points_mean": round(mean, 3),
                      "loss_points_ci95": [round(mean - half, 3), round(mean + half, 3)],
                      "staleness_p50_s": r["staleness_s"]["p50"],
                      "staleness_p99_s": r["staleness_s"]["p99"]})
    return table


def devices_per_server(table: list[dict[str, Any]]) -> dict[str, Any]:
    """The largest measured N whose mean loss is under 1 point (every smaller N too)."""
    best = 1
    for row in table:
        if row["loss_points_mean"] >= 1.0:
            break
        best = row["n"]
    measured = [row["n"] for row in table]
    return {"devices": best, "measured_n": [1, *measured],
            "bounded_by_largest_measured": bool(measured) and best == max(measured)}


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (loss_ax, stale_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for name, table in summary.items():
        if not table["losses"]:
            continue
        n = [1] + [r["n"] for r in table["losses"]]
        loss = [0.0] + [r["loss_points_mean"] for r in table["losses"]]
        loss_ax.plot(n, loss, marker="o", label=name)
        stale_ax.plot([r["n"] for r in table["losses"]],
                      [r["staleness_p50_s"] or np.nan for r in table["losses"]],
                      marker="o", label=f"{name} p50")
    loss_ax.axhline(1.0, color="grey", linestyle="--", linewidth=0.8)
    loss_ax.set(xlabel="devices on one server", ylabel="mIoU loss vs one device (points)",
                xscale="log", xticks=[1, 2, 4, 8], xticklabels=["1", "2", "4", "8"])
    stale_ax.set(xlabel="devices on one server", ylabel="staleness (s)", xscale="log",
                 xticks=[2, 4, 8], xticklabels=["2", "4", "8"])
    loss_ax.legend(fontsize=8)
    stale_ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--modes", nargs="+", default=["single", "ray"])
    parser.add_argument("--atr", nargs="+", default=["on", "off"])
    parser.add_argument("--deadline", help="UTC HH:MM: start no run after this")
    parser.add_argument("--cache", type=Path, help="student cache folder")
    parser.add_argument("--out", type=Path, default=RESULTS / "fleet.json")
    args = parser.parse_args()
    cache = args.cache or Path(tempfile.mkdtemp(prefix="fleet-students-"))
    deadline = None
    if args.deadline:
        hour, minute = map(int, args.deadline.split(":"))
        deadline = dt.datetime.now(dt.timezone.utc).replace(hour=hour, minute=minute, second=0)
    playlists = Playlists()
    # Prepared here once (pretraining and a verified export): every server then finds it.
    prepare_student(CONFIG, playlists.teacher, cache=cache)
    plan = []
    for atr in args.atr:
        for mode in args.modes:
            for count in args.counts:
                if count == 1:  # one device alone on each playlist: the baselines
                    plan += [(1, mode, atr == "on", ["A"]), (1, mode, atr == "on", ["B"])]
                else:
                    plan.append((count, mode, atr == "on", ["A", "B"] * (count // 2)))
    runs, skipped = [], []
    for count, mode, atr, playlist_of in plan:
        if deadline and dt.datetime.now(dt.timezone.utc) > deadline:
            skipped.append({"n": count, "mode": mode, "atr": atr, "playlists": playlist_of})
            continue
        start = time.perf_counter()
        runs.append(run_once(count, mode, atr, playlist_of, cache, playlists))
        print(json.dumps({"n": count, "mode": mode, "atr": atr,
                          "miou": [d["miou"] for d in runs[-1]["devices"]],
                          "applied": [d["updates_applied"] for d in runs[-1]["devices"]],
                          "phase_wall_s": runs[-1]["phase_wall_s"],
                          "server": runs[-1]["server"],
                          "seconds": round(time.perf_counter() - start, 1)}), flush=True)
    summary = {}
    for mode in args.modes:
        for atr in args.atr:
            table = losses(runs, mode, atr == "on")
            summary[f"{mode}, ATR {atr}"] = {"losses": table,
                                             "devices_under_1_point": devices_per_server(table)}
    settings = {"config": {k: v for k, v in asdict(CONFIG).items()
                           if k not in ("videos", "max_frames_per_clip")},
                "time_scale": TIME_SCALE, "t_update_s": CONFIG.update_interval_s,
                "delta_t_s": CONFIG.asr_interval_s, "t_horizon_s": CONFIG.horizon_s,
                "playlists": PLAYLISTS, "max_frames_per_clip": MAX_FRAMES,
                "counts": args.counts, "modes": args.modes, "atr": args.atr,
                "ray_local_cpus": 2, "client_uplink": CONFIG.uplink_codec}
    result = {**provenance(settings), "seeds": [CONFIG.seed], "runs": runs, "summary": summary,
              "not_measured": skipped}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    plot(summary, args.out.with_suffix(".png"))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
