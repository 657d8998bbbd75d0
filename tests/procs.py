"""Finding the processes a test started, by a marker in their environment (every descendant inherits it)."""

from __future__ import annotations

import os


def pids_with_env(assignment: str, cmdline_contains: str | None = None) -> list[int]:
    """Pids (not this one) whose environment holds ``NAME=value`` ``assignment``."""
    want = assignment.encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if want not in f.read().split(b"\0"):
                    continue
            if cmdline_contains is not None:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if cmdline_contains not in f.read().replace(b"\0", b" ").decode(errors="replace"):
                        continue
        except OSError:
            continue
        pids.append(int(entry))
    return pids
