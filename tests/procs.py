"""Finding the processes a test started, by a marker in their environment (every descendant inherits it), and
free loopback ports for the servers it starts. Plain Python (no pytest): the benchmarks use it too."""

from __future__ import annotations

import os
import socket


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


def free_port_block(n: int) -> int:
    """First port of ``n`` consecutive free loopback ports (the S3 server uses a block of 13)."""
    import random

    for _ in range(200):
        base = random.randrange(20000, 60000 - n)
        socks = []
        try:
            for port in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no block of free ports found")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
