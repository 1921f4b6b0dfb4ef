"""`mobdistill report`: runs of every kind on one page, rendered by a real headless browser
(Debian's chromium): the plots decode, the page needs no network, a screenshot is taken."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
from custom_model import custom_export  # noqa: E402, F401, I001 (fixture)

from mobdistill.cli import main  # noqa: E402
from mobdistill.runtime.engine import EngineOptions, find_engine  # noqa: E402
from mobdistill.runtime.profile import profile  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def profile_run(custom_export, tmp_path_factory) -> Path:  # noqa: F811
    """A real profile of a tiny student (the camera tests' custom model) on this host."""
    out = tmp_path_factory.mktemp("profile-run")
    profile(artifact=custom_export, out_dir=out,
            options=EngineOptions(num_runs=12, warmup_runs=2, engine_binary=find_engine()))
    return out


def sweep_run(folder: Path) -> Path:
    """The committed MobileVOS queue sweep (benchmarks/results) as a sweep folder."""
    folder.mkdir()
    shutil.copy(ROOT / "benchmarks/results/mobilevos_queue_sweep.json", folder / "sweep.json")
    return folder


def stream_run(folder: Path, frames: int = 60) -> Path:
    """A small stream folder in the files `mobdistill stream` writes (experiments/report.py):
    stream.json, frames.csv and the engine's JSONL, here with CPU clocks and temperatures as
    --record_sensors writes them on a phone, and two updates of which one arrived late."""
    (folder / "engine").mkdir(parents=True)
    rng = np.random.default_rng(0)
    updates = [{"sequence": 1, "bytes": 41_000, "status": "delivered",
                "engine": {"status": "applied", "received_frame": 20, "swapped_frame": 22}},
               {"sequence": 2, "bytes": 39_500, "status": "late", "engine": None}]
    (folder / "stream.json").write_text(json.dumps({
        "scheme": "ams", "settings": {"model": "deeplab", "seed": 0}, "frames": frames,
        "downlink": {"kbit_s": 12.5}, "updates": updates}))
    rows = ["frame,time_s,clip,model_version,miou_with_background,miou_foreground,invoke_us"]
    rows += [f"{i},{i / 30:.4f},bikes.mp4,{int(i >= 22)},{0.4 + 0.3 * (i >= 22):.3f},,{5000 + i}"
             for i in range(frames)]
    (folder / "frames.csv").write_text("\n".join(rows) + "\n")
    records = [{"run": i, "frame": i, "phase": "measure", "invoke_us": 5000 + 300 * rng.random(),
                "cpu_freq_khz": [1804800, 998400 + 1000 * i],
                "thermal_c": {"cpu-0-0": 40 + i / 10, "battery": 37.0}} for i in range(frames)]
    records.insert(21, {"event": "update", "sequence": 1, "status": "applied"})
    (folder / "engine" / "engine.jsonl").write_text("\n".join(map(json.dumps, records)) + "\n")
    return folder


def browser(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--user-data-dir={home}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=90)


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt-get install chromium; make "
                                              "setup installs it)")
def test_report_renders_in_chromium(profile_run, tmp_path, capsys):
    sweep = sweep_run(tmp_path / "sweep")
    stream = stream_run(tmp_path / "stream")
    page = tmp_path / "report.html"
    assert main(["report", str(profile_run), str(stream), str(sweep), "-o", str(page)]) == 0
    text = page.read_text()
    # self-contained: every src/href is a data: URI (nothing to fetch when it is opened)
    assert not re.findall(r'(?:src|href)="(?!data:)', text)
    assert "http://" not in text.replace("http://www.w3.org", "")

    done = browser("--dump-dom", page.as_uri(), home=tmp_path / "chromium")
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    plots = re.findall(r'<figure class="plot" data-plot="([a-z-]+)"', dom)
    assert sorted(plots) == ["bytes-per-update", "latency-timeline", "latency-timeline",
                             "latency-vs-queue", "miou-over-time"]
    assert f'data-plots-decoded="{len(plots)}"' in dom  # every SVG decoded by the browser
    assert "with temperatures and CPU clocks" in dom  # the stream's sensor tracks
    assert "(no sensors recorded)" in dom  # the host profile has none
    frames = [json.loads(line) for line in
              (profile_run / "engine" / "engine.jsonl").read_text().splitlines()]
    measured = [f["invoke_us"] / 1000 for f in frames if f.get("phase") == "measure"]
    assert f"{np.percentile(measured, 50):.2f} ms" in dom  # the table's p50 is the run's
    for setting in ("num_threads", "delegate_used", "litert runtime", "seed"):
        assert f"<th>{setting}</th>" in dom

    shot = tmp_path / "report.png"
    done = browser(f"--screenshot={shot}", "--window-size=1200,2400", page.as_uri(),
                   home=tmp_path / "chromium")
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape == (2400, 1200)
    assert (pixels < 128).mean() > 0.005  # text and plot lines, not a blank page


def test_not_a_run_is_refused(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "report.html"
    assert main(["report", str(tmp_path / "empty"), "-o", str(out)]) == 2
    assert "not a run folder" in capsys.readouterr().err and not out.exists()
