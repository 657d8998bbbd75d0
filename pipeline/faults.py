"""Named crash points for fault-injection tests.

``VLMBATCH_CRASH_AT=<point>`` makes the process die at that point as abruptly as a killed
driver would (``os._exit``, no cleanup, no atexit). Unset in production; the tests use it to
crash a run exactly between its last data file and its manifest, a window too narrow to hit
with a timed kill.
"""

from __future__ import annotations

import os

BEFORE_MANIFEST = "before-manifest"
AFTER_SHARDS = "after-shards"


def crash_point(name: str, count: int | None = None) -> None:
    """Die here if ``VLMBATCH_CRASH_AT`` names this point (``name:count`` for counted points)."""
    want = os.environ.get("VLMBATCH_CRASH_AT")
    if want and want == (name if count is None else f"{name}:{count}"):
        os._exit(137)


LOSE_STREAM = "lose-stream-after-shards"


def lose_stream_point(count: int) -> None:
    """Fail the stream here, once per process, as a node lost beyond Ray's retries does, if asked.

    ``VLMBATCH_CRASH_AT=lose-stream-after-shards:<count>`` raises Ray's own
    ``ObjectReconstructionFailedError`` (what a block whose every copy was on a
    lost node gives when lineage cannot rebuild it) after ``count`` shards of this attempt: the
    moment is exact, which a timed node kill is not.
    """
    global _lost
    if _lost or os.environ.get("VLMBATCH_CRASH_AT") != f"{LOSE_STREAM}:{count}":
        return
    _lost = True
    import ray.exceptions

    raise ray.exceptions.ObjectReconstructionFailedError(
        "ab" * 28, None, "injected: every copy of a block was on a lost node")


_lost = False
