"""Ray Data's per-block statistics on the driver, kept to a bounded sample (ray-project/ray#66016).

Every Ray Data operator keeps one ``BlockStats`` (with its exec stats, unpickled from the task's
metadata) per output block for the life of the execution, for ``Dataset.stats()``: the driver
grows with the blocks a run has streamed, not with what is in flight (measured here: ~650 bytes
of Python objects per block per operator; at 8,192-row blocks, four operators, ~0.3 MiB per
million rows, and proportionally more with smaller blocks). Nothing of vlmbatch reads those
records: the run's figures come from the shards' own counts (:mod:`pipeline.shards`).

:func:`bound_block_stats` swaps each operator's list for a :class:`ThinnedList` once the
execution has started: it keeps every ``stride``-th record and, each time it reaches twice
``keep``, drops every other one and doubles the stride. What Ray Data's end-of-run summary
then shows per operator is a uniform sample of the run's blocks (its distributions hold; its
counts are of the sample). It reaches into Ray Data's executor, so it is written against the
pinned Ray version and does nothing, with one log line, where those internals differ.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

#: Records kept per operator: between KEEP and 2 * KEEP once thinning has begun.
KEEP = 128


class ThinnedList(list):
    """A list that keeps a uniform sample of what it was given: at most ``2 * keep`` items."""

    def __init__(self, items=(), keep: int = KEEP):
        super().__init__()
        self.keep = keep
        self.stride = 1
        self.seen = 0  # items appended in all, kept or not
        self.extend(items)

    def append(self, item) -> None:
        if self.seen % self.stride == 0:
            super().append(item)
            if len(self) >= 2 * self.keep:
                del self[1::2]  # the kept items were every stride-th seen: now every 2*stride-th
                self.stride *= 2
        self.seen += 1

    def extend(self, items) -> None:
        for item in items:
            self.append(item)


def bound_block_stats(ds, keep: int = KEEP) -> int:
    """Thin the per-block statistics of ``ds``'s running execution; the number of operators bounded.

    Call it once the dataset is being iterated (its executor exists). Idempotent: an operator
    already bounded is left as it is. 0, with a log line, where Ray Data keeps its executor or its
    operators' statistics otherwise than the pinned version does.
    """
    executor = getattr(ds, "_current_executor", None)
    topology = getattr(executor, "_topology", None)
    if not topology:
        log.info("Ray Data's executor is not where this Ray version kept it: per-block statistics left as they are")
        return 0
    bounded = 0
    for op in list(topology):
        stats = getattr(op, "_output_blocks_stats", None)
        if isinstance(stats, ThinnedList):
            bounded += 1
        elif isinstance(stats, list):
            op._output_blocks_stats = ThinnedList(stats, keep)
            bounded += 1
    return bounded
