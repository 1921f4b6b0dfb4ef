"""Update build cost, side by side (issue 14.2): what reusing packed weights saves per update.

DeepLabV3-MNV2 at 256x512 through the engine CLI on the host, 2 threads, one base-relative
packet before every other run, each applied before its run (`--update_blocking`: nothing runs
beside the update, so the stage times are its own). Two variants, each a separate engine
process, interleaved over rounds: the default (`cache`: XNNPACK's packed weights of tensors the
packet left unchanged are taken from the running model) and `no_cache`
(`--update_reuse_packed_weights=false`: every build packs every tensor, the engine before it).
Two packet patterns: `all` touches a γ share of every mapped tensor (as `update_apply.py` and
as AMS's global top-γ selection does), `head` a γ share of the last `--head` tensors only. Per
variant, pattern and γ: medians over updates of the build (model + delegate + interpreter +
AllocateTensors), the tensor mapping (TouchTensors), the worker's CPU time for the whole update
(decode to build) and the first frame on the new model; ratios to `no_cache` with 95 %
bootstrap intervals (resampling updates).

    python benchmarks/update_build_cost.py [--rounds 4] [--updates 10] [--gammas 0.01 0.05 0.2]
                                           [--head 4]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from provenance import provenance
from update_apply import DEVICE, KEY, RESOLUTION, SEED, export_deeplab, make_packets

from mobdistill.runtime.device import LocalDevice
from mobdistill.runtime.engine import run_engine
from mobdistill.runtime.frames import decode_to_raw

RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = {"cache": True, "no_cache": False}  # EngineOptions.update_reuse_packed_weights
PATTERNS = ("all", "head")
STAGES = ("build_us", "warm_us", "work_cpu_us", "first_frame_us")


def run_variant(device: LocalDevice, manifest: Path, frames: Path, packets: list[bytes],
                variant: str, work: Path, num_threads: int) -> list[dict]:
    """One engine process: a packet before runs 2, 4, ...; the records of its updates, each
    with the first frame's invoke time on the new model."""
    work.mkdir(parents=True, exist_ok=True)
    lines = []
    for k, packet in enumerate(packets):
        path = work / f"p{k}.mdup"
        path.write_bytes(packet)
        lines.append(json.dumps({"frame": 2 * (k + 1), "packet": str(path)}))
    schedule = work / "schedule.jsonl"
    schedule.write_text("\n".join(lines) + "\n")
    key = work / "key"
    key.write_bytes(KEY)
    result = run_engine(device, manifest, frames_path=frames, num_threads=num_threads,
                        warmup_runs=0, num_runs=2 * len(packets) + 2, update_schedule=schedule,
                        update_blocking=True, update_key_file=key,
                        update_device_id=DEVICE.hex(), out_dir=work / "run",
                        update_reuse_packed_weights=VARIANTS[variant])
    invoke = {f.run: f.invoke_us for f in result.frames}
    records = []
    for u in result.updates:
        if u["status"] != "applied":
            raise RuntimeError(f"{variant}: update {u['sequence']} rejected: {u['message']}")
        records.append({**{k: u[k] for k in ("sequence", "build_us", "warm_us", "work_cpu_us",
                                              "packed_reused", "packed_new")},
                        "first_frame_us": invoke.get(u["swapped_frame"]),
                        "steady_frame_us": invoke.get(u["swapped_frame"] + 1)})
    return records


def bootstrap_ratio(a: list[float], b: list[float], rng: np.random.Generator,
                    n: int = 2000) -> list[float]:
    """95 % percentile interval of median(a) / median(b), resampling each side."""
    xa, xb = np.asarray(a), np.asarray(b)
    ratios = [np.median(rng.choice(xa, xa.size)) / np.median(rng.choice(xb, xb.size))
              for _ in range(n)]
    return [float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))]


def summarize(records: dict[str, list[dict]]) -> dict[str, dict]:
    rng = np.random.default_rng(0)
    rows: dict[str, dict] = {}
    for variant, recs in records.items():
        row: dict = {"updates": len(recs)}
        for stage in STAGES:
            values = [r[stage] for r in recs if r[stage] is not None]
            base = [r[stage] for r in records["no_cache"] if r[stage] is not None]
            row[stage] = {"median_ms": float(np.median(values)) / 1000,
                          "ratio_to_no_cache": float(np.median(values) / np.median(base)),
                          "ratio_ci95": bootstrap_ratio(values, base, rng)}
        steady = [r["steady_frame_us"] for r in recs if r["steady_frame_us"] is not None]
        row["steady_frame_ms_median"] = float(np.median(steady)) / 1000
        reused = [r["packed_reused"] for r in recs if r["packed_reused"] is not None]
        row["packed_reused_median"] = float(np.median(reused)) if reused else None
        fresh = [r["packed_new"] for r in recs if r["packed_new"] is not None]
        row["packed_new_median"] = float(np.median(fresh)) if fresh else None
        rows[variant] = row
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path("/tmp/mobdistill-bench"))
    parser.add_argument("--num_threads", type=int, default=2)
    parser.add_argument("--updates", type=int, default=10, help="per engine process")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--gammas", type=float, nargs="+", default=[0.01, 0.05, 0.2])
    parser.add_argument("--head", type=int, default=4,
                        help="tensors the `head` pattern touches (the last mapped ones)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="update_build_cost")
    args = parser.parse_args()
    t0 = time.monotonic()
    manifest = export_deeplab(args.cache)
    raw = decode_to_raw(None, args.cache / "bikes_256x512.rgb", resolution=RESOLUTION,
                        max_frames=60)
    cells = [(p, g) for p in PATTERNS for g in args.gammas]
    packets = {(p, g): make_packets(manifest, g, args.updates, SEED,
                                    last=args.head if p == "head" else None) for p, g in cells}
    records: dict[tuple[str, float], dict[str, list[dict]]] = {
        c: {v: [] for v in VARIANTS} for c in cells}
    loads = []
    with tempfile.TemporaryDirectory() as tmp, LocalDevice(Path(tmp) / "device") as device:
        for r in range(args.rounds):  # interleaved: every (pattern, γ, variant) once a round
            order = list(VARIANTS) if r % 2 == 0 else list(VARIANTS)[::-1]
            for p, g in cells:
                for variant in order:
                    loads.append(os.getloadavg()[0])
                    work = Path(tmp) / f"r{r}-{p}-{g}-{variant}"
                    records[(p, g)][variant] += run_variant(
                        device, manifest, raw.path, packets[(p, g)], variant, work,
                        args.num_threads)
                    print(f"round {r} {p} γ={g * 100:g}% {variant}: load {loads[-1]:.1f}",
                          flush=True)
    rows = {f"{p}/{g}": summarize(records[(p, g)]) for p, g in cells}
    settings = {"model": "deeplab", "resolution": list(RESOLUTION),
                "num_threads": args.num_threads, "updates_per_process": args.updates,
                "rounds": args.rounds, "gammas": args.gammas, "seed": SEED,
                "variants": {v: {"update_reuse_packed_weights": f} for v, f in VARIANTS.items()},
                "patterns": {"all": "every mapped tensor", "head": f"the last {args.head}"},
                "packets": "update_apply.make_packets: base-relative, F16, a γ share of each "
                           "touched tensor; one before runs 2, 4, ... (--update_blocking)",
                "path": "engine CLI on the host (LocalDevice)"}
    out = {**provenance(settings),
           "host_load_1min": {"min": min(loads), "median": float(np.median(loads)),
                              "max": max(loads), "cores": os.cpu_count()},
           "runtime_s": round(time.monotonic() - t0, 1), "results": rows,
           "records": {f"{p}/{g}/{v}": recs for (p, g), by in records.items()
                       for v, recs in by.items()}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(out, indent=1) + "\n")
    for cell, row in rows.items():
        for v, c in row.items():
            print(f"{cell:9s} {v:8s} " + "  ".join(
                f"{s[:-3]} {c[s]['median_ms']:.2f} ms (x{c[s]['ratio_to_no_cache']:.2f})"
                for s in STAGES) + f"  packed new/reused {c['packed_new_median']}/"
                f"{c['packed_reused_median']}")


if __name__ == "__main__":
    main()
