"""Sparse updates into the harness app (`--runner app`): a run's scheduled packets delivered
into an update folder of the app's, watched by the engine inside it (`--update_dir`).

The engine binary reads a schedule (`--update_schedule`) and makes each packet visible as run K
starts. The app is handed packets the way its own downloader would: files that appear in its
watched folder. Before the app starts, every packet is copied into `files/updates/<tag>/` under
a dot name, which the watcher ignores (as it ignores `*.part`), size and sha256 checked; packets
for run 0 are renamed into place at once. While the app runs, one script on the device, as the
app's user, watches the app's frame log and renames each packet into place once the runs before
its frame are done. A rename is atomic: the watcher never sees part of a packet. The engine
records the frame it took each packet (`received_frame`); frames faster than the script's 10 ms
poll can take a packet a few frames after its scheduled one.

The HMAC key goes into `files/keys/<tag>.key` (0600, staged 0600, sha256 checked) and, like the
folder and any packet not delivered, is removed after the run.
"""

from __future__ import annotations

import logging
import posixpath
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mobdistill.errors import DeviceError, UsageError
from mobdistill.runtime.engine import EngineOptions, ScheduledPacket, read_schedule

if TYPE_CHECKING:  # app_runner imports this module
    from mobdistill.runtime.app_runner import HarnessApp

log = logging.getLogger(__name__)

POLL_S = 0.01  # how often the device-side script reads the app's frame log
HIDDEN_SUFFIX = ".pending"  # `.<name>.pending`: in the folder, not yet delivered


@dataclass(frozen=True)
class AppPacket:
    name: str  # in the app's update folder; the watcher takes packets in name order
    scheduled: ScheduledPacket


class AppUpdates:
    """A run's update folder and key in the app."""

    def __init__(self, app: HarnessApp, tag: str, options: EngineOptions) -> None:
        if options.update_dir is not None:
            raise UsageError("--runner app makes its own update folder in the app for each run; "
                             "give the packets as an update schedule instead of --update_dir")
        self.app = app
        self.folder: str | None = None
        self.key: str | None = None
        self.packets: list[AppPacket] = []
        self.tag = tag
        if options.update_schedule is not None:
            self.folder = posixpath.join(app.files_dir(), "updates", tag)
            self.packets = [AppPacket(f"u{i:04d}.mdup", entry)
                            for i, entry in enumerate(read_schedule(options.update_schedule))]

    @property
    def due_later(self) -> list[AppPacket]:
        """Packets for a run after the first: delivered while the app runs."""
        return [p for p in self.packets if p.scheduled.frame > 0]

    def record_names(self) -> dict[str, tuple[str, int | None]]:
        """For `load_records`: packet name -> (local file, the sequence its line declared)."""
        return {p.name: (str(p.scheduled.packet), p.scheduled.sequence) for p in self.packets}

    def prepare(self, key_file: Path | None, *, timeout_s: float) -> None:
        """Push the key and every packet (hidden); deliver the ones for run 0."""
        if key_file is not None:
            self.key = self.app.push(Path(key_file), f"keys/{self.tag}.key", private=True,
                                     timeout_s=timeout_s)
        if self.folder is None:
            return
        self.app.run_as(f"mkdir -p {shlex.quote(self.folder)}")
        relative = posixpath.relpath(self.folder, self.app.files_dir())
        for packet in self.packets:
            self.app.push(packet.scheduled.packet,
                          posixpath.join(relative, _hidden(packet.name)), timeout_s=timeout_s)
        now = [p for p in self.packets if p.scheduled.frame <= 0]
        if now:
            self.app.run_as(" && ".join(self._rename(p) for p in now))

    def deliver(self, jsonl: str, summary: str, *, package: str, timeout_s: float) -> list[str]:
        """Run the device-side delivery script until every later packet is delivered or the run
        has ended; its log lines (what was delivered after which run, what never was)."""
        if not self.due_later:
            return []
        try:
            out = self.app.run_as(self.script(jsonl, summary, package, timeout_s),
                                  timeout_s=timeout_s + 30)
        except DeviceError as err:  # the run goes on; what was not delivered shows as missing
            log.warning("delivering updates into the app stopped: %s", err)
            return [f"delivery stopped: {err}"]
        lines = out.strip().splitlines()
        for line in lines:
            log.info("app updates: %s", line)
        return lines

    def script(self, jsonl: str, summary: str, package: str, timeout_s: float) -> str:
        """sh for the app's user: for each packet in schedule order, wait until the frame log
        holds `frame` runs, then rename it into place. It stops early when the run ends (its
        summary or error file appears), the app's process is gone, or `timeout_s` passes."""
        q = shlex.quote
        steps = " && ".join(f"deliver {p.scheduled.frame} {q(p.name)} {q(self._rename(p))}"
                            for p in self.due_later)
        return "\n".join([
            f"j={q(jsonl)}; s={q(summary)}; end=$(( $(date +%s) + {int(timeout_s) + 1} )); i=0",
            # frame records are the lines that start with {"run": (update events do not)
            "runs() { n=$(grep -c '^{\"run\":' \"$j\" 2>/dev/null); echo \"${n:-0}\"; }",
            "deliver() {",
            "  while [ \"$(runs)\" -lt \"$1\" ]; do",
            "    if [ -f \"$s\" ] || [ -f \"$s.error\" ]; then "
            "echo \"not delivered (the run ended first): $2\"; return 1; fi",
            "    if [ \"$(date +%s)\" -ge \"$end\" ]; then "
            "echo \"not delivered (timed out): $2\"; return 1; fi",
            "    i=$((i + 1))",
            f"    if [ $((i % 100)) -eq 0 ] && ! pidof {q(package)} >/dev/null; then "
            "echo \"not delivered (the app is gone): $2\"; return 1; fi",
            f"    sleep {POLL_S:g}",
            "  done",
            "  eval \"$3\" && echo \"delivered $2 for run $1 after $(runs) runs\"",
            "}",
            f"{steps}; true",
        ])

    def _rename(self, packet: AppPacket) -> str:
        assert self.folder is not None
        q = shlex.quote
        return (f"mv -f {q(posixpath.join(self.folder, _hidden(packet.name)))} "
                f"{q(posixpath.join(self.folder, packet.name))}")

    def cleanup(self) -> None:
        """Remove the folder (undelivered packets, receipts) and the key from the app."""
        paths = [p for p in (self.folder, self.key) if p is not None]
        if not paths:
            return
        try:
            self.app.remove(*paths)
        except DeviceError as err:
            log.warning("could not remove the run's update folder or key from the app: %s", err)


def _hidden(name: str) -> str:
    return f".{name}{HIDDEN_SUFFIX}"
