"""Drop rows whose id is already done (resume, scheduled incremental runs)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from operators.base import Resources, Stage
from schemas import columns as C


class SkipIds:
    """Per-batch filter; the done ids travel once through the object store, not per task."""

    def __init__(self, done_ref):
        self.done_ref = done_ref
        self._done: pa.Array | None = None

    def __call__(self, table: pa.Table) -> pa.Table:
        if self._done is None:
            import ray

            self._done = ray.get(self.done_ref) if isinstance(self.done_ref, ray.ObjectRef) else self.done_ref
        return table.filter(pc.invert(pc.is_in(table.column(C.ID), value_set=self._done)))


def skip_done_stage(done_ids: list[str]) -> Stage:
    """Keep only rows whose id is not in ``done_ids`` (put in the object store here, once; Ray must be up).

    One block in, one (smaller) block out: block boundaries stay as they were.
    """
    import ray

    ref = ray.put(pa.array(done_ids, pa.string()))
    return Stage("skip-done", SkipIds, dict(done_ref=ref), needs=(C.ID,), resources=Resources(num_cpus=0.25),
                 keeps_rows=False, zero_copy=True)
