"""Sparse-update apply cost in the C++ engine: DeepLabV3-MNV2 at 256x512 (paper config, tflite).

For each update fraction γ (share of every mapped float32 tensor's elements, F16 values, zlib,
base-relative like the public AMS code) one engine run replays a schedule of packets
(`--update_schedule`, asynchronous: frames keep running while the new interpreter is built):
an update every PERIOD frames. The engine's update records give the apply time breakdown
(decode, patch, build = create + allocate, warm = first invoke that packs weights); frames are
split into "updating" (a packet was received and its slot is being built: received_frame <=
run < swapped_frame) and "steady" (all other measured frames of the same run), so both sides
share the same process, thermal and noise conditions.

    python benchmarks/update_apply.py [--cache /tmp/mobdistill-bench] [--num_threads 2]
           [--updates 5] [--period 30]

Writes benchmarks/results/update_apply.json and update_apply.png. The export is cached outside
the repo (--cache).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np
from provenance import provenance

from mobdistill.contract import wire
from mobdistill.export.manifest import load as load_manifest
from mobdistill.runtime.device import LocalDevice
from mobdistill.runtime.engine import REPO_ROOT, run_engine
from mobdistill.runtime.frames import decode_to_raw
from mobdistill.runtime.profile import export_if_needed

RESULTS = REPO_ROOT / "benchmarks" / "results"
GAMMAS = (0.01, 0.05, 0.10, 0.20)
DEVICE, KEY = bytes(range(16)), b"bench-device-key"  # packets as deployed: bound and MACed
RESOLUTION = (256, 512)


def make_packets(manifest_path: Path, gamma: float, count: int, out: Path) -> list[Path]:
    """`count` base-relative packets touching a γ share of every mapped tensor."""
    manifest = load_manifest(manifest_path)
    base = manifest.tflite_path.read_bytes()
    sha = hashlib.sha256(base).digest()
    rng = np.random.default_rng(int(gamma * 1000))
    paths = []
    for seq in range(1, count + 1):
        patches = []
        for e in manifest.parameter_entries:
            numel = e.buffer_size // 4
            k = max(1, int(round(numel * gamma)))
            idx = np.sort(rng.choice(numel, k, replace=False))
            old = np.frombuffer(base, "<f4", numel, e.buffer_offset)[idx]
            patches.append(wire.TensorPatch(e.tensor_index, numel, idx,
                                            old + rng.normal(0, 0.01, k).astype(np.float32)))
        path = out / f"g{int(gamma * 100):02d}_{seq:03d}.mdup"
        path.write_bytes(wire.encode_update(patches, base_sha256=sha, sequence=seq,
                                            device_id=DEVICE, hmac_key=KEY,
                                            mode=wire.Mode.BASE_RELATIVE))
        paths.append(path)
    return paths


def pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def run_gamma(manifest: Path, frames: Path, gamma: float, args, work: Path) -> dict:
    packets = make_packets(manifest, gamma, args.updates, work)
    schedule = work / f"g{int(gamma * 100):02d}.schedule.jsonl"
    schedule.write_text("".join(json.dumps({"frame": args.warmup + (i + 1) * args.period,
                                            "packet": str(p)}) + "\n"
                                for i, p in enumerate(packets)))
    runs = (args.updates + 1) * args.period
    key_file = work / "update.key"
    key_file.write_bytes(KEY)
    result = run_engine(LocalDevice(work / "device"), manifest, num_threads=args.num_threads,
                        warmup_runs=args.warmup, num_runs=runs, frames_path=frames,
                        update_schedule=schedule, update_key_file=key_file,
                        update_device_id=DEVICE.hex(), timeout_s=600)
    ups = result.updates
    assert all(u["status"] == "applied" for u in ups), ups
    updating = set()
    for u in ups:
        updating.update(range(u["received_frame"], u["swapped_frame"]))
    measured = [f for f in result.frames if f.phase == "measure"]
    during = [f.invoke_us for f in measured if f.run in updating]
    steady = [f.invoke_us for f in measured if f.run not in updating]
    stage = {k: float(np.median([u[k] for u in ups]))
             for k in ("decode_us", "patch_us", "build_us", "warm_us")}
    return {
        "gamma": gamma,
        "packet_bytes": int(np.median([u["packet_bytes"] for u in ups])),
        "values": int(ups[0]["values"]),
        "updates": len(ups),
        "apply_median_us": stage,
        "apply_total_median_ms": sum(stage.values()) / 1000,
        "frames_to_swap": [u["swapped_frame"] - u["received_frame"] for u in ups],
        "invoke_updating_ms": {"n": len(during), "p50": pct(during, 50) / 1000,
                               "p99": pct(during, 99) / 1000},
        "invoke_steady_ms": {"n": len(steady), "p50": pct(steady, 50) / 1000,
                             "p99": pct(steady, 99) / 1000},
        "records": ups,
    }


def _stages_ms(stages_us: dict[str, float]) -> str:
    return ", ".join(f"{k[:-3]} {v / 1000:.1f}" for k, v in stages_us.items())


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    labels = [f"{r['gamma'] * 100:g}%" for r in rows]
    bottom = np.zeros(len(rows))
    for key in ("decode_us", "patch_us", "build_us", "warm_us"):
        vals = np.array([r["apply_median_us"][key] / 1000 for r in rows])
        a.bar(labels, vals, bottom=bottom, label=key.replace("_us", ""))
        bottom += vals
    a.set_ylabel("apply time, median (ms)")
    a.set_xlabel("update fraction γ")
    a.legend()
    a.set_title("apply breakdown (DeepLab 256x512)")
    x = np.arange(len(rows))
    for off, key, name in ((-0.2, "invoke_steady_ms", "steady"),
                           (0.2, "invoke_updating_ms", "while updating")):
        a50 = [r[key]["p50"] for r in rows]
        a99 = [r[key]["p99"] for r in rows]
        b.bar(x + off, a50, 0.4, label=f"{name} p50")
        b.scatter(x + off, a99, marker="_", s=300, color="k")
    b.set_xticks(x, labels)
    b.set_ylabel("invoke (ms); bars p50, dashes p99")
    b.set_title("frame latency with vs without updates")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path("/tmp/mobdistill-bench"))
    parser.add_argument("--num_threads", type=int, default=2)
    parser.add_argument("--updates", type=int, default=5)
    parser.add_argument("--period", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    t0 = time.monotonic()
    manifest = export_if_needed("deeplab", out_dir=args.cache, resolution=RESOLUTION)
    frames = decode_to_raw(None, args.cache / "bikes_256x512.rgb", resolution=RESOLUTION,
                           max_frames=60).path
    work = args.cache / "update_apply"
    work.mkdir(parents=True, exist_ok=True)
    rows = [run_gamma(manifest, frames, g, args, work) for g in GAMMAS]
    RESULTS.mkdir(parents=True, exist_ok=True)
    summary = {
        "model": "deeplab", "resolution": list(RESOLUTION), "num_threads": args.num_threads,
        "updates_per_gamma": args.updates, "period_frames": args.period,
        "mode": "base_relative, F16 values, zlib; asynchronous apply (--update_schedule)",
        **provenance({"num_threads": args.num_threads, "updates": args.updates,
                      "period": args.period, "warmup": args.warmup, "gammas": list(GAMMAS),
                      "resolution": list(RESOLUTION)}),
        "runtime_s": round(time.monotonic() - t0, 1),
        "results": rows,
    }
    (RESULTS / "update_apply.json").write_text(json.dumps(summary, indent=1) + "\n")
    plot(rows, RESULTS / "update_apply.png")
    for r in rows:
        print(f"γ={r['gamma'] * 100:4.0f}%  {r['packet_bytes'] / 1024:7.1f} KiB  apply "
              f"{r['apply_total_median_ms']:6.1f} ms ({_stages_ms(r['apply_median_us'])})"
              f"  invoke p50/p99 steady {r['invoke_steady_ms']['p50']:.2f}/"
              f"{r['invoke_steady_ms']['p99']:.2f} ms, updating "
              f"{r['invoke_updating_ms']['p50']:.2f}/{r['invoke_updating_ms']['p99']:.2f} ms")


if __name__ == "__main__":
    main()
