"""What the operator sees during and after a run, from the driver's commit loop.

:class:`RunObserver` gets one call per committed shard and prints one line of running counts
(images done, failed, images/s, tokens/s) beside Ray Data's per-operator progress bars. It
keeps a timeline of those counts, and after the manifest is written it writes the run report
(``pipeline.report``) beside it. Neither the line nor the report may fail a run: the manifest
is already the truth when the report is written.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TYPE_CHECKING, TextIO

from schemas.status import Status

if TYPE_CHECKING:
    import ray.data

    from schemas.manifest import Manifest
    from schemas.spec import StorageConfig

log = logging.getLogger(__name__)


class RunObserver:
    """Driver-side progress line and report writer of one commit.

    Args:
        stream: where the progress line goes (the job's log under Ray Jobs).
        min_interval_s: fewest seconds between two lines, so big runs do not flood the log.
        write_report: write ``report.json`` / ``report.html`` after the commit.
    """

    def __init__(self, stream: TextIO | None = None, min_interval_s: float = 2.0, write_report: bool = True):
        self.stream = stream
        self.min_interval_s = min_interval_s
        self.write_report = write_report
        self.started = time.monotonic()
        self.rows_in: int | None = None
        self.resumed = 0
        self.done = self.failed = self.tokens = 0
        self.timeline: list[tuple[float, int, int]] = []
        self._last_print = float("-inf")
        self._last_line = ""

    def start(self, rows_in: int | None, resumed: int = 0) -> None:
        """The commit loop begins: ``resumed`` rows were already in staging from an earlier attempt."""
        self.started = time.monotonic()
        self.rows_in, self.resumed = rows_in, resumed
        self._print(force=True)

    def shard(self, meta: dict) -> None:
        """One shard was written: its metadata row (rows, by_status JSON, token counts)."""
        self.done += int(meta["rows"])
        statuses = json.loads(meta["by_status"]) if isinstance(meta["by_status"], str) else meta["by_status"]
        self.failed += sum(n for s, n in statuses.items() if s != Status.OK.value)
        self.tokens += int(meta.get("generated_tokens") or 0)
        self.timeline.append((round(time.monotonic() - self.started, 3), self.done, self.tokens))
        self._print()

    def line(self) -> str:
        """The running count, e.g. ``[vlmbatch] 120/500 images done (3 failed), 4.10 images/s, 210.3 tokens/s``."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        total = f"/{self.rows_in - self.resumed}" if self.rows_in is not None else ""
        resumed = f", {self.resumed} resumed" if self.resumed else ""
        return (f"[vlmbatch] {self.done}{total} images done ({self.failed} failed{resumed}), "
                f"{self.done / elapsed:.2f} images/s, {self.tokens / elapsed:.1f} tokens/s")

    def _print(self, force: bool = False) -> None:
        now = time.monotonic()
        finished = self.rows_in is not None and self.done + self.resumed >= self.rows_in
        if not (force or finished or now - self._last_print >= self.min_interval_s):
            return
        line = self.line()
        if finished and line.split("),")[0] == self._last_line.split("),")[0]:
            return  # the end was already reported
        self._last_print, self._last_line = now, line
        print(line, file=self.stream or sys.stderr, flush=True)

    def committed(self, manifest: Manifest, run_root: str, storage: StorageConfig | None,
                  ds: ray.data.Dataset | None = None) -> dict | None:
        """The manifest is written: print the last line, write the report; return the report (None on failure)."""
        self._print(force=True)
        if not self.write_report:
            return None
        from pipeline.report import build_report, stage_times, write_report

        try:
            stages = stage_times(ds) if ds is not None else []
            report = build_report(manifest, run_root, storage, self.timeline, stages)
            write_report(report, run_root, storage)
        except Exception as exc:  # noqa: BLE001 - the run is committed; a report failure is only a warning
            log.warning("run %s is committed but its report could not be written: %s", manifest.run_id, exc)
            return None
        return report
