"""Swap stall: frame latency while sparse updates are applied, frames paced like a camera.

DeepLabV3-MNV2 at 256x512 through the engine's C facade (the calls the Android app makes):
one thread hands a bikes.mp4 frame to `segment` every 1/FPS s (a late frame runs at once, as a
camera's keep-latest analyzer does), another applies an update packet (F16 values, zlib,
base-relative, keyed and bound to the device) every PERIOD frames, the stream's arrival pattern
(one packet per training phase, T_update = 1 s). `apply_update` decodes, patches, builds the new
interpreter and maps its tensors on the engine's update worker: with idle builds (the default)
paced into the gaps between frames (docs/engine.md), with normal ones each stage started between
two frames; the next `segment` adopts it.

Frames are "updating" from the one that sees the packet arrive (received_frame) to the first one
on the new model (swapped_frame, its first Invoke), "steady" otherwise (same session, same
conditions). Reported per γ: invoke p99 updating / steady (target <= 1.10; 95 % bootstrap
interval over updates), frames from arrival to swap (p99 target <= 5 at 30 fps), the apply
stages, and the same with the engine's `update_build_priority` "normal" (builds at frame
priority), side by side in interleaved rounds (`--variants` for one). The host load
(os.getloadavg) is recorded around every session.

    python benchmarks/update_apply.py [--cache /tmp/mobdistill-bench] [--num_threads 2]
           [--fps 30] [--period 30] [--updates 10] [--rounds 3] [--variants idle normal]
    python benchmarks/update_apply.py --summarize benchmarks/results/update_apply.json

Writes benchmarks/results/update_apply.json and update_apply.png (`--name` for another stem).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
from provenance import commit, provenance

from mobdistill.contract import wire
from mobdistill.export.manifest import load as load_manifest
from mobdistill.runtime.engine import REPO_ROOT
from mobdistill.runtime.facade import FacadeEngine
from mobdistill.runtime.frames import decode_to_raw

RESULTS = REPO_ROOT / "benchmarks" / "results"
GAMMAS = (0.01, 0.05, 0.10, 0.20)
VARIANTS = ("idle", "normal")  # the update worker's priority (the engine's default: idle)
DEVICE, KEY = bytes(range(16)), b"bench-device-key"  # packets as deployed: bound and MACed
RESOLUTION = (256, 512)
SEED = 0


def export_deeplab(cache: Path) -> Path:
    """The cached export; made in a child process, because verification loads ai_edge_litert
    and the facade brings its own TFLite runtime into this one."""
    code = ("from pathlib import Path; from mobdistill.runtime.profile import export_if_needed; "
            f"print(export_if_needed('deeplab', out_dir=Path({str(cache)!r}), "
            f"resolution={RESOLUTION!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip().splitlines()[-1])


def make_packets(manifest_path: Path, gamma: float, count: int, seed: int) -> list[bytes]:
    """`count` base-relative packets (sequence 1..count) touching a γ share of every tensor."""
    manifest = load_manifest(manifest_path)
    base = manifest.tflite_path.read_bytes()
    sha = hashlib.sha256(base).digest()
    rng = np.random.default_rng([seed, int(gamma * 1000)])
    packets = []
    for seq in range(1, count + 1):
        patches = []
        for e in manifest.parameter_entries:
            numel = e.buffer_size // 4
            k = max(1, int(round(numel * gamma)))
            idx = np.sort(rng.choice(numel, k, replace=False))
            old = np.frombuffer(base, "<f4", numel, e.buffer_offset)[idx]
            patches.append(wire.TensorPatch(e.tensor_index, numel, idx,
                                            old + rng.normal(0, 0.01, k).astype(np.float32)))
        packets.append(wire.encode_update(patches, base_sha256=sha, sequence=seq,
                                          device_id=DEVICE, hmac_key=KEY,
                                          mode=wire.Mode.BASE_RELATIVE))
    return packets


class PacedSession:
    """One engine, frames every 1/fps s, packets handed to an apply thread as they arrive."""

    def __init__(self, engine: FacadeEngine, frames: np.ndarray, fps: float) -> None:
        self.engine, self.frames, self.fps = engine, frames, fps
        self.frame_log: list[dict] = []
        self.applied: list[dict] = []  # apply records as the worker returned them
        self.swapped: dict[int, int] = {}  # sequence -> first frame on the new model
        self._inbox: list[bytes] = []
        self._ready = threading.Condition()
        self._start = time.perf_counter()

    def apply_worker(self, count: int) -> None:
        for _ in range(count):
            with self._ready:
                self._ready.wait_for(lambda: self._inbox)
                packet = self._inbox.pop(0)
            self.applied.append(self.engine.apply_update(packet).record)

    def arrive(self, packet: bytes) -> None:
        with self._ready:
            self._inbox.append(packet)
            self._ready.notify()

    def frame(self, k: int) -> None:
        due = self._start + k / self.fps
        now = time.perf_counter()
        if due > now:
            time.sleep(due - now)
        began = time.perf_counter()
        _, invoke_us = self.engine.segment(self.frames[k % len(self.frames)])
        self.frame_log.append({"frame": k, "late_ms": (began - due) * 1000,
                               "invoke_ms": invoke_us / 1000,
                               "segment_ms": (time.perf_counter() - began) * 1000})
        self._note_swap()

    def _note_swap(self) -> None:
        """After a frame (untimed): the swap frame of an update whose build has finished."""
        waiting = [r for r in self.applied if r["sequence"] not in self.swapped]
        if not waiting:
            return
        last = self.engine.stats()["updates"]["last"]  # adopts a ready model, as a frame would
        if last and last["status"] == "applied" and last["swapped_frame"] is not None:
            self.swapped[last["sequence"]] = last["swapped_frame"]


def run_session(manifest: Path, frames: np.ndarray, packets: list[bytes], variant: str,
                args: argparse.Namespace) -> dict:
    """`warmup` frames, then a packet every `period` frames; frames go on until the last swap."""
    load_before = os.getloadavg()
    arrivals = {args.warmup + i * args.period: p for i, p in enumerate(packets)}
    with FacadeEngine(manifest, update_key=KEY, device_id=DEVICE,
                      num_threads=args.num_threads, update_build_priority=variant) as engine:
        session = PacedSession(engine, frames, args.fps)
        worker = threading.Thread(target=session.apply_worker, args=(len(packets),), daemon=True)
        worker.start()
        k = 0
        while k < args.warmup + len(packets) * args.period or (
                len(session.swapped) < len(packets) and k < args.warmup + 2 * len(packets) *
                args.period):
            if k in arrivals:  # arrives with frame k: the engine takes it before that frame
                session.arrive(arrivals[k])
            session.frame(k)
            k += 1
        worker.join(timeout=60)
    records = []
    for r in session.applied:
        assert r["status"] == "applied", r
        records.append({**r, "swapped_frame": session.swapped.get(r["sequence"])})
    return {"variant": variant, "frames": session.frame_log, "records": records,
            "warmup_frames": args.warmup, "load_before": list(load_before),
            "load_after": list(os.getloadavg())}


def median_ms(values_us: list[float | None]) -> float | None:
    """Median of the non-null values, in ms (older engines' records lack the field)."""
    present = [v for v in values_us if v is not None]
    return float(np.median(present)) / 1000 if present else None


def pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def updating_frames(session: dict) -> set[int]:
    """Frames from each packet's arrival to the first frame on its model (that frame's first
    Invoke is part of applying it), or to the session's end when it never swapped."""
    updating: set[int] = set()
    for r in session["records"]:
        swapped = r["swapped_frame"]
        updating.update(range(r["received_frame"],
                              swapped + 1 if swapped is not None else len(session["frames"])))
    return updating


def update_blocks(sessions: list[dict], key: str) -> list[tuple[list[float], list[float]]]:
    """Per update: the ``key`` values of the frames from its arrival to the next one's, split into
    updating and steady (`updating_frames`; the first block also takes the frames after
    warm-up). Together the blocks hold every frame after warm-up once."""
    blocks = []
    for s in sessions:
        updating = updating_frames(s)
        arrivals = sorted(r["received_frame"] for r in s["records"])
        bounds = [s["warmup_frames"], *arrivals[1:], len(s["frames"])]
        for lo, hi in zip(bounds, bounds[1:]):
            frames = s["frames"][lo:hi]
            blocks.append(([f[key] for f in frames if f["frame"] in updating],
                           [f[key] for f in frames if f["frame"] not in updating]))
    return blocks


def p99_ratio_ci(blocks: list[tuple[list[float], list[float]]], resamples: int = 2000,
                 seed: int = 0) -> list[float] | None:
    """95 % percentile-bootstrap interval of p99(updating) / p99(steady), resampling whole
    updates (a frame's latency depends on its neighbours', so frames are not independent)."""
    if len(blocks) < 2:
        return None
    rng = np.random.default_rng(seed)
    ratios = []
    for _ in range(resamples):
        pick = [blocks[i] for i in rng.integers(0, len(blocks), len(blocks))]
        up = [v for b in pick for v in b[0]]
        st = [v for b in pick for v in b[1]]
        if up and st:
            ratios.append(np.percentile(up, 99) / np.percentile(st, 99))
    return [float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))]


def summarize(sessions: list[dict], fps: float) -> dict:
    """Pooled over the rounds of one (variant, γ): updating vs steady frames of each session."""
    blocks = {key: update_blocks(sessions, key) for key in ("invoke_ms", "segment_ms")}
    during = {key: [v for up, _ in b for v in up] for key, b in blocks.items()}
    steady = {key: [v for _, st in b for v in st] for key, b in blocks.items()}
    records = [r for s in sessions for r in s["records"]]
    to_swap, stages = [], {k: [] for k in ("decode_us", "patch_us", "build_us", "warm_us")}
    priorities = set()
    for r in records:
        swapped = r["swapped_frame"]
        to_swap.append(None if swapped is None else swapped - r["received_frame"])
        for key in stages:
            stages[key].append(r[key])
        priorities.add(r["build_priority"])
    pacing = Counter(str(r.get("pacing")) for r in records)
    swaps = [n for n in to_swap if n is not None]
    row = {"updates": len(to_swap), "never_swapped": to_swap.count(None),
           "build_priority": sorted(priorities),
           "frames_to_swap": to_swap,
           "frames_to_swap_p50": pct(swaps, 50), "frames_to_swap_p99": pct(swaps, 99),
           "frames_to_swap_max": max(swaps) if swaps else None,
           "apply_median_ms": {k[:-3]: float(np.median(v)) / 1000 for k, v in stages.items()},
           "pacing": dict(sorted(pacing.items())),
           "work_cpu_ms_median": median_ms([r.get("work_cpu_us") for r in records]),
           "frame_gap_ms_median": median_ms([r.get("frame_gap_us") for r in records])}
    for key in ("invoke_ms", "segment_ms"):
        row[key] = {"updating": {"n": len(during[key]), "p50": pct(during[key], 50),
                                 "p99": pct(during[key], 99)},
                    "steady": {"n": len(steady[key]), "p50": pct(steady[key], 50),
                               "p99": pct(steady[key], 99)}}
        up, st = row[key]["updating"]["p99"], row[key]["steady"]["p99"]
        row[key]["p99_ratio"] = up / st if up is not None and st is not None else None
        row[key]["p99_ratio_ci95"] = p99_ratio_ci(blocks[key])
    # How much of the frame period the frame path itself takes when no update runs: the gaps
    # that pacing can use are the rest.
    steady_ms = row["segment_ms"]["steady"]["p50"]
    row["steady_busy_share"] = steady_ms * fps / 1000 if steady_ms is not None else None
    return row


def plot(rows: dict[str, dict[str, dict]], gammas: tuple[float, ...], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    labels = [f"{g * 100:g}%" for g in gammas]
    x = np.arange(len(gammas))
    for off, variant in ((-0.2, "idle"), (0.2, "normal")):
        if variant not in rows:
            continue
        cells = [rows[variant][str(g)] for g in gammas]
        ratios = [c["invoke_ms"]["p99_ratio"] or 0 for c in cells]
        cis = [c["invoke_ms"].get("p99_ratio_ci95") or [r, r] for c, r in zip(cells, ratios)]
        a.bar(x + off, ratios, 0.4, label=f"build at {variant} priority",
              yerr=np.array([[r - lo, hi - r] for r, (lo, hi) in zip(ratios, cis)]).T,
              capsize=3)
        b.bar(x + off, [c["frames_to_swap_p99"] or 0 for c in cells], 0.4,
              label=f"build at {variant} priority")
    a.axhline(1.10, color="k", ls="--", lw=1, label="target 1.10")
    a.set_ylabel("invoke p99, updating / steady (95 % CI)")
    b.axhline(5, color="k", ls="--", lw=1, label="target 5")
    b.set_ylabel("frames from arrival to swap, p99")
    for ax in (a, b):
        ax.set_xticks(x, labels)
        ax.set_xlabel("update fraction γ")
        ax.legend(fontsize=8)
    fig.suptitle("DeepLab 256x512, frames paced at 30 fps, one update per second")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def resummarize(path: Path) -> None:
    """`summarize` again over a saved run's sessions (for fields added after it ran)."""
    saved = json.loads(path.read_text())
    gammas = tuple(saved["settings"]["gammas"])
    fps = saved["settings"]["fps"]
    rows = {v: {str(g): summarize(saved["sessions"][f"{v}/{g}"], fps) for g in gammas}
            for v in saved["settings"]["variants"]}
    saved.update(results=rows, summarized_by_commit=commit())
    path.write_text(json.dumps(saved, indent=1) + "\n")
    plot(rows, gammas, path.with_suffix(".png"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path("/tmp/mobdistill-bench"))
    parser.add_argument("--num_threads", type=int, default=2)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--period", type=int, default=30, help="frames between update arrivals")
    parser.add_argument("--updates", type=int, default=10, help="per session")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=15, help="frames before the first update")
    parser.add_argument("--gammas", type=float, nargs="+", default=list(GAMMAS))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="update_apply",
                        help="result file stem: NAME.json and NAME.png in --out")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS),
                        help="build priorities to run (default: both, interleaved)")
    parser.add_argument("--summarize", type=Path, metavar="JSON",
                        help="recompute a saved run's results and plot from its sessions "
                             "(records the summarizing commit); runs nothing")
    args = parser.parse_args()
    if args.summarize:
        resummarize(args.summarize)
        return
    t0 = time.monotonic()
    manifest = export_deeplab(args.cache)
    raw = decode_to_raw(None, args.cache / "bikes_256x512.rgb", resolution=RESOLUTION,
                        max_frames=60)
    frames = np.fromfile(raw.path, np.uint8).reshape(raw.count, *RESOLUTION, 3)
    gammas = tuple(args.gammas)
    packets = {g: make_packets(manifest, g, args.updates, SEED) for g in gammas}
    sessions: dict[tuple[str, float], list[dict]] = {}
    for r in range(args.rounds):  # interleaved: every (variant, γ) once per round
        for g in gammas:
            for variant in (args.variants if r % 2 == 0 else args.variants[::-1]):
                s = run_session(manifest, frames, packets[g], variant, args)
                sessions.setdefault((variant, g), []).append(s)
                print(f"round {r} γ={g * 100:g}% {variant}: load {s['load_before'][0]:.1f}",
                      flush=True)
    rows = {v: {str(g): summarize(sessions[(v, g)], args.fps) for g in gammas}
            for v in args.variants}
    loads = [s["load_before"][0] for ss in sessions.values() for s in ss]
    settings = {"model": "deeplab", "resolution": list(RESOLUTION),
                "num_threads": args.num_threads, "fps": args.fps, "period_frames": args.period,
                "updates_per_session": args.updates, "rounds": args.rounds,
                "warmup_frames": args.warmup, "gammas": list(gammas), "seed": SEED,
                "variants": list(args.variants),
                "packets": "base-relative, F16 values, zlib, HMAC + device id; a γ share of "
                           "every mapped tensor",
                "path": "C facade (md_engine_segment / md_engine_apply_update), in-process"}
    summary = {**provenance(settings),
               "host_load_1min": {"min": min(loads), "median": float(np.median(loads)),
                                  "max": max(loads), "cores": os.cpu_count()},
               "runtime_s": round(time.monotonic() - t0, 1), "results": rows,
               "sessions": {f"{v}/{g}": ss for (v, g), ss in sessions.items()}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(summary, indent=1) + "\n")
    plot(rows, gammas, args.out / f"{args.name}.png")
    for v in args.variants:
        for g in gammas:
            c = rows[v][str(g)]
            inv = c["invoke_ms"]
            print(f"{v:6s} γ={g * 100:4.0f}%  invoke p99 steady {inv['steady']['p99']:.2f} "
                  f"updating {inv['updating']['p99']:.2f} ms "
                  f"(x{c['invoke_ms']['p99_ratio']}); frames to swap p50/p99/max "
                  f"{c['frames_to_swap_p50']}/{c['frames_to_swap_p99']}/{c['frames_to_swap_max']}"
                  f"  apply {c['apply_median_ms']}; pacing {c['pacing']}, work "
                  f"{c['work_cpu_ms_median']} ms CPU, gap {c['frame_gap_ms_median']} ms, frame "
                  f"path {c['steady_busy_share'] or 0:.0%} of the period")


if __name__ == "__main__":
    main()
