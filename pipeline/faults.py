"""Named crash points for fault-injection tests.

``VLMBATCH_CRASH_AT=<point>`` makes the process die at that point as abruptly as a killed
driver would (``os._exit``, no cleanup, no atexit). Unset in production; the tests use it to
crash a run exactly between its last data file and its manifest, a window too narrow to hit
with a timed kill.
"""

from __future__ import annotations

import os

BEFORE_MANIFEST = "before-manifest"


def crash_point(name: str) -> None:
    """Die here if ``VLMBATCH_CRASH_AT`` names this point."""
    if os.environ.get("VLMBATCH_CRASH_AT") == name:
        os._exit(137)
