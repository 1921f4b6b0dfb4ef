"""JITNet's own experiment (Mullapudi et al., Table 2): online distillation with the teacher
beside the student, at the paper's thresholds 0.7 / 0.8 / 0.9.

Each run is `mobdistill stream --model jitnet --scheme jit --colocated`: JITNet (m = 0.5, its own
pretrained start per seed) streamed through the same machinery as the AMS schemes (server code,
sparse packets, the real engine replaying every frame, updates applied before their own frame with
``--update_blocking``), trained as the paper trains it: every layer (γ = 1), SGD momentum 0.9, lr
0.01, u_max 8, δ 8..64, the pixel loss 5× inside the teacher's boxes dilated by 15 % (boxes of the
teacher mask's connected components), and each threshold again unweighted. Reported per run, 95 %
CIs over seeds: mIoU over the foreground classes (JITNet's) and with background, the fraction of
frames the teacher ran on, and the speedup over running the teacher on every frame, counted in FLOPs
(convolutions and matrix multiplies, 2 per MAC): N·F_teacher / (N·F_student + T·F_teacher +
S·4·F_student), T teacher frames, S gradient steps (forward + backward ≈ 3 forwards, plus the
re-check forward). Times are not measured: this shared host's clock says nothing about either model.
The selfie teacher is only 5x JITNet's FLOPs here; ``--teacher isnet`` (IS-Net, ~319 GFLOP a frame)
puts the teacher far above the student, as Mask R-CNN is in the paper. Its labels cost ~4-5 CPU-s a
frame, so they are computed once by ``--label`` (every frame a run will ask for: the stream, the
pretraining frames, the held-out frames) into the label cache (`server.teachers.CachedTeacher`,
``$MOBDISTILL_CACHE/labels``), which the runs then read.

    .venv/bin/python benchmarks/jitnet_colocated.py --teacher isnet --label [--teacher-threads 1]
    .venv/bin/python benchmarks/jitnet_colocated.py [--teacher isnet] [--seeds 0,1,2,3,4]
    .venv/bin/python benchmarks/jitnet_colocated.py --combine A/jitnet_colocated.json B/...json
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paper_schemes import STREAM, ci95, engine_binary, run_folder  # noqa: E402
from provenance import provenance  # noqa: E402

from mobdistill import clips  # noqa: E402
from mobdistill.experiments.config import StreamConfig  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
NAME = "jitnet_colocated"
STEP_COST = 4  # one gradient step in student forwards: forward + backward (≈ 2) + re-check


def speedup(frames: int, teacher_frames: int, steps: int, teacher_flops: float,
            student_flops: float) -> float:
    """Teacher on every frame vs the student on every frame plus teacher frames and training."""
    cost = (frames * student_flops + teacher_frames * teacher_flops
            + steps * STEP_COST * student_flops)
    return frames * teacher_flops / cost


def student_flops(config: StreamConfig, num_classes: int) -> int:
    from mobdistill.models import complexity, registry

    entry = registry.get(config.model)
    model_config = entry.config_type(num_classes=num_classes,
                                     width_multiplier=config.width_multiplier)
    return complexity.signature_flops(entry, model_config, *config.resolution)["serving_default"]


def measure(name: str, config: StreamConfig, out: Path, teacher, flops: dict[str, float],
            ) -> dict[str, Any]:
    from mobdistill.experiments.stream import run_stream

    r = run_stream(config, out_dir=out, teacher=teacher)
    teacher_frames, steps = r.server.get("teacher_frames", 0), r.server.get("train_steps", 0)
    return {"run": name, "seed": config.seed, "scheme": config.scheme,
            "jit_threshold": config.jit_threshold if config.scheme == "jit" else None,
            "box_weight": config.jit_box_weight,
            "miou_foreground": r.miou_foreground["mean"],
            "miou_with_background": r.miou_with_background["mean"],
            "frames": r.frames, "frames_foreground_scored": r.miou_foreground["frames_scored"],
            "teacher_frames": teacher_frames, "train_steps": steps,
            "teacher_fraction": teacher_frames / r.frames,
            "packets_applied": r.downlink["packets_applied"],
            "speedup_flops": speedup(r.frames, teacher_frames, steps, flops["teacher"],
                                     flops["student"]) if config.scheme == "jit" else None}


def frames_to_label(base: StreamConfig) -> list[tuple[str, str, Any]]:
    """(part, clip, frame) for every frame a run of `base` asks the teacher about, in the order
    the runs need them: the stream, then the pretraining frames, then the held-out frames that
    score each pretrained start (the same for every seed: only the seed differs)."""
    from mobdistill.experiments.clips import load_stream
    from mobdistill.experiments.student import pretrain_config
    from mobdistill.video import iter_frames

    stream = load_stream(base.videos, base.resolution, base.max_frames_per_clip)
    out: list[tuple[str, str, Any]] = [("stream", c, f) for c, f in zip(stream.clips,
                                                                          stream.frames)]
    settings = pretrain_config(base)
    for part, names, step in (("pretraining", settings.clips, settings.frame_step),
                              ("held-out", settings.heldout_clips, settings.heldout_step)):
        out += [(part, name, f) for name in names
                for f in iter_frames(name, size=settings.resolution, step=step)]
    return out


def label(base: StreamConfig, teacher) -> dict[str, Any]:
    """Labels every frame of `frames_to_label` not yet in the cache (progress bar)."""
    from tqdm import tqdm

    todo = frames_to_label(base)
    cached = {}
    for part, _, frame in todo:
        hit = teacher.path_for(frame).is_file()
        cached.setdefault(part, [0, 0])[hit] += 1
    print("frames (missing, cached):", cached, flush=True)
    for _, _, frame in tqdm(todo, desc=f"labelling with {base.teacher}", unit="frame"):
        teacher.probabilities(frame)
    return {"frames": len(todo), "computed": teacher.misses, "folder": str(teacher.folder)}


def summarize(runs: list[dict]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(r["run"] for r in runs):
        group = [r for r in runs if r["run"] == name]
        row: dict[str, Any] = {"seeds": sorted(r["seed"] for r in group)}
        for key in ("miou_foreground", "miou_with_background", "teacher_fraction",
                    "speedup_flops"):
            values = [r[key] for r in group if r[key] is not None]
            if values:
                mean, half = ci95(values)
                row[key] = {"mean": round(mean, 4),
                            "ci95": None if half is None else round(half, 4)}
        out[name] = row
    return out


def _cell(row: dict, key: str, scale: float = 100, digits: int = 1, suffix: str = "") -> str:
    cell = row.get(key)
    if cell is None:
        return ""
    text = f"{scale * cell['mean']:.{digits}f}{suffix}"
    return text if cell["ci95"] is None else f"{text} ± {scale * cell['ci95']:.{digits}f}"


def write_outputs(doc: dict[str, Any], out: Path) -> None:
    doc["summary"] = summary = summarize(doc["runs"])
    (out / f"{NAME}.json").write_text(json.dumps(doc, indent=1) + "\n")
    f = doc["flops"]
    lines = [f"# {NAME}: commit {doc['commit']}", "",
             f"JITNet m={doc['settings']['width_multiplier']:g} at "
             f"{'x'.join(map(str, doc['settings']['resolution']))}, teacher "
             f"{doc['settings']['teacher']} ({f['teacher'] / 1e6:.1f} MFLOP/frame vs the "
             f"student's {f['student'] / 1e6:.1f}). Stream: {', '.join(doc['settings']['stream'])}."
             " Mean ± 95 % CI (Student-t over seeds).", "",
             "| run | seeds | mIoU foreground (%) | mIoU with background (%) | teacher frames (%) "
             "| speedup (FLOPs) |", "|---|---|---|---|---|---|"]
    for name, row in summary.items():
        lines.append(f"| {name} | {len(row['seeds'])} | {_cell(row, 'miou_foreground')} | "
                     f"{_cell(row, 'miou_with_background')} | {_cell(row, 'teacher_fraction')} | "
                     f"{_cell(row, 'speedup_flops', 1, 2, '×')} |")
    (out / f"{NAME}.md").write_text("\n".join(lines) + "\n")


def plan(thresholds: list[float]) -> list[tuple[str, dict[str, Any]]]:
    """No Customization, then each threshold with and without the box weighting, the middle
    threshold first (most important first)."""
    middle = thresholds[len(thresholds) // 2]
    order = [middle, *[t for t in thresholds if t != middle]]
    runs: list[tuple[str, dict[str, Any]]] = [("none", {"scheme": "none"})]
    for t in order:
        runs += [(f"jitnet {t:g}", {"scheme": "jit", "jit_threshold": t}),
                 (f"jitnet {t:g} unweighted",
                  {"scheme": "jit", "jit_threshold": t, "jit_box_weight": 1.0})]
    return runs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--resolution", default="64x128")
    p.add_argument("--width", type=float, default=0.5, help="JITNet's m (paper: 0.5)")
    p.add_argument("--pretrain-iterations", type=int, default=200)
    p.add_argument("--max-frames", type=int, default=100, help="frames per clip")
    p.add_argument("--pretrain-frame-step", type=int, default=2,
                   help="every n-th pretraining frame is labelled and trained on")
    p.add_argument("--heldout-step", type=int, default=10,
                   help="every n-th held-out frame scores each pretrained start")
    p.add_argument("--thresholds", default="0.7,0.8,0.9")
    p.add_argument("--teacher", default="selfie",
                   help="selfie, or isnet (IS-Net, ~2,700x the selfie FLOPs: the paper's regime)")
    p.add_argument("--teacher-threads", type=int, default=1,
                   help="ONNX Runtime threads for an ONNX teacher (isnet)")
    p.add_argument("--label", action="store_true",
                   help="only label (and cache) every frame the runs will need, then stop")
    p.add_argument("--videos", default=",".join(STREAM), help="the stream's clips")
    p.add_argument("--pretrain-clips", help="pretraining clips, comma-separated (default: all)")
    p.add_argument("--only", help="run names to run, comma-separated (default: all)")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--combine", nargs="+", type=Path, help="merge these JSON files instead")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.combine:
        docs = [json.loads(f.read_text()) for f in args.combine]
        runs = {(r["run"], r["seed"]): r for d in reversed(docs) for r in d["runs"]}
        names = [name for name, _ in plan(docs[0]["settings"]["thresholds"])]
        ordered = sorted(runs.values(), key=lambda r: (
            names.index(r["run"]) if r["run"] in names else len(names), r["seed"]))
        write_outputs({**docs[0], "runs": ordered,
                       "combined_from": [str(f) for f in args.combine],
                       "commits": sorted({d["commit"] for d in docs})}, args.out)
        return
    seeds = [int(s) for s in args.seeds.split(",")]
    thresholds = [float(t) for t in args.thresholds.split(",")]
    from mobdistill.models.registry import parse_resolution
    from mobdistill.server.teachers import (
        ISNET_CLASSES,
        CachedTeacher,
        MemoTeacher,
        get_teacher,
        isnet_teacher,
        teacher_flops,
    )

    videos = tuple(args.videos.split(","))
    extra = {"pretrain_clips": tuple(args.pretrain_clips.split(","))} if args.pretrain_clips \
        else {}
    classes = {"isnet": ISNET_CLASSES}.get(args.teacher, StreamConfig.teacher_classes)
    base = StreamConfig(scheme="jit", model="jitnet", videos=videos, teacher=args.teacher,
                        teacher_classes=classes,
                        pretrain_frame_step=args.pretrain_frame_step,
                        pretrain_heldout_step=args.heldout_step,
                        max_frames_per_clip=args.max_frames,
                        resolution=parse_resolution(args.resolution),
                        width_multiplier=args.width, colocated=True, gamma=1.0,
                        jit_box_weight=5.0, pretrain_iterations=args.pretrain_iterations,
                        num_threads=1, update_blocking=True, **extra)
    inner = (isnet_teacher(num_threads=args.teacher_threads) if base.teacher == "isnet"
             else get_teacher(base.teacher))
    cached = CachedTeacher(inner)  # each frame labelled once, across processes
    if args.label:
        print(json.dumps(label(base, cached)), flush=True)
        return
    teacher = MemoTeacher(cached)  # and read from disk once per process
    flops = {"teacher": float(teacher_flops(teacher)),
             "student": float(student_flops(base, teacher.num_classes))}
    settings = {**asdict(base), "stream": list(videos), "seeds": seeds,
                "thresholds": thresholds, "step_cost_forwards": STEP_COST}
    labels_before = sum(1 for _ in cached.folder.glob("*.npy"))
    doc = {**provenance(settings), "engine": engine_binary(),
           "teacher": {"name": base.teacher, "sha256": cached.sha256,
                       "label_cache": str(cached.folder), "labels_cached_at_start": labels_before},
           "clips": {c.name: {"role": c.role.value, "sha256": c.sha256}
                     for c in clips.CLIPS if c.name in videos},
           "flops": flops, "runs": []}
    wanted = set(args.only.split(",")) if args.only else None
    for name, overrides in plan(thresholds):
        if wanted and name not in wanted:
            continue
        for seed in seeds:
            kw = {**overrides, "seed": seed}
            if kw["scheme"] == "none":
                kw["colocated"] = False
            row = measure(name, replace(base, **kw), run_folder(name, seed, NAME), teacher,
                          flops)
            doc["runs"].append(row)
            doc["teacher"]["labels_computed_in_this_run"] = cached.misses
            print(f"{name} seed {seed}: fg {row['miou_foreground']} teacher "
                  f"{row['teacher_fraction']:.3f} speedup {row['speedup_flops']}", flush=True)
            write_outputs(doc, args.out)


if __name__ == "__main__":
    main()
