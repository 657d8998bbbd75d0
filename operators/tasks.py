"""Plain Ray tasks of the bookkeeping (listing, staging scans, key sets, repeat search).

Each asks for half a CPU (they read files and sort keys) and is retried when its worker or node
dies: their inputs are files and the results of other tasks, so a rerun redoes the same work.
"""

from __future__ import annotations

from collections.abc import Callable

#: Retries of a task whose worker or node died.
TASK_RETRIES = 10


def cpu_task(fn: Callable, num_returns: int = 1):
    """``fn`` as a Ray remote function (Ray must be importable; it need not be started yet)."""
    import ray

    return ray.remote(num_cpus=0.5, num_returns=num_returns, max_retries=TASK_RETRIES)(fn)
