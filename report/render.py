"""One self-contained HTML page from one or more runs: every plot is an SVG inside the page
(a data: URI), no script, style or font is fetched, so it opens offline and can be mailed."""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import math
from datetime import datetime, timezone
from typing import Any, Callable

import numpy as np

from mobdistill.report.runs import Run

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")

# Counts the plots the browser decoded, so a headless check can read it from the DOM.
_RENDER_CHECK = """<script>
window.addEventListener("load", () => {
  const plots = [...document.querySelectorAll("figure.plot img")];
  document.body.dataset.plotsDecoded = plots.filter(i => i.complete && i.naturalWidth > 0).length;
});
</script>"""

_STYLE = """<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
.grid { display: grid; gap: 1em; grid-template-columns: repeat(var(--columns), minmax(0, 1fr)); }
figure.plot { margin: 0; max-width: 60em; } figure.plot img { width: 100%; height: auto; }
figcaption { font-size: 0.85em; color: #555; }
table { border-collapse: collapse; font-size: 0.85em; }
td, th { border: 1px solid #ccc; padding: 2px 6px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } .missing { color: #aaa; }
</style>"""


def _figure(draw: Callable[[Any], None], *, height: float = 3.2, rows: int = 1,
            ratios: list[float] | None = None) -> str:
    """A matplotlib figure drawn by `draw(axes)` as an SVG data URI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, 1, figsize=(7, height), sharex=True, squeeze=False,
                             gridspec_kw={"height_ratios": ratios} if ratios else None)
    draw([a[0] for a in axes])
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="svg")
    plt.close(fig)
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode()


def _plot_html(kind: str, uri: str, caption: str) -> str:
    return (f'<figure class="plot" data-plot="{kind}"><img alt="{html.escape(caption)}" '
            f'src="{uri}"><figcaption>{html.escape(caption)}</figcaption></figure>')


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else math.nan


def _latency_plot(run: Run, color: str) -> str:
    trace = run.latency
    assert trace is not None
    measured = [ms for ms, m in zip(trace.invoke_ms, trace.measured) if m]
    p50, p99 = _percentile(measured, 50), _percentile(measured, 99)
    tracks = [t for t in (trace.thermal_c, trace.cpu_mhz) if t]

    def draw(axes: list[Any]) -> None:
        ax = axes[0]
        ax.plot(trace.run, trace.invoke_ms, ".-", color=color, lw=0.7, ms=2.5, label="invoke")
        warm = [(r, ms) for r, ms, m in zip(trace.run, trace.invoke_ms, trace.measured) if not m]
        if warm:
            ax.plot(*zip(*warm), "o", color="#999", ms=3, label="warmup")
        ax.axhline(p50, color="k", ls="--", lw=0.8, label=f"p50 {p50:.2f} ms")
        ax.axhline(p99, color="k", ls=":", lw=0.8, label=f"p99 {p99:.2f} ms")
        ax.set_ylabel("invoke (ms)")
        ax.legend(fontsize=7, loc="upper right")
        for track_ax, track, unit in zip(axes[1:], tracks, ("°C", "MHz")):
            for name, values in track.items():
                points = [(r, v) for r, v in zip(trace.run, values) if v is not None]
                if points:
                    track_ax.plot(*zip(*points), lw=0.8, label=name)
            track_ax.set_ylabel("thermal (°C)" if track is trace.thermal_c else "CPU (MHz)")
            track_ax.legend(fontsize=6, loc="upper right", ncol=2)
        axes[-1].set_xlabel("run (frame)")

    uri = _figure(draw, height=2.6 + 1.4 * len(tracks), rows=1 + len(tracks),
                  ratios=[2.0] + [1.0] * len(tracks))
    recorded = " with " + " and ".join(
        n for n, t in (("temperatures", trace.thermal_c), ("CPU clocks", trace.cpu_mhz)) if t
    ) if tracks else " (no sensors recorded)"
    return _plot_html("latency-timeline", uri, f"{run.label}: invoke per frame{recorded}")


def _queue_plot(runs: list[Run]) -> str:
    def draw(axes: list[Any]) -> None:
        ax = axes[0]
        for run, color in runs_with_colors(runs):
            curve = run.queue
            assert curve is not None
            ax.fill_between(curve.queue_length, curve.p10_ms, curve.p90_ms, color=color,
                            alpha=0.2)
            ax.plot(curve.queue_length, curve.p50_ms, "o-", color=color, label=run.label)
        ax.set_xlabel("memory queue length Q")
        ax.set_ylabel("invoke (ms), p50 and p10–p90")
        ax.legend(fontsize=7)

    return _plot_html("latency-vs-queue", _figure(draw), "Latency vs memory queue length")


def _miou_plot(runs: list[Run]) -> str:
    def draw(axes: list[Any]) -> None:
        ax = axes[0]
        for run, color in runs_with_colors(runs):
            trace = run.miou
            assert trace is not None
            ax.plot(trace.time_s, trace.miou, color=color, lw=0.8, label=run.label)
            for t in trace.updates_s:
                ax.axvline(t, color=color, ls="--", lw=0.6, alpha=0.7)
        ax.set_xlabel("stream time (s)")
        ax.set_ylabel("mIoU vs teacher")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7)

    return _plot_html("miou-over-time", _figure(draw),
                      "mIoU per frame; dashed lines: an applied update's first frame")


def _bytes_plot(runs: list[Run]) -> str:
    def draw(axes: list[Any]) -> None:
        ax = axes[0]
        width = 0.8 / len(runs)
        for offset, (run, color) in enumerate(runs_with_colors(runs)):
            sizes = run.updates
            assert sizes is not None
            x = np.array(sizes.sequence) + offset * width
            kb = np.array(sizes.bytes) / 1000.0
            delivered = np.array([s == "delivered" for s in sizes.status])
            ax.bar(x[delivered], kb[delivered], width, color=color, label=run.label)
            if (~delivered).any():
                ax.bar(x[~delivered], kb[~delivered], width, color=color, alpha=0.35,
                       hatch="//", label=f"{run.label} (late or lost)")
        ax.set_xlabel("update sequence")
        ax.set_ylabel("packet (kB)")
        ax.legend(fontsize=7)

    return _plot_html("bytes-per-update", _figure(draw), "Bytes per update packet")


def runs_with_colors(runs: list[Run]) -> list[tuple[Run, str]]:
    return [(run, COLORS[i % len(COLORS)]) for i, run in enumerate(runs)]


def _table(title: str, runs: list[Run], rows: dict[str, list[str]]) -> str:
    head = "".join(f"<th>{html.escape(r.label)}</th>" for r in runs)
    body = []
    for key, values in rows.items():
        cells = "".join(f"<td>{html.escape(v)}</td>" if v else '<td class="missing">–</td>'
                        for v in values)
        body.append(f"<tr><th>{html.escape(key)}</th>{cells}</tr>")
    return (f'<table data-table="{title}"><thead><tr><th></th>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")


def _summary_rows(runs: list[Run]) -> dict[str, list[str]]:
    def measured(run: Run) -> list[float]:
        trace = run.latency
        return [ms for ms, m in zip(trace.invoke_ms, trace.measured) if m] if trace else []

    def fmt(value: float, unit: str) -> str:
        return "" if math.isnan(value) else f"{value:.2f}{unit}"

    return {
        "kind": [r.kind for r in runs],
        "folder": [str(r.path) for r in runs],
        "frames": [str(len(r.latency.run)) if r.latency else "" for r in runs],
        "invoke p50": [fmt(_percentile(measured(r), 50), " ms") for r in runs],
        "invoke p99": [fmt(_percentile(measured(r), 99), " ms") for r in runs],
        "mean mIoU": [fmt(float(np.mean(r.miou.miou)), "") if r.miou else "" for r in runs],
        "updates": [str(len(r.updates.sequence)) if r.updates else "" for r in runs],
        "mean bytes per update": [
            f"{np.mean(r.updates.bytes):,.0f}" if r.updates else "" for r in runs],
    }


def _keyed_rows(runs: list[Run], part: Callable[[Run], dict[str, str]]) -> dict[str, list[str]]:
    keys = list(dict.fromkeys(k for r in runs for k in part(r)))
    return {k: [part(r).get(k, "") for r in runs] for k in keys}


def distinct_labels(runs: list[Run]) -> list[Run]:
    """Runs whose labels repeat (two seeds of one scheme) get their folder's name added."""
    labels = [r.label for r in runs]
    return [dataclasses.replace(r, label=f"{r.label} ({r.path.name})")
            if labels.count(r.label) > 1 else r for r in runs]


def render(runs: list[Run]) -> str:
    """The whole page for `runs`, side by side in run order."""
    runs = distinct_labels(runs)
    sections = [f"<h2>Runs</h2>{_table('summary', runs, _summary_rows(runs))}"]
    timed = [r for r in runs if r.latency]
    if timed:
        colors = dict((r.label, c) for r, c in runs_with_colors(runs))
        plots = "".join(_latency_plot(r, colors[r.label]) for r in timed)
        sections.append(f'<h2>Latency per frame</h2><div class="grid" '
                        f'style="--columns:{len(timed)}">{plots}</div>')
    for title, has, plot in (("Latency vs memory queue", lambda r: r.queue, _queue_plot),
                             ("mIoU over time", lambda r: r.miou, _miou_plot),
                             ("Bytes per update", lambda r: r.updates, _bytes_plot)):
        chosen = [r for r in runs if has(r)]
        if chosen:
            sections.append(f"<h2>{title}</h2>{plot(chosen)}")
    sections.append("<h2>Settings</h2>" + _table("settings", runs,
                                                 _keyed_rows(runs, lambda r: r.settings)))
    sections.append("<h2>Tool versions</h2>" + _table("tools", runs,
                                                      _keyed_rows(runs, lambda r: r.tools)))
    title = "mobdistill report: " + ", ".join(r.label for r in runs)
    created = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title>{_STYLE}</head><body>"
            f"<h1>{html.escape(title)}</h1><p>Written {created} from {len(runs)} run(s).</p>"
            f"{''.join(sections)}{_RENDER_CHECK}</body></html>\n")
