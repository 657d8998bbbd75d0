"""CPU seconds of a process and its descendants, read from ``/proc/<pid>/stat``, grouped by role.

Used around the engine's steady window: the caption actor's process (vLLM's front end: input
processing, detokenising, the actor's asyncio loop), vLLM's engine core and any worker processes
below it. ``utime + stime`` of each live process; a process that exits inside the window loses
its share (vLLM's processes live as long as the engine).
"""

from __future__ import annotations

import os
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` so far; None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the command name may hold spaces; fields after it are fixed
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14 and 15 of stat(5))


def role(cmdline: str, pid: int, root: int) -> str:
    """``front_end`` (the root process itself), ``engine_core``, ``worker`` or ``other``, from the command line."""
    if pid == root:
        return "front_end"
    if "EngineCore" in cmdline:
        return "engine_core"
    if "Worker" in cmdline or "worker" in cmdline.split(" ")[0]:
        return "worker"
    return "other"


def tree_cpu(root: int | None = None) -> dict[str, dict]:
    """``{pid: {"role", "name", "cpu_s"}}`` for ``root`` (default: this process) and its live descendants."""
    import psutil

    root = root or os.getpid()
    out: dict[str, dict] = {}
    try:
        procs = [psutil.Process(root), *psutil.Process(root).children(recursive=True)]
    except psutil.NoSuchProcess:
        return out
    for proc in procs:
        try:
            name = " ".join(proc.cmdline()[:2])[:80] or proc.name()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        cpu = cpu_seconds(proc.pid)
        if cpu is not None:
            out[str(proc.pid)] = {"role": role(name, proc.pid, root), "name": name, "cpu_s": cpu}
    return out


def refresh(snapshot: dict[str, dict]) -> dict[str, dict]:
    """``snapshot`` (a :func:`tree_cpu`) with the CPU seconds of the same processes read again: a few ``/proc``
    reads, no walk of the process table (the engine's processes do not change in its steady state)."""
    out = {}
    for pid, entry in snapshot.items():
        cpu = cpu_seconds(int(pid))
        if cpu is not None:
            out[pid] = {**entry, "cpu_s": cpu}
    return out


def cpu_by_role(before: dict[str, dict], after: dict[str, dict]) -> dict[str, float]:
    """CPU seconds spent between two :func:`tree_cpu` snapshots, summed per role (plus ``total``)."""
    spent: dict[str, float] = {}
    for pid, a in after.items():
        b = before.get(pid, {}).get("cpu_s", 0.0)
        spent[a["role"]] = spent.get(a["role"], 0.0) + a["cpu_s"] - b
    spent["total"] = sum(spent.values())
    return {k: round(v, 3) for k, v in spent.items()}
