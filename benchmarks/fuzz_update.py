"""Builds the update decoder's libFuzzer target (ASan + UBSan) and runs it for a while with
inputs up to --max-len bytes and the record/header dictionary; records the run.

    python benchmarks/fuzz_update.py [--seconds 300] [--max-len 2097152]   (or: make fuzz)

Seeds: the committed vectors plus large packets (a dense Q8 record of 1M elements, a
zip bomb, the bitmap bomb), so the fuzzer works on inputs of a MiB and more from the start.
Writes benchmarks/results/fuzz_update.json: commit, settings, inputs executed, edges (cov),
features, corpus size, largest corpus input, crashes.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "vectors"))
import make_vectors  # noqa: E402
from provenance import provenance  # noqa: E402

from mobdistill.contract import wire  # noqa: E402
from mobdistill.contract.wire import IndexCoding, TensorPatch, ValueCoding  # noqa: E402

SOURCE = REPO / "android" / "engine" / "update"
BUILD = REPO / "build" / "update-fuzz"
RESULTS = REPO / "benchmarks" / "results" / "fuzz_update.json"
STATS = re.compile(r"#(\d+)\s+(?:DONE|pulse|NEW|REDUCE|INITED)\s+cov: (\d+) ft: (\d+) corp: (\d+)/")


def build() -> Path:
    for argv in (["cmake", "-S", str(SOURCE), "-B", str(BUILD), "-DMOBDISTILL_UPDATE_FUZZ=ON",
                  "-DMOBDISTILL_UPDATE_TESTS=OFF", "-DCMAKE_CXX_COMPILER=clang++",
                  "-DCMAKE_BUILD_TYPE=RelWithDebInfo"],
                 ["cmake", "--build", str(BUILD), "--target", "mobdistill_update_fuzzer", "-j2"]):
        subprocess.run(argv, check=True, capture_output=True)
    return BUILD / "mobdistill_update_fuzzer"


def large_seeds(out: Path) -> list[Path]:
    """Signed packets of about a MiB, for the fuzzer's table (tensor 8: 1M elements)."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    base = bytes(32)
    numel = 1 << 20
    dense_q8 = wire.encode_update([TensorPatch(8, numel, np.arange(numel),
                                               rng.normal(0, 1, numel).astype(np.float32))],
                                  base_sha256=base, sequence=1, device_id=bytes(16),
                                  hmac_key=make_vectors.KEY, value_coding=ValueCoding.Q8)
    bitmap = np.packbits(rng.random(numel) < 0.5, bitorder="little").tobytes()
    count = int(np.unpackbits(np.frombuffer(bitmap, np.uint8)).sum())
    record = wire.record_header(8, numel, count, IndexCoding.BITMAP, ValueCoding.F16, b"",
                                len(bitmap), 2 * count)
    raw = record + bitmap + rng.bytes(2 * count)
    bitmap_f16 = wire.seal((wire.MAGIC, wire.VERSION, wire.FLAG_HMAC, 0, base, bytes(16), 1, 1,
                            len(raw), len(raw)), raw, make_vectors.KEY)
    paths = []
    for name, data in (("dense_q8_1m", dense_q8), ("bitmap_f16_1m", bitmap_f16)):
        path = out / f"{name}.mdup"
        path.write_bytes(data)
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=300)
    parser.add_argument("--max-len", type=int, default=2 << 20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    fuzzer = build()
    corpus, seeds = BUILD / "corpus", BUILD / "seeds"
    corpus.mkdir(parents=True, exist_ok=True)
    large_seeds(seeds)
    artifacts = BUILD / "artifacts"
    artifacts.mkdir(exist_ok=True)
    dictionary = SOURCE / "fuzz" / "decode_fuzzer.dict"
    argv = [str(fuzzer), f"-max_total_time={args.seconds}", f"-max_len={args.max_len}",
            f"-dict={dictionary}", f"-seed={args.seed}", "-rss_limit_mb=2048",
            "-malloc_limit_mb=64",
            "-print_final_stats=1", f"-artifact_prefix={artifacts}/", str(corpus),
            str(REPO / "tests" / "vectors"), str(seeds)]
    start = time.time()
    done = subprocess.run(["nice", "-n", "10", *argv], capture_output=True, text=True)
    log = done.stderr
    (BUILD / "fuzz.log").write_text(log)
    stats = STATS.findall(log)
    runs, cov, ft, corp = (int(x) for x in stats[-1]) if stats else (0, 0, 0, 0)
    crashes = sorted(p.name for p in artifacts.iterdir())
    sizes = [p.stat().st_size for p in corpus.iterdir()]
    result = {
        **provenance({"seconds": args.seconds, "max_len": args.max_len, "seed": args.seed,
                      "sanitizers": "address,undefined,fuzzer", "malloc_limit_mb": 64,
                      "dictionary": str(dictionary.relative_to(REPO)), "nice": 10,
                      "seeds": "tests/vectors + 2 packets of ~1 MiB (benchmarks/fuzz_update.py)",
                      "limits": "fuzz target's table: 3 tensors, 1,048,976 elements"}),
        "exit_code": done.returncode,
        "wall_s": round(time.time() - start, 1),
        "inputs_executed": runs, "edges_covered": cov, "features": ft, "corpus_inputs": corp,
        "corpus_files_on_disk": len(sizes), "largest_corpus_input_bytes": max(sizes, default=0),
        "crashes": crashes,
        "final_stats": [line for line in log.splitlines() if line.startswith("stat::")],
    }
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("exit_code", "inputs_executed", "edges_covered",
                                             "largest_corpus_input_bytes", "crashes")}))
    sys.exit(0 if done.returncode == 0 and not crashes else 1)


if __name__ == "__main__":
    main()
