"""What the operator sees during a run, from the driver's commit loop.

:class:`RunObserver` gets one call per committed shard and prints one line of running counts
(images done, failed, images/s, tokens/s of caption and QA together) beside Ray Data's
per-operator progress bars; a source that cannot count its rows before reading them shows
``N/? images done`` until the end. It keeps the shards' per-batch completion times
(:class:`pipeline.figures.Timeline`), which the run's report draws. It only observes: it writes
nothing and never fails a run.
"""

from __future__ import annotations

import json
import sys
import time
from typing import TextIO

from pipeline.figures import Timeline
from schemas.status import Status


class RunObserver:
    """Driver-side progress line of one run.

    Args:
        stream: where the progress line goes (the job's log under Ray Jobs).
        min_interval_s: fewest seconds between two lines, so big runs do not flood the log.
    """

    def __init__(self, stream: TextIO | None = None, min_interval_s: float = 2.0):
        self.stream = stream
        self.min_interval_s = min_interval_s
        self.started = time.monotonic()
        self.rows_in: int | None = None
        self.resumed = 0
        self.done = self.failed = self.tokens = 0
        self.timeline = Timeline(time.time())
        self._last_print = float("-inf")
        self._last_line = ""

    def start(self, rows_in: int | None, resumed: int = 0) -> None:
        """The commit loop begins: ``resumed`` rows were already in staging from an earlier attempt.

        ``rows_in`` None: the source could not count its rows; the line says ``?`` until :meth:`finish`.
        """
        self.started = time.monotonic()
        self.timeline = Timeline(time.time())
        self.rows_in, self.resumed = rows_in, resumed
        self._print(force=True)

    def shard(self, meta: dict) -> None:
        """One shard was written: its metadata row (rows, by_status JSON, token counts, QA and batch times)."""
        self.done += int(meta["rows"])
        statuses = json.loads(meta["by_status"]) if isinstance(meta["by_status"], str) else meta["by_status"]
        self.failed += sum(n for s, n in statuses.items() if s != Status.OK.value)
        qa = json.loads(meta["qa"]) if meta.get("qa") else {}
        self.tokens += int(meta.get("generated_tokens") or 0) + int(qa.get("generated_tokens") or 0)
        self.timeline.add(meta.get("timing"))
        self._print()

    def line(self) -> str:
        """The running count, e.g. ``[vlmbatch] 120/500 images done (3 failed), 4.10 images/s, 210.3 tokens/s``."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        total = f"/{self.rows_in - self.resumed}" if self.rows_in is not None else "/?"
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

    def finish(self) -> None:
        """The loop is over: print the last count, unless the last line printed already says it.

        An unknown total is known now: every row has been written.
        """
        if self.rows_in is None:
            self.rows_in = self.done + self.resumed
        if self.line().split("),")[0] != self._last_line.split("),")[0]:
            self._print(force=True)
