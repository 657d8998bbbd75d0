"""Drop rows whose id is already done (resume, scheduled incremental runs)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from operators.base import Operator
from schemas import columns as C

if TYPE_CHECKING:
    import ray.data


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


class SkipDoneOperator(Operator):
    """Keep only rows whose id is not in ``done_ids``."""

    name = "skip-done"

    def __init__(self, done_ids: list[str]):
        self.done_ids = done_ids

    def requires(self) -> tuple[str, ...]:
        return (C.ID,)

    def produces(self) -> tuple[str, ...]:
        return ()

    def apply(self, ds: ray.data.Dataset) -> ray.data.Dataset:
        import ray

        ref = ray.put(pa.array(self.done_ids, pa.string()))
        # batch_size=None keeps block boundaries: one block in, one (smaller) block out.
        return ds.map_batches(SkipIds(ref), batch_size=None, batch_format="pyarrow", zero_copy_batch=True,
                              num_cpus=0.25)
