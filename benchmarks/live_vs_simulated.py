"""Live AMS vs the simulated stream, side by side on the same clips and seeds.

Live: `mobdistill serve` as a process, the host client (the engine through its C facade) playing
the clips in real time over loopback (`experiments/live.py`). Simulated: `mobdistill stream`
with server speedup 1 (training takes its real wall time on the stream clock) and no link cap;
the live link is loopback, not shaped either. Same starting point, teacher, clips, K, γ, T_update,
uplink codec. Per seed: mIoU vs the teacher (both definitions), kbit/s up and down, updates
applied, staleness per applied update (boundary the server trained at → the frame the engine
swapped on, in stream seconds). Writes ``results/live_vs_simulated.json`` with commit, settings,
seeds.

    nice python benchmarks/live_vs_simulated.py [--seeds 0 1 2] [--out results/...json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import provenance  # noqa: E402

from mobdistill.experiments.clips import load_stream  # noqa: E402
from mobdistill.experiments.config import StreamConfig  # noqa: E402
from mobdistill.experiments.live import run_live  # noqa: E402
from mobdistill.experiments.stream import run_stream  # noqa: E402
from mobdistill.server.teachers import load_teacher  # noqa: E402

# A tiny student and K = 5 so that a phase fits T_update on this loaded 2-core host.
BASE = StreamConfig(videos=("carphone_pristine.mp4", "bikes.mp4"), resolution=(64, 128),
                    aspp_channels=16, iterations=5, batch_size=2, t_update_s=1.0,
                    pretrain_iterations=30, num_threads=1, server_speedup=1.0, link_mbps=None,
                    uplink_codec="h264")


def staleness_s(result: dict, times_s: np.ndarray) -> list[float]:
    """Per applied update: stream time of its swap frame minus the boundary it trained at."""
    out = []
    for row in result["updates"]:
        engine = row.get("engine") or {}
        if engine.get("status") == "applied" and engine.get("swapped_frame") is not None:
            out.append(float(times_s[engine["swapped_frame"]] - row["boundary_s"]))
    return out


def row(mode: str, seed: int, result: dict, times_s: np.ndarray) -> dict:
    stale = staleness_s(result, times_s)
    return {"mode": mode, "seed": seed,
            "miou_with_background": result["miou_with_background"]["mean"],
            "miou_foreground": result["miou_foreground"]["mean"],
            "uplink_kbit_s": result["uplink"]["kbit_s"],
            "downlink_kbit_s": result["downlink"]["kbit_s"],
            "packets": result["downlink"]["packets_planned"],
            "updates_applied": result["downlink"]["packets_applied"],
            "staleness_s": stale, "timings_s": result["timings_s"],
            **({"live": {k: result["live"][k] for k in ("connections", "chunks_dropped",
                                                         "wall_s")}}
               if "live" in result else {})}


def summarize(rows: list[dict]) -> dict:
    out = {}
    for mode in ("simulated", "live"):
        mine = [r for r in rows if r["mode"] == mode]
        miou = np.array([r["miou_with_background"] for r in mine])
        stale = np.concatenate([r["staleness_s"] for r in mine]) if mine else np.array([])
        out[mode] = {"miou_with_background_mean": float(miou.mean()),
                     "miou_with_background_std": float(miou.std(ddof=1)) if len(miou) > 1
                     else None,
                     "miou_with_background_range": [float(miou.min()), float(miou.max())],
                     "staleness_p50_s": float(np.percentile(stale, 50)) if stale.size else None,
                     "staleness_p99_s": float(np.percentile(stale, 99)) if stale.size else None,
                     "uplink_kbit_s_mean": float(np.mean([r["uplink_kbit_s"] for r in mine])),
                     "downlink_kbit_s_mean": float(np.mean([r["downlink_kbit_s"]
                                                            for r in mine])),
                     "updates_applied_mean": float(np.mean([r["updates_applied"]
                                                            for r in mine]))}
    sim, live = out["simulated"], out["live"]
    spread = max(sim["miou_with_background_std"] or 0.0, live["miou_with_background_std"] or 0.0)
    diff = live["miou_with_background_mean"] - sim["miou_with_background_mean"]
    out["agreement"] = {"live_minus_simulated": diff, "largest_seed_std": spread,
                        "within_seed_spread": abs(diff) <= spread,
                        "rule": "|mean live - mean simulated| <= the larger std over seeds"}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "live_vs_simulated.json")
    parser.add_argument("--work", type=Path, default=Path("out/live_vs_simulated"))
    args = parser.parse_args()
    teacher = load_teacher(BASE.teacher, class_names=BASE.teacher_classes)
    stream = load_stream(BASE.videos, BASE.resolution, BASE.max_frames_per_clip)
    rows: list[dict] = []
    start = time.time()
    measured_at = provenance({})  # the commit that runs, not the one at the end
    for seed in args.seeds:
        config = replace(BASE, seed=seed)
        sim = run_stream(config, out_dir=args.work / f"sim-{seed}", teacher=teacher)
        rows.append(row("simulated", seed, asdict(sim), stream.times_s))
        live, extra = run_live(config, out_dir=args.work / f"live-{seed}", teacher=teacher)
        rows.append(row("live", seed, {**asdict(live), "live": extra}, stream.times_s))
        print(json.dumps({k: v for k, v in rows[-2].items() if k != "staleness_s"}), flush=True)
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "staleness_s"}), flush=True)
    settings = {**asdict(BASE), "frames": len(stream.frames),
                "duration_s": round(stream.duration_s, 3),
                "staleness": "stream time of the engine's swap frame minus the training "
                             "boundary (upload time) of that packet",
                "live_link": "loopback TCP, unshaped", "simulated_link": "no cap",
                "wall_s": round(time.time() - start, 1)}
    document = {**measured_at, "settings": settings, "seeds": args.seeds, "runs": rows,
                "summary": summarize(rows)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=1) + "\n")
    print(json.dumps(document["summary"], indent=1))


if __name__ == "__main__":
    main()
