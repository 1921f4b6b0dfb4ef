"""Hostile update packets (issue 9) against both decoders: outcome and status per decoder, the
C++ verify tool's peak memory and time per packet, for each student's derived limits.

    python benchmarks/hostile_inputs.py

Writes benchmarks/results/hostile_inputs.json. The packets are tests/hostile/decoder_bombs.py's
(the same ones the test set checks); each C++ run is a fresh `mobdistill-update-verify` process
started from a bare interpreter whose own footprint (`measure_floor_bytes`) is included in the
peak, so the peaks are upper bounds.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "hostile"))
import decoder_bombs as bombs  # noqa: E402
from provenance import provenance  # noqa: E402

from mobdistill.contract.wire import DecodeLimits  # noqa: E402
from mobdistill.runtime.update_verify import find_verify_tool, write_key_file  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "hostile_inputs.json"


def _python_run(packet: bytes, limits: DecodeLimits) -> tuple[str, float]:
    start = time.perf_counter()
    status = bombs.python_status(packet, limits)
    return status, time.perf_counter() - start


def measure_student(name: str, tool: Path, work: Path, repeats: int) -> dict:
    numels = bombs.student_numels(name)
    limits = DecodeLimits.for_numels(numels)
    table = bombs.write_table(work / f"{name}.table.txt", numels)
    (work / name).mkdir()
    key_file = write_key_file(work / name, bombs.KEY)
    rows = []
    for case in bombs.CASES:
        packet = case.build(numels, limits)
        path = work / name / f"{case.name}.mdup"
        path.write_bytes(packet)
        py_status, py_s = _python_run(packet, limits)
        runs = [bombs.run_tool(tool, path, table, key_file) for _ in range(repeats)]
        rows.append({"case": case.name, "description": case.description,
                     "packet_bytes": len(packet), "expected": case.expect,
                     "python_status": py_status, "python_s": round(py_s, 4),
                     "cpp_status": runs[0].status,
                     "cpp_peak_rss_mib": round(max(r.peak_rss_bytes for r in runs) / 2**20, 2),
                     "cpp_wall_s_median": round(sorted(r.wall_s for r in runs)[repeats // 2], 4),
                     "agree": py_status == runs[0].status == case.expect})
    return {"student": name, "tensors": len(numels), "max_elements": limits.max_elements,
            "max_raw_bytes": limits.max_raw_bytes, "packets": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="C++ runs per packet")
    args = parser.parse_args()
    tool = find_verify_tool(build=True)
    floor = bombs.measure([sys.executable, "-I", "-S", "-c", "pass"])["peak"]
    with tempfile.TemporaryDirectory() as tmp:
        students = [measure_student(n, tool, Path(tmp), args.repeats) for n in bombs.STUDENTS]
    settings = {"repeats": args.repeats, "tool": str(tool.relative_to(REPO)),
                "numels": "PyTorch parameters of each student at its paper config "
                          "(one tensor each; upper bound on the deployed map)",
                "peak": "ru_maxrss of a fresh tool process, incl. the bare interpreter "
                        "forked before exec",
                "seed": 0}
    result = {**provenance(settings),
              "measure_floor_mib": round(floor / 2**20, 2),
              "peak_limit_mib": bombs.PEAK_LIMIT_BYTES / 2**20,
              "students": students,
              "all_agree": all(r["agree"] for s in students for r in s["packets"]),
              "max_cpp_peak_mib": max(r["cpp_peak_rss_mib"] for s in students
                                      for r in s["packets"])}
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("all_agree", "max_cpp_peak_mib",
                                             "measure_floor_mib")}))
    for s in students:
        for r in s["packets"]:
            print(f"{s['student']:10s} {r['case']:28s} {r['packet_bytes']:>9d} B "
                  f"py={r['python_status']:10s} cpp={r['cpp_status']:10s} "
                  f"{r['cpp_peak_rss_mib']:6.1f} MiB {r['cpp_wall_s_median']:.4f} s")


if __name__ == "__main__":
    main()
