"""Bytes per update at equal mIoU: float16 values in the AMS format vs quantized cumulative deltas
with server-side error feedback (wire value coding QDELTA), as a PAIRED comparison.

Per seed, every arm starts from the same cached pretrained student (experiments' starting point
for that seed), sees the same real-clip stream (experiments' clips, teacher labels), samples the
same frames and trains with the same seed; arms differ in how the update is chosen and coded:
γ, the selection (``sel=paper``: AMS's top-γ coordinates; ``sel=rows``: whole output channels
by mean |update|; ``sel=ams-rows``: the rows that cover most of AMS's own top-γ coordinates per
coordinate spent; server/structured.py) and the value coding (float16 values, or QDELTA with
``l`` levels, step rule ``r``, send threshold ``t`` and ``scope``: every residual, or only
those inside the phase's trained coordinates, server/error_feedback.py). Every T_update of video
the server trains one phase and sends one packet; the device decodes it with `wire.decode_update`,
patches its ``.tflite`` bytes with `wire.apply_update` and runs the patched model with LiteRT on
the following frames (packets arrive at their boundary: no link, so packet size does not feed
back into arrival time). mIoU is against the teacher, every frame of the stream. The baseline
arm's bytes are the AMS downlink format (`wire.encode_ams_baseline`) of each float16 update;
QDELTA arms' bytes are whole MDUP packets (header, CRC, HMAC). After every QDELTA packet the
server's mirror is compared, bit for bit, with the tensors the device decoded (``mirror_exact``).

Also per QDELTA packet: its index and level sections deflated alone, the levels' order-0
entropy (what a range/ANS coder without context could reach) and the subset bound for the
indices, to decide whether a second entropy coder in both decoders would be worth it.

    .venv/bin/python benchmarks/update_coding.py   # the default arms on seeds 0-23
    .venv/bin/python benchmarks/update_coding.py --merge PARTS.json --out OUT.json \
        --pool-with benchmarks/results/update_coding.json   # seeds split over processes
"""

from __future__ import annotations

import argparse
import json
import math
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from provenance import provenance
from scipy import stats

from mobdistill.contract import wire
from mobdistill.contract.wire import ValueCoding
from mobdistill.experiments.clips import load_stream
from mobdistill.experiments.config import DEFAULT_VIDEOS, StreamConfig
from mobdistill.experiments.evaluate import frame_mious
from mobdistill.experiments.student import prepare_student
from mobdistill.export.manifest import load as load_manifest
from mobdistill.server.error_feedback import DeltaQuantizer, ErrorFeedbackEncoder
from mobdistill.server.session import LabelledFrame, ServerConfig, Session, UpdateCredentials
from mobdistill.server.structured import coordinate_descent
from mobdistill.server.teachers import load_teacher

# The second run's file (the first, other arms on another machine's students: update_coding.json)
RESULTS = Path(__file__).resolve().parent / "results" / "update_coding_rows.json"
# The AMS baseline; rows at γ = 10 %; rows covering AMS's choice (ams-rows) at γ = 8 %; the chosen
# coding: rows at γ = 8 %. All ±3 levels with residuals sent only inside the phase's rows.
DEFAULT_ARMS = ["ams_f16:g=0.05", "qdelta:g=0.1,l=3,r=max,t=0.5,sel=rows,scope=phase",
                "qdelta:g=0.08,l=3,r=max,t=0.5,sel=ams-rows,scope=phase",
                "qdelta:g=0.08,l=3,r=max,t=0.5,sel=rows,scope=phase"]
DEVICE, KEY = bytes(range(16)), b"bench-key"
# The experiments' small starting point (cached per seed): 64x128, ASPP 16, 30 pretrain steps.
RESOLUTION, ASPP, PRETRAIN = (64, 128), 16, 30
T_UPDATE_S, HORIZON_S, SAMPLE_FPS = 2.0, 48.0, 5.0  # the paper's clock x 0.2 (experiments)


@dataclass(frozen=True)
class Arm:
    name: str
    gamma: float
    quantizer: DeltaQuantizer | None  # None: float16 values (the AMS format's)
    trains: bool = True  # False: the "none" reference, the starting student never updated
    selection: str = "paper"  # AMS's coordinates, or whole rows: `structured.SELECTIONS`

    @classmethod
    def parse(cls, spec: str) -> "Arm":
        """``ams_f16:g=0.05``, ``qdelta:g=0.05,l=1,s=1.0,r=mean,t=1,sel=paper,scope=all`` or
        ``none`` (``scope=phase``: residuals sent only inside the coordinates trained this
        phase, `DeltaQuantizer.scope`)."""
        kind, _, rest = spec.partition(":")
        if kind == "none":
            return cls(spec, 1.0, None, trains=False)  # gamma unused: never trains
        fields = dict(kv.split("=") for kv in rest.split(",") if kv)
        gamma = float(fields.get("g", 0.05))
        selection = fields.get("sel", "paper")
        if kind == "ams_f16":
            return cls(spec, gamma, None, selection=selection)
        default = DeltaQuantizer()
        return cls(spec, gamma, DeltaQuantizer(int(fields.get("l", default.levels)),
                                                float(fields.get("s", default.step_scale)),
                                                fields.get("r", default.rule),
                                                float(fields.get("t", default.send_at)),
                                                fields.get("scope", default.scope)),
                   selection=selection)


def section_sizes(patches: list[wire.TensorPatch]) -> dict[str, float]:
    """What a QDELTA packet's sections cost and their bounds, in bytes: the index varints and
    the level bytes each deflated alone, the order-0 entropy of each tensor's levels (what a
    range/ANS coder without context could reach), and the subset bound log2 C(numel, count)
    for the indices (an unstructured selection's minimum; row selection goes far below it)."""
    subset_bits = level_bits = 0.0
    indices, levels = [], []
    for p in patches:
        n, k = p.numel, len(p.indices)
        subset_bits += (math.lgamma(n + 1) - math.lgamma(k + 1)
                        - math.lgamma(n - k + 1)) / math.log(2)
        q = wire.delta_levels(p)
        _, counts = np.unique(q, return_counts=True)
        level_bits += float(-(counts * np.log2(counts / k)).sum())
        indices.append(wire._varints(np.diff(p.indices, prepend=-1) - 1))
        levels.append(q.astype(np.int8).tobytes())
    return {"index_subset_bound_bytes": subset_bits / 8, "level_entropy_bytes": level_bits / 8,
            "index_deflate_bytes": len(zlib.compress(b"".join(indices), 9)),
            "level_deflate_bytes": len(zlib.compress(b"".join(levels), 9))}


def ams_bytes(session: Session, patches: list[wire.TensorPatch]) -> int:
    """The AMS format over every mapped tensor in graph (tensor index) order."""
    numels = {m.tensor_index: m.numel for m in session.space.mappings.values()}
    return len(wire.encode_ams_baseline(wire.ams_variables(patches, numels)))


def device_masks(model: bytes, frames: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    if not len(frames):
        return np.zeros((0, *frames.shape[1:3]), np.int64)
    runner = Interpreter(model_content=model, num_threads=1).get_signature_runner()
    return np.stack([runner(frame=f[None].astype(np.float32))["logits"][0].argmax(-1)
                     for f in frames]).astype(np.int64)


def mirror_exact(session: Session, device: bytes) -> bool:
    """Whether the server's mirror holds, bit for bit, what the device reconstructed."""
    encoder = session.encoder
    assert isinstance(encoder, ErrorFeedbackEncoder)
    return all(device[loc.buffer_offset:loc.buffer_offset + loc.buffer_size]
               == encoder.held[index].astype("<f4" if loc.dtype == "float32" else "<f2").tobytes()
               for index, loc in session.space.table.items())


def run_arm(arm: Arm, seed: int, iterations: int, stream, labels: np.ndarray, teacher) -> dict:
    config = StreamConfig(resolution=RESOLUTION, aspp_channels=ASPP, pretrain_iterations=PRETRAIN,
                          seed=seed)
    student, manifest_path = prepare_student(config, teacher)
    manifest = load_manifest(manifest_path)
    base = manifest.tflite_path.read_bytes()
    server = ServerConfig(horizon_s=HORIZON_S, update_interval_s=T_UPDATE_S,
                          asr_interval_s=T_UPDATE_S, iterations=iterations, batch_size=4,
                          gamma=arm.gamma, value_coding=ValueCoding.F16, seed=seed)
    session = Session("bench", student, manifest, teacher, server,
                      credentials=UpdateCredentials(DEVICE, KEY))
    if arm.quantizer is not None:
        session.encoder = ErrorFeedbackEncoder.for_model(session.space, session.credentials,
                                                         base, arm.quantizer)
    if arm.selection != "paper":
        session.optimizer = coordinate_descent(session.trainable, gamma=arm.gamma,
                                               selection=arm.selection,
                                               rule=session.optimizer.rule,
                                               generator=session.generator)
    limits = wire.DecodeLimits.for_table(session.space.table)
    device, guard = base, wire.SequenceGuard()
    samples = np.arange(0.0, stream.duration_s, 1.0 / SAMPLE_FPS)
    boundaries = np.arange(T_UPDATE_S, stream.duration_s, T_UPDATE_S)
    masks, updates, start, sampled = [], [], 0, 0
    started = time.process_time()
    for boundary in list(boundaries) + [stream.duration_s]:
        end = stream.frame_at(boundary)
        masks.append(device_masks(device, stream.frames[start:end]))
        start = end
        if boundary >= stream.duration_s:
            break
        if not arm.trains:
            continue
        while sampled < len(samples) and samples[sampled] < boundary:
            i = min(stream.frame_at(samples[sampled]), len(stream.frames) - 1)
            chw = torch.from_numpy(stream.frames[i]).permute(2, 0, 1).float()
            session.buffer.add(LabelledFrame(float(stream.times_s[i]), chw,
                                             torch.from_numpy(labels[i])))
            sampled += 1
        result = session.train_phase(float(boundary))
        packet = wire.decode_update(result.packet, expected_base_sha256=session.space.base_sha256,
                                    expected_device_id=DEVICE, hmac_key=KEY, limits=limits)
        guard.accept(packet)
        device = wire.apply_update(device, session.space.table, packet)
        row = {"sequence": result.sequence, "time_s": float(boundary),
               "values": sum(len(p.indices) for p in packet.tensors),
               "packet_bytes": len(result.packet)}
        if arm.quantizer is None:
            row["ams_bytes"] = ams_bytes(session, packet.tensors)
        else:
            row.update(section_sizes(packet.tensors))
            row["residual_norm"] = session.encoder.residual_norm()
            row["mirror_exact"] = mirror_exact(session, device)
        updates.append(row)
    masks_all = np.concatenate(masks)
    per_frame = frame_mious(masks_all, labels, teacher.num_classes)
    sizes = [u["ams_bytes" if arm.quantizer is None else "packet_bytes"] for u in updates] or [0]
    return {"arm": arm.name, "seed": seed, "student_tflite_sha256": session.space.base_sha256.hex(),
            "miou": float(np.nanmean(per_frame)),
            "bytes_per_update": float(np.mean(sizes)), "updates": updates,
            "train_cpu_s": time.process_time() - started}


def paired(rows: list[dict], base: str, ours: str) -> dict:
    by = {(r["arm"], r["seed"]): r for r in rows}
    seeds = sorted(s for a, s in by if a == ours and (base, s) in by)
    diff = np.array([by[(ours, s)]["miou"] - by[(base, s)]["miou"] for s in seeds]) * 100
    ratio = np.array([by[(ours, s)]["bytes_per_update"] / by[(base, s)]["bytes_per_update"]
                      for s in seeds])
    return {"baseline": base, "ours": ours, "seeds": seeds, "miou_diff_points": diff.tolist(),
            "bytes_ratio": ratio.tolist(), **verdict(diff, ratio)}


def verdict(diff: np.ndarray, ratio: np.ndarray) -> dict:
    """Means of the paired mIoU differences (points) and byte ratios, the differences' 95 %
    t-interval (two or more pairs) and whether the mean, or the whole interval, is within ±0.5."""
    if not len(diff):
        return {"mean_miou_diff_points": None, "mean_bytes_ratio": None}
    out = {"mean_miou_diff_points": float(diff.mean()), "mean_bytes_ratio": float(ratio.mean())}
    if len(diff) >= 2:
        half = stats.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / math.sqrt(len(diff))
        out["miou_diff_ci95_points"] = [float(diff.mean() - half), float(diff.mean() + half)]
        out["equal_within_0.5"] = bool(-0.5 <= diff.mean() - half and diff.mean() + half <= 0.5)
    out["mean_within_0.5"] = bool(abs(diff.mean()) <= 0.5)
    return out


def comparisons(rows: list[dict], arms: list[str],
                extra: list[tuple[str, str]] | None = None) -> list[dict]:
    """Every arm against the first (the AMS baseline); each QDELTA arm with row selection
    against float16 values on the same rows (same selection: the coding's own effect); each
    ``scope=phase`` arm against the same arm sending every residual (same training); then the
    ``extra`` (baseline, ours) pairs asked for with ``--compare``."""
    out = [paired(rows, arms[0], a) for a in arms[1:]]
    out += [paired(rows, base, ours) for base, ours in extra or []]
    for name in arms:
        arm = Arm.parse(name)
        if arm.quantizer is None:
            continue
        same_rows = f"ams_f16:g={arm.gamma:g},sel={arm.selection}"
        if arm.selection != "paper" and same_rows in arms:
            out.append(paired(rows, same_rows, name))
        every = name.replace(",scope=phase", "")
        if arm.quantizer.scope == "phase" and every != name and every in arms:
            out.append(paired(rows, every, name))
    return out


def pooled(result: dict, other_path: Path) -> list[dict]:
    """Comparisons present in both results with the pairs of both pooled: each pair stays within
    its own run (own starting students), so two runs are two samples of paired differences."""
    other = json.loads(other_path.read_text())
    theirs = {(c["baseline"], c["ours"]): c for c in other["comparisons"]}
    out = []
    for mine in result["comparisons"]:
        match = theirs.get((mine["baseline"], mine["ours"]))
        if match is None:
            continue
        diff = np.array(mine["miou_diff_points"] + match["miou_diff_points"])
        ratio = np.array(mine["bytes_ratio"] + match["bytes_ratio"])
        out.append({"baseline": mine["baseline"], "ours": mine["ours"], "with": other_path.name,
                    "pairs": len(diff), **verdict(diff, ratio)})
    return out


def _part(path: Path) -> dict:
    """A result file, or the row lines a stopped run printed (no per-update details)."""
    if path.suffix == ".json":
        return json.loads(path.read_text())
    rows = [json.loads(line) for line in path.read_text().splitlines()
            if line.startswith('{"arm"')]
    return {"commit": None, "settings": None, "rows": rows,
            "note": f"rows recovered from {path.name}: the run was stopped after these rows"}


def merge(paths: list[Path], out: Path, notes: list[str] | None = None,
          pool_with: Path | None = None, extra: list[tuple[str, str]] | None = None) -> None:
    """One result from several runs (seeds split over processes; arms may differ): the same
    settings apart from seeds and arms; comparisons recomputed over all rows. A part that is
    itself a merge keeps its runs and notes."""
    parts = [_part(p) for p in paths]
    complete = [p for p in parts if p["settings"] is not None]
    settings = dict(complete[0]["settings"])
    ignore = ("seeds", "arms")
    for part in complete[1:]:
        other = {k: v for k, v in part["settings"].items() if k not in ignore}
        if other != {k: v for k, v in settings.items() if k not in ignore}:
            raise SystemExit(f"cannot merge runs with different settings: {other}")
    rows, seen, repeated = [], {}, []
    for path, part in zip(paths, parts):
        for row in part["rows"]:
            key = (row["arm"], row["seed"])
            if key not in seen:
                seen[key] = row
                rows.append(row)
                continue
            if (seen[key]["miou"], seen[key]["bytes_per_update"]) != (row["miou"],
                                                                      row["bytes_per_update"]):
                raise SystemExit(f"{key} ran twice with different results")
            repeated.append(f"{row['arm']} seed {row['seed']} ({path.name})")
    arms = list(dict.fromkeys(a for part in complete for a in part["settings"]["arms"]))
    settings.update(seeds=sorted({r["seed"] for r in rows}), arms=arms)
    result = {**provenance(settings),
              "runs": [{"file": str(path), "commit": part["commit"],
                        "seeds": sorted({r["seed"] for r in part["rows"]}),
                        "arms": list(dict.fromkeys(r["arm"] for r in part["rows"])),
                        **({"note": part["note"]} if "note" in part else {}),
                        **({"runs": part["runs"]} if "runs" in part else {})}
                       for path, part in zip(paths, parts)],
              "frames": complete[0]["frames"],
              "comparisons": comparisons(rows, arms, extra), "rows": rows}
    kept = [n for part in parts for n in part.get("notes", [])] + list(notes or [])
    if repeated:
        kept.append("Ran again with identical mIoU and bytes (the first kept): "
                    + "; ".join(repeated))
    if kept:
        result["notes"] = kept
    if pool_with is not None:
        result["pooled"] = pooled(result, pool_with)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["comparisons"], indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(24)))
    parser.add_argument("--arm", action="append", help="arm spec (repeatable); the first is "
                        f"the baseline. Default: {' '.join(DEFAULT_ARMS)}")
    parser.add_argument("--iterations", type=int, default=20, help="K per phase")
    parser.add_argument("--max-frames-per-clip", type=int, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--merge", type=Path, nargs="+", help="combine the rows of these result "
                        "files (runs of the same arms on different seeds) into --out")
    parser.add_argument("--note", action="append", help="with --merge: a note kept in the "
                        "result (repeatable)")
    parser.add_argument("--compare", nargs=2, action="append", default=[],
                        metavar=("BASELINE", "OURS"), help="also compare these two arms, paired "
                        "(repeatable)")
    parser.add_argument("--pool-with", type=Path, help="with --merge: also pool each comparison "
                        "with the same one in this result (another run's own pairs)")
    args = parser.parse_args()
    extra = [(base, ours) for base, ours in args.compare]
    if args.merge:
        merge(args.merge, args.out, args.note, args.pool_with, extra)
        return
    torch.set_num_threads(1)
    arms = [Arm.parse(a) for a in (args.arm or DEFAULT_ARMS)]
    teacher = load_teacher("selfie", class_names=("background", "person"))
    stream = load_stream(DEFAULT_VIDEOS, RESOLUTION, args.max_frames_per_clip)
    labels = np.stack([teacher.labels(f) for f in stream.frames])
    settings = {"seeds": args.seeds, "arms": [a.name for a in arms], "iterations": args.iterations,
                "videos": list(DEFAULT_VIDEOS), "max_frames_per_clip": args.max_frames_per_clip,
                "resolution": list(RESOLUTION), "aspp_channels": ASPP,
                "pretrain_iterations": PRETRAIN, "t_update_s": T_UPDATE_S,
                "horizon_s": HORIZON_S, "sample_fps": SAMPLE_FPS, "batch_size": 4,
                "torch_threads": 1}
    rows: list[dict] = []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:  # interleaved: every arm of a seed before the next seed
        for arm in arms:
            row = run_arm(arm, seed, args.iterations, stream, labels, teacher)
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "updates"}), flush=True)
            result = {**provenance(settings), "frames": len(stream.frames),
                      "comparisons": comparisons(rows, [a.name for a in arms], extra),
                      "rows": rows}
            args.out.write_text(json.dumps(result, indent=1) + "\n")  # after every row
    print(json.dumps(result["comparisons"], indent=1))


if __name__ == "__main__":
    main()
