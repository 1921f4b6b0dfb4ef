"""Streamed sparse updates in the C++ engine: decode + verify + patch + rebuild + swap between
frames.

Models are tiny DeepLab exports made by the real exporter (session fixture `tiny_export`);
packets are made by the Python encoder (contract/wire.py) in deployed tensor space, addressed
through the manifest's parameter_map.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import tiny_models
import torch

from mobdistill.contract import wire
from mobdistill.contract.wire import Mode, TensorLocation, TensorPatch, ValueCoding
from mobdistill.runtime.engine import EngineError, run_engine, runtime_library

KEY = b"per-device-key-0123456789abcdef!"
DEVICE = bytes(range(16))  # this test device's id (wire.new_device_id() in real deployments)


# ----------------------------------------------------------------------------- helpers
class Model:
    """The tiny export plus what the tests need to address and reproduce updates."""

    def __init__(self, export) -> None:
        self.export = export
        self.manifest_path = export.manifest_path
        manifest = json.loads(self.manifest_path.read_text())
        self.tflite = self.manifest_path.parent / manifest["artifacts"][0]["file"]
        self.base = self.tflite.read_bytes()
        self.sha = hashlib.sha256(self.base).digest()
        self.entries = {e["tensor_index"]: e for e in manifest["parameter_map"]["entries"]}
        self.table = {i: TensorLocation(e["buffer_offset"], e["buffer_size"], e["dtype"])
                      for i, e in self.entries.items()}
        self.height, self.width = manifest["model"]["resolution"]
        self.key_file = self.manifest_path.parent / "device.key"
        self.key_file.write_bytes(KEY)

    def biggest(self, folded: bool = True) -> dict:
        cands = [e for e in self.entries.values() if (e["fold"] is not None) == folded]
        return max(cands, key=lambda e: e["buffer_size"])

    def patch(self, entry: dict, rng, fraction: float = 0.05, scale: float = 0.5) -> TensorPatch:
        numel = entry["buffer_size"] // 4
        idx = np.sort(rng.choice(numel, max(1, int(numel * fraction)), replace=False))
        return TensorPatch(entry["tensor_index"], numel, idx, rng.normal(0, scale, idx.size))

    def packet(self, patches, sequence, **kw) -> bytes:
        kw.setdefault("value_coding", ValueCoding.F32)
        kw.setdefault("mode", Mode.BASE_RELATIVE)
        kw.setdefault("device_id", DEVICE)
        kw.setdefault("hmac_key", KEY)
        return wire.encode_update(patches, base_sha256=self.sha, sequence=sequence, **kw)

    def patched(self, data: bytes, packet: bytes) -> bytes:
        decoded = wire.decode_update(packet, expected_base_sha256=self.sha,
                                     expected_device_id=DEVICE, hmac_key=KEY)
        return wire.apply_update(data, self.table, decoded)


def _litert_logits(model_bytes: bytes, frames: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model_bytes, num_threads=1)
    runner = interpreter.get_signature_runner("serving_default")  # interpreter kept alive
    return np.stack([runner(frame=f[None].astype(np.float32))["logits"][0] for f in frames])


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _schedule(path: Path, items: list[tuple[int, Path]]) -> Path:
    path.write_text("".join(json.dumps({"frame": k, "packet": str(p)}) + "\n" for k, p in items))
    return path


def _reseal(body: bytes) -> bytes:
    """Header + payload -> + CRC + HMAC with the device key: only the field under test is wrong."""
    body += struct.pack("<I", zlib.crc32(body))
    return body + hmac.new(KEY, body, hashlib.sha256).digest()


class _LivelyExport:
    """A tiny DeepLab whose weights matter: He-initialised convs and non-trivial BatchNorm
    statistics (a fresh tiny init collapses to near-constant logits, which would hide updates)."""

    def __init__(self, out: Path) -> None:
        from mobdistill.export.api import export_model
        from mobdistill.models import registry

        self.entry = registry.get("deeplab")
        self.config = registry.configure(self.entry, tiny=True)
        torch.manual_seed(0)
        model = self.entry.build(self.config).eval()
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for mod in model.modules():
                if isinstance(mod, torch.nn.Conv2d):
                    fan_in = mod.weight[0].numel()
                    mod.weight.copy_(torch.randn(mod.weight.shape, generator=g)
                                     * (2.0 / fan_in) ** 0.5)
                elif isinstance(mod, torch.nn.BatchNorm2d):
                    n = mod.weight.shape
                    mod.weight.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
                    mod.bias.copy_(torch.randn(n, generator=g) * 0.1)
                    mod.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                    mod.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
        self.checkpoint = out / "student.pt"
        torch.save(model.state_dict(), self.checkpoint)
        result = export_model("deeplab", out_dir=out, formats=("tflite",), config=self.config,
                              checkpoint=self.checkpoint, tiny=True)
        self.manifest_path = result.manifest_path

    def model(self) -> torch.nn.Module:
        model = self.entry.build(self.config)
        model.load_state_dict(torch.load(self.checkpoint, weights_only=True))
        return model.eval()


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Model:
    return Model(_LivelyExport(tmp_path_factory.mktemp("lively-deeplab")))


@pytest.fixture()
def frames(model, tmp_path):
    path = tiny_models.random_frames(tmp_path / "f.rgb", 4, (model.height, model.width), seed=7)
    raw = np.fromfile(path, np.uint8).reshape(4, model.height, model.width, 3)
    return path, raw


def _run(device, model, frames_path, runs, **kw):
    kw.setdefault("warmup_runs", 0)
    kw.setdefault("update_key_file", model.key_file)
    kw.setdefault("update_device_id", DEVICE.hex())
    return run_engine(device, model.manifest_path, num_runs=runs, frames_path=frames_path,
                      output_logits=True, timeout_s=120, **kw)


def _logits(result, model, runs):
    got = np.fromfile(result.output_logits_path, np.float32)
    return got.reshape(runs, model.height, model.width, -1)


# ----------------------------------------------------------------------------- tests
def test_applied_update_matches_litert_and_pytorch(engine_binary, model, frames, device,
                                                   tmp_path):
    """A 5% sparse change of a BN-folded conv weight in PyTorch space, sent in deployed space."""
    from mobdistill.export.deploy import run_torch, signature_modules
    from mobdistill.models import registry

    path, raw = frames
    entry = model.biggest(folded=True)
    torch_model = model.export.model()
    params = dict(torch_model.named_parameters())
    weight = params[entry["parameter"]].detach().numpy().astype(np.float64)
    bn = dict(torch_model.named_modules())[entry["fold"]["module"]]
    scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().double().numpy()
    rng = np.random.default_rng(3)
    changed = np.sort(rng.choice(weight.size, weight.size // 20, replace=False))
    new_weight = weight.copy().reshape(-1)
    new_weight[changed] += rng.normal(0, 0.3, changed.size)
    new_weight = new_weight.reshape(weight.shape)
    # deployed = permute(torch * scale[out]): the map from deployed position to torch index
    perm = entry["permutation"]
    order = np.transpose(np.arange(weight.size).reshape(weight.shape), perm).reshape(-1)
    position = np.empty_like(order)
    position[order] = np.arange(order.size)
    folded = (new_weight * scale.reshape((-1,) + (1,) * (weight.ndim - 1))).reshape(-1)
    deployed_idx = np.sort(position[changed])
    values = folded[order[deployed_idx]].astype(np.float32)
    patch = TensorPatch(entry["tensor_index"], weight.size, deployed_idx, values)
    packet = model.packet([patch], sequence=1)
    sched = _schedule(tmp_path / "s.jsonl", [(3, _write(tmp_path / "p1.mdup", packet))])

    runs = 8
    result = _run(device, model, path, runs, update_schedule=sched, update_blocking=True)
    assert [f.model_version for f in result.frames] == [0] * 3 + [1] * 5
    (rec,) = result.updates
    assert rec["status"] == "applied" and rec["sequence"] == 1 and rec["reason"] is None
    assert rec["received_frame"] == 3 and rec["swapped_frame"] == 3
    assert rec["values"] == changed.size and rec["mode"] == "base_relative"
    for stage in ("decode_us", "patch_us", "build_us", "warm_us"):
        assert rec[stage] > 0
    summary = result.summary["updates"]
    assert summary["applied"] == 1 and summary["rejected"] == 0
    assert result.summary["model_version"] == 1

    got = _logits(result, model, runs)
    order_frames = raw[[f.frame for f in result.frames]]
    old = _litert_logits(model.base, order_frames)
    new = _litert_logits(model.patched(model.base, packet), order_frames)
    np.testing.assert_allclose(got[:3], old[:3], rtol=0, atol=1e-5)
    np.testing.assert_allclose(got[3:], new[3:], rtol=0, atol=1e-5)
    assert np.abs(new[3:] - old[3:]).max() > 1e-3, "the update must change the outputs"

    # the PyTorch model with the same sparse change (BatchNorm frozen) gives the same logits
    with torch.no_grad():
        params[entry["parameter"]].copy_(torch.from_numpy(new_weight.astype(np.float32)))
    specs = registry.get("deeplab").signatures(model.export.config, model.height, model.width)
    module = signature_modules(torch_model, specs)["serving_default"]
    ref = np.stack([run_torch(module, {"frame": f[None].astype(np.float32)})["logits"][0]
                    for f in order_frames[3:]])
    rel = np.abs(got[3:] - ref).max() / np.abs(ref).max()
    assert rel < 1e-4, rel


def _rejection_packets(model: Model, tmp_path: Path) -> tuple[list[tuple[str, bytes]], bytes]:
    rng = np.random.default_rng(11)
    entry = model.biggest(folded=False)
    tidx, numel = entry["tensor_index"], entry["buffer_size"] // 4
    good = model.packet([model.patch(entry, rng)], sequence=2)
    unsigned = model.packet([model.patch(entry, rng)], sequence=3, hmac_key=None)
    delta, f32 = wire.IndexCoding.DELTA_VARINT, ValueCoding.F32

    def raw(index: int, value: float, sequence: int = 3) -> bytes:
        """One record, one element, uncompressed, sealed with the device key."""
        index_bytes = bytes(wire._varints(np.array([index], np.uint64)))
        payload = (wire.record_header(tidx, numel, 1, delta, f32, b"", len(index_bytes), 4)
                   + index_bytes + struct.pack("<f", value))
        return _reseal(wire.HEADER.pack(wire.MAGIC, wire.VERSION, wire.FLAG_HMAC, 0, model.sha,
                                        DEVICE, sequence, 1, len(payload), len(payload))
                       + payload)

    body = good[:-(wire.CRC_BYTES + wire.HMAC_BYTES)]
    unknown = max(model.entries) + 1000
    return [
        ("bad_magic", b"XDUP" + good[4:]),
        ("bad_version", _reseal(body[:4] + b"\x03" + body[5:])),
        ("truncated", good[:-3]),
        ("bad_checksum", good[:80] + bytes([good[80] ^ 0x10]) + good[81:]),  # in the payload
        ("bad_hmac", unsigned),  # keys are on: an unauthenticated packet is refused
        ("bad_hmac", model.packet([model.patch(entry, rng)], sequence=3, hmac_key=b"x" * 32)),
        ("wrong_device", model.packet([model.patch(entry, rng)], sequence=3,
                                      device_id=bytes(16))),
        ("base_mismatch", wire.encode_update([model.patch(entry, rng)],
                                             base_sha256=hashlib.sha256(b"x").digest(),
                                             sequence=3, device_id=DEVICE, hmac_key=KEY)),
        ("out_of_range", raw(numel, 0.0)),
        ("non_finite", raw(5, float(np.inf))),
        ("out_of_range", model.packet([TensorPatch(unknown, 4, np.array([1]), np.array([1.0]))],
                                      sequence=3)),
        ("out_of_range", model.packet([TensorPatch(tidx, numel + 1, np.array([1]),
                                                   np.array([1.0]))], sequence=3)),
        ("replay", model.packet([model.patch(entry, rng)], sequence=1)),  # after seq 2 below
        ("replay", model.packet([model.patch(entry, rng)], sequence=5, mode=Mode.CUMULATIVE)),
    ], good


def test_rejections_keep_the_model_and_name_the_reason(engine_binary, model, frames, device,
                                                       tmp_path):
    path, raw_frames = frames
    bad, good = _rejection_packets(model, tmp_path)
    items = [(1, _write(tmp_path / "good.mdup", good))]
    for k, (name, data) in enumerate(bad):
        items.append((2 + k, _write(tmp_path / f"bad{k}.mdup", data)))
    items.append((2 + len(bad), tmp_path / "good.mdup"))  # the same packet again: replay
    runs = len(items) + 3
    result = _run(device, model, path, runs, update_schedule=_schedule(tmp_path / "s.jsonl", items),
                  update_blocking=True)
    recs = result.updates
    assert len(recs) == len(items)
    assert recs[0]["status"] == "applied" and recs[0]["swapped_frame"] == 1
    reasons = [r["reason"] for r in recs[1:]]
    assert reasons == [name for name, _ in bad] + ["replay"]
    for r in recs[1:]:
        assert r["status"] == "rejected" and r["swapped_frame"] is None and r["message"]
    assert [f.model_version for f in result.frames] == [0] + [2] * (runs - 1)
    summary = result.summary["updates"]
    assert summary["applied"] == 1 and summary["rejected"] == len(bad) + 1
    assert summary["rejected_by_reason"]["out_of_range"] == 3
    # every frame after the good update runs exactly the good model, whatever came later
    got = _logits(result, model, runs)
    order_frames = raw_frames[[f.frame for f in result.frames]]
    want = _litert_logits(model.patched(model.base, good), order_frames)
    np.testing.assert_allclose(got[1:], want[1:], rtol=0, atol=1e-5)


def test_keys_are_on_by_default(engine_binary, model, frames, device, tmp_path):
    path, _ = frames
    rng = np.random.default_rng(5)
    entry = model.biggest(folded=False)
    signed = _write(tmp_path / "a.mdup", model.packet([model.patch(entry, rng)], sequence=1))
    plain = _write(tmp_path / "b.mdup", model.packet([model.patch(entry, rng)], sequence=2,
                                                    hmac_key=None))
    wrong = _write(tmp_path / "c.mdup", model.packet([model.patch(entry, rng)], sequence=3,
                                                    hmac_key=b"another key"))
    sched = _schedule(tmp_path / "s.jsonl", [(1, signed), (2, plain), (3, wrong)])
    result = _run(device, model, path, 6, update_blocking=True, update_schedule=sched)
    assert [(r["status"], r["reason"]) for r in result.updates] == [
        ("applied", None), ("rejected", "bad_hmac"), ("rejected", "bad_hmac")]
    # no key and no explicit opt-out: the engine refuses to start, naming the fix
    with pytest.raises(EngineError, match="--update_key_file"):
        _run(device, model, path, 6, update_schedule=sched, update_key_file=None,
             update_device_id=None)


def _cumulative_chain(model: Model, tmp_path: Path, n: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    entries = sorted(model.entries.values(), key=lambda e: -e["buffer_size"])[:3]
    packets, models, data = [], [model.base], model.base
    for seq in range(1, n + 1):
        packet = model.packet([model.patch(e, rng, 0.1) for e in entries], sequence=seq,
                              mode=Mode.CUMULATIVE, value_coding=ValueCoding.F16)
        data = model.patched(data, packet)
        packets.append(_write(tmp_path / f"c{seq}.mdup", packet))
        models.append(data)
    return packets, models


def test_schedule_replay_is_deterministic(engine_binary, model, frames, device, tmp_path):
    path, _ = frames
    packets, _ = _cumulative_chain(model, tmp_path, 3)
    sched = _schedule(tmp_path / "s.jsonl", [(2, packets[0]), (2, packets[1]), (5, packets[2])])
    outs = []
    for _ in range(2):
        r = _run(device, model, path, 8, update_schedule=sched, update_blocking=True)
        outs.append((r, Path(r.output_logits_path).read_bytes()))
    (a, la), (b, lb) = outs
    key = ("sequence", "status", "received_frame", "swapped_frame", "mode")
    assert [[u[k] for k in key] for u in a.updates] == [[u[k] for k in key] for u in b.updates]
    assert [(u["sequence"], u["swapped_frame"]) for u in a.updates] == [(1, 2), (2, 2), (3, 5)]
    assert [f.model_version for f in a.frames] == [0, 0, 2, 2, 2, 3, 3, 3]
    assert la == lb


def test_no_frame_sees_a_half_applied_model(engine_binary, model, frames, device, tmp_path):
    """Asynchronous apply: frames keep running while slots build; each frame = one model."""
    path, raw_frames = frames
    packets, models = _cumulative_chain(model, tmp_path, 3, seed=2)
    sched = _schedule(tmp_path / "s.jsonl", [(5, packets[0]), (6, packets[1]), (7, packets[2])])
    runs = 300
    result = _run(device, model, path, runs, update_schedule=sched)
    assert [u["status"] for u in result.updates] == ["applied"] * 3
    versions = [f.model_version for f in result.frames]
    assert versions == sorted(versions) and set(versions) == {0, 1, 2, 3}
    for u in result.updates:
        assert u["swapped_frame"] > u["received_frame"], "the build ran beside the frames"
        assert versions[u["swapped_frame"]] == u["sequence"]
    got = _logits(result, model, runs)
    refs = [_litert_logits(m, raw_frames) for m in models]
    for i, f in enumerate(result.frames):
        np.testing.assert_allclose(got[i], refs[f.model_version][f.frame], rtol=0, atol=1e-5)


def _engine_cmd(engine_binary, model, tmp_path, runs, *flags):
    return [str(engine_binary), f"--manifest={model.manifest_path}",
            f"--runtime_lib={runtime_library()}", "--warmup_runs=0", f"--num_runs={runs}",
            f"--jsonl={tmp_path / 'run.jsonl'}", f"--summary={tmp_path / 'summary.json'}",
            f"--update_key_file={model.key_file}", f"--update_device_id={DEVICE.hex()}",
            *flags]


def _records(tmp_path):
    lines = (tmp_path / "run.jsonl").read_text().splitlines()
    return [json.loads(x) for x in lines if '"event"' in x]


def _wait_frames(tmp_path, n, proc, timeout_s=30.0):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end and proc.poll() is None:
        jsonl = tmp_path / "run.jsonl"
        if jsonl.is_file() and jsonl.read_text().count('"run"') >= n:
            return
        time.sleep(0.02)
    raise AssertionError("engine produced no frames")


def test_watched_dir_takes_complete_packets_and_renames_them(engine_binary, model, tmp_path):
    packets, _ = _cumulative_chain(model, tmp_path, 3, seed=4)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "0001.mdup").write_bytes(packets[0].read_bytes())
    (inbox / "0002.mdup").write_bytes(b"MDUP not a packet")
    os.utime(inbox / "0002.mdup", (time.time() - 60,) * 2)  # long complete: no writer is busy
    (inbox / "0003.mdup.part").write_bytes(packets[1].read_bytes())  # incomplete: ignored
    proc = subprocess.Popen(_engine_cmd(engine_binary, model, tmp_path, 150, "--run_delay=0.01",
                                        f"--update_dir={inbox}"),
                            stderr=subprocess.PIPE, text=True)
    try:
        _wait_frames(tmp_path, 20, proc)
        tmp = inbox / ".0004.tmp"  # a writer: temporary name, then an atomic rename
        tmp.write_bytes(packets[1].read_bytes())
        tmp.rename(inbox / "0004.mdup")
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
    finally:
        proc.kill()
    names = sorted(p.name for p in inbox.iterdir())
    assert names == ["0001.mdup.applied", "0002.mdup.rejected", "0003.mdup.part",
                     "0004.mdup.applied"]
    # the packets are gone; what is left is each outcome, which cannot be replayed as a packet
    receipts = [json.loads((inbox / n).read_text()) for n in names if n != "0003.mdup.part"]
    assert [(r["name"], r["status"]) for r in receipts] == [
        ("0001.mdup", "applied"), ("0002.mdup", "rejected"), ("0004.mdup", "applied")]
    recs = _records(tmp_path)
    assert [(r["name"], r["status"], r["reason"]) for r in recs] == [
        ("0001.mdup", "applied", None), ("0002.mdup", "rejected", "truncated"),
        ("0004.mdup", "applied", None)]
    assert recs[0]["received_frame"] == 0 and recs[2]["received_frame"] >= 20
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["model_version"] == 2 and summary["updates"]["applied"] == 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tcp_listener_acks_each_message(engine_binary, model, tmp_path):
    packets, _ = _cumulative_chain(model, tmp_path, 2, seed=6)
    port = _free_port()
    proc = subprocess.Popen(_engine_cmd(engine_binary, model, tmp_path, 400, "--run_delay=0.005",
                                        f"--update_port={port}"),
                            stderr=subprocess.PIPE, text=True)
    try:
        _wait_frames(tmp_path, 5, proc)
        with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
            for data in (packets[0].read_bytes(), b"garbage!", packets[0].read_bytes(),
                         packets[1].read_bytes()):
                conn.sendall(struct.pack(">I", len(data)) + data)
            reader = conn.makefile("r")
            acks = [json.loads(reader.readline()) for _ in range(4)]
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
    finally:
        proc.kill()
    assert [(a["status"], a["reason"], a["sequence"]) for a in acks] == [
        ("applied", None, 1), ("rejected", "truncated", None), ("rejected", "replay", 1),
        ("applied", None, 2)]
    assert all(a["event"] == "update" and a["source"] == "tcp" for a in acks)
    assert acks[0]["swapped_frame"] >= acks[0]["received_frame"] >= 5
    assert _records(tmp_path) == acks  # the ack line is the JSONL record


def test_tcp_listener_is_bounded_by_the_run(engine_binary, model, tmp_path):
    """A client that connects and never sends does not keep the engine alive."""
    port = _free_port()
    proc = subprocess.Popen(_engine_cmd(engine_binary, model, tmp_path, 40, "--run_delay=0.05",
                                        f"--update_port={port}"),
                            stderr=subprocess.PIPE, text=True)
    conn = None
    try:
        for _ in range(500):
            try:
                conn = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except OSError:
                time.sleep(0.01)
        assert conn is not None, "the listener never accepted"
        assert proc.wait(timeout=30) == 0
        assert conn.recv(1) == b"", "the engine closed the idle connection at the end"
    finally:
        proc.kill()
        if conn is not None:
            conn.close()


def test_update_flags_are_validated(engine_binary, model, tmp_path):
    base = _engine_cmd(engine_binary, model, tmp_path, 2)
    for flags, text in [(["--update_port=70000"], "--update_port"),
                        ([f"--update_key_file={tmp_path}/k"], "need an update source"),
                        ([f"--update_state_file={tmp_path}/s"], "need an update source"),
                        ([f"--update_dir={tmp_path}/missing"], "is not a folder"),
                        ([f"--update_schedule={tmp_path}/none.jsonl"], "--update_schedule"),
                        (["--update_build_priority=high"], "idle or normal")]:
        done = subprocess.run(base + flags, capture_output=True, text=True, timeout=60)
        assert done.returncode == 1 and text in done.stderr, done.stderr


def _thread_policies(pid: int) -> list[int]:
    """Scheduling policy of each of the process's threads (0 SCHED_OTHER, 5 SCHED_IDLE)."""
    policies = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:  # the thread exited meanwhile
            continue
        policies.append(int(stat.rsplit(")", 1)[1].split()[38]))  # field 41: policy
    return policies


def _policies_after_first_swap(engine_binary, model, tmp_path, flags=(), run_delay_s=0.02
                               ) -> tuple[dict, list[int]]:
    """Runs 2 threads with one packet waiting; the applied record and the thread policies
    a few frames after the swap, while the engine still runs."""
    packets, _ = _cumulative_chain(model, tmp_path, 1, seed=8)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "0001.mdup").write_bytes(packets[0].read_bytes())
    proc = subprocess.Popen(_engine_cmd(engine_binary, model, tmp_path, 100000,
                                        f"--run_delay={run_delay_s}", "--num_threads=2",
                                        f"--update_dir={inbox}", *flags),
                            stderr=subprocess.PIPE, text=True)
    try:
        end = time.monotonic() + 30
        while not (tmp_path / "run.jsonl").is_file() or not _records(tmp_path):
            assert proc.poll() is None and time.monotonic() < end, "no update record"
            time.sleep(0.01)
        swapped = _records(tmp_path)[0]["swapped_frame"]
        _wait_frames(tmp_path, swapped + 3, proc)
        policies = _thread_policies(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    return _records(tmp_path)[0], policies


def test_builds_run_at_idle_priority_and_frames_do_not(engine_binary, model, tmp_path):
    """The update worker builds as SCHED_IDLE; the thread pool it created for the new model
    runs frames at normal priority once the model is adopted (only the worker stays idle)."""
    record, policies = _policies_after_first_swap(engine_binary, model, tmp_path)
    assert record["status"] == "applied", record
    assert record["build_threads"] == 2
    assert len(policies) >= 3  # main, XNNPACK pool worker, update worker (at least)
    if record["build_priority"] == "idle":
        assert policies.count(5) == 1 and policies.count(0) == len(policies) - 1, policies
    else:  # a loaded host left the idle build no time for 3 frames (60 ms): it was raised
        assert record["build_priority"] == "raised" and set(policies) == {0}, policies


def test_a_build_still_running_after_three_frames_is_raised(engine_binary, model, tmp_path):
    """Frames back to back (about 1 ms each): the build outlasts 3 frames and finishes at the
    frame thread's priority, so other work cannot starve an update forever."""
    record, policies = _policies_after_first_swap(engine_binary, model, tmp_path, (), 0)
    assert (record["status"], record["build_priority"]) == ("applied", "raised"), record
    assert record["swapped_frame"] - record["received_frame"] > 3
    assert set(policies) == {0}, policies


def test_builds_at_normal_priority_when_asked(engine_binary, model, tmp_path):
    record, policies = _policies_after_first_swap(
        engine_binary, model, tmp_path, ("--update_build_priority=normal",))
    assert (record["status"], record["build_priority"]) == ("applied", "normal"), record
    assert record["build_threads"] == 2
    assert 5 not in policies, policies


_FACADE_PRIORITIES = """
import json, sys
from pathlib import Path
from mobdistill.errors import EngineError
from mobdistill.runtime.facade import FacadeEngine, facade_library
manifest, key, device, packet = sys.argv[1:5]
out = {}
for priority in ("idle", "normal", "high"):
    try:
        with FacadeEngine(Path(manifest), update_key=Path(key).read_bytes(),
                          device_id=bytes.fromhex(device), num_threads=2,
                          library=facade_library(build=True),
                          update_build_priority=priority) as engine:
            out[priority] = engine.apply_update(Path(packet).read_bytes()).record
    except EngineError as err:
        out[priority] = str(err)
print(json.dumps(out))
"""


def test_the_facade_takes_the_build_priority(model, tmp_path):
    """The app's path (md_engine_create's update_build_priority, in a child process: the facade
    brings its own TFLite runtime): the applied record names the priority it was built at."""
    packets, _ = _cumulative_chain(model, tmp_path, 1, seed=9)
    done = subprocess.run([sys.executable, "-c", _FACADE_PRIORITIES, str(model.manifest_path),
                           str(model.key_file), DEVICE.hex(), str(packets[0])],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.splitlines()[-1])
    for priority in ("idle", "normal"):
        record = out[priority]
        assert (record["status"], record["build_priority"], record["build_threads"]) == (
            "applied", priority, 2), record
    assert "idle or normal" in out["high"], out


_FACADE_PACING = """
import json, sys, threading, time
from pathlib import Path
import numpy as np
from mobdistill.runtime.facade import FacadeEngine, facade_library
manifest, key, device, *packets = sys.argv[1:]
records = {}
with FacadeEngine(Path(manifest), update_key=Path(key).read_bytes(),
                  device_id=bytes.fromhex(device), num_threads=2,
                  library=facade_library(build=True)) as engine:
    frame = np.zeros((engine.info.height, engine.info.width, 3), np.uint8)
    for phase, pause_s, batch in (("back_to_back", 0.0, packets[:3]), ("gaps", 0.1, packets[3:])):
        stop = threading.Event()
        def frames():
            while not stop.is_set():
                engine.segment(frame)
                time.sleep(pause_s)
        thread = threading.Thread(target=frames)
        thread.start()
        time.sleep(max(0.3, 10 * pause_s))  # the engine's frame averages settle
        records[phase] = [engine.apply_update(Path(p).read_bytes()).record for p in batch]
        stop.set()
        thread.join()
print(json.dumps(records))
"""


def test_updates_wait_for_gaps_only_where_the_gaps_hold_them(model, tmp_path):
    """The app's path (frames marked, in a child process): with frames back to back the update
    worker does not wait for gaps that cannot hold its work (pacing "no_room"); with 100 ms
    between frames it works in the gaps ("gaps"). Each record's decision follows its own
    figures: 3 gaps (unpace_build_after_frames less one) against the last update's CPU time."""
    rng = np.random.default_rng(12)
    entry = model.biggest()
    packets = [_write(tmp_path / f"{s}.mdup", model.packet([model.patch(entry, rng)], s))
               for s in range(1, 7)]
    done = subprocess.run([sys.executable, "-c", _FACADE_PACING, str(model.manifest_path),
                           str(model.key_file), DEVICE.hex(), *map(str, packets)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.splitlines()[-1])
    assert [r["pacing"] for r in out["back_to_back"]] == ["no_room"] * 3, out
    assert [r["pacing"] for r in out["gaps"]] == ["gaps"] * 3, out
    records = out["back_to_back"] + out["gaps"]
    assert all(r["status"] == "applied" and r["work_cpu_us"] > 0 for r in records), records
    for before, record in zip(records, records[1:]):
        room_us = 3 * record["frame_gap_us"]
        assert (record["pacing"] == "no_room") == (room_us < before["work_cpu_us"]), (before,
                                                                                      record)
