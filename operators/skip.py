"""Drop rows whose key is already done (resume, scheduled incremental runs), joining in CPU tasks.

The done keys are a :class:`operators.idset.KeySet`: sorted arrays that tasks built and left in
Ray's object store, split by a hash of the key. Each task of this stage maps them (zero-copy) and
binary-searches each of its block's keys in the one array of its hash; the driver ships only the
references.
"""

from __future__ import annotations

import pyarrow as pa

from operators.base import Resources, Stage
from operators.idset import KeySet
from schemas import columns as C


class SkipDone:
    """Per-batch filter: keep the rows whose ``column`` is not in ``done``."""

    def __init__(self, done: KeySet, column: str = C.ID):
        self.done = done
        self.column = column

    def __call__(self, table: pa.Table) -> pa.Table:
        if not table.num_rows:
            return table
        return table.filter(pa.array(~self.done.mask(table.column(self.column))))


def skip_done_stage(done: KeySet, column: str = C.ID) -> Stage:
    """Keep only rows whose ``column`` (``id``, or ``source`` when ids come from content) is not in ``done``.

    One block in, one (smaller) block out: block boundaries stay as they were. The stage is
    placed as early as ``column`` holds its final value (:meth:`pipeline.dag.Pipeline.dataset`).
    """
    return Stage(f"skip-done-{column}", SkipDone, dict(done=done, column=column), needs=(column,),
                 resources=Resources(num_cpus=0.25), keeps_rows=False, zero_copy=True)
