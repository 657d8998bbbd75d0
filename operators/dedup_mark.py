"""Mark the duplicates the dedup barrier decided, before anything is fetched in the caption pass.

The decisions file (id, duplicate_of, similarity, reason) holds only the duplicates; it is read
once per worker process (cached by location), never per batch. A listed row it names becomes
``duplicate`` with its evidence, so every later stage passes it through untouched.
"""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq

from operators.base import Resources, Stage
from operators.rows import set_columns
from operators.storage import filesystem
from schemas import columns as C
from schemas.spec import StorageConfig
from schemas.status import Status

_CACHE: dict[str, dict[str, tuple[str, float, str]]] = {}


def load_decisions(uri: str, storage: StorageConfig) -> dict[str, tuple[str, float, str]]:
    """``id -> (duplicate_of, similarity, reason)`` of the decisions file at ``uri`` (cached per process)."""
    if uri not in _CACHE:
        fs, path = filesystem(uri, storage)
        table = pq.read_table(io.BytesIO(fs.cat_file(path)))
        _CACHE.clear()  # one run's decisions at a time
        _CACHE[uri] = {i: (d, s, e) for i, d, s, e in zip(
            table.column(C.ID).to_pylist(), table.column(C.DUPLICATE_OF).to_pylist(),
            table.column(C.DUPLICATE_SIMILARITY).to_pylist(), table.column(C.ERROR).to_pylist(), strict=True)}
    return _CACHE[uri]


class DedupMarkBatch:
    """Per-batch marking (picklable: carries the decisions' location, not the decisions)."""

    def __init__(self, decisions_uri: str, storage: StorageConfig):
        self.decisions_uri = decisions_uri
        self.storage = storage

    def __call__(self, table: pa.Table) -> pa.Table:
        decisions = load_decisions(self.decisions_uri, self.storage)
        statuses, errors = table.column(C.STATUS).to_pylist(), table.column(C.ERROR).to_pylist()
        dup_of: list[str | None] = [None] * table.num_rows
        sims: list[float | None] = [None] * table.num_rows
        for i, row_id in enumerate(table.column(C.ID).to_pylist()):
            hit = decisions.get(row_id)
            if hit is not None and statuses[i] == Status.OK.value:
                dup_of[i], sims[i], errors[i] = hit
                statuses[i] = Status.DUPLICATE.value
        return set_columns(table, {C.STATUS: statuses, C.ERROR: errors, C.DUPLICATE_OF: dup_of,
                                   C.DUPLICATE_SIMILARITY: sims})


def dedup_mark_stage(decisions_uri: str, storage: StorageConfig) -> Stage:
    """Rows the decisions name become ``duplicate`` with ``duplicate_of`` and ``duplicate_similarity``."""
    return Stage("dedup-mark", DedupMarkBatch, dict(decisions_uri=decisions_uri, storage=storage),
                 needs=(C.ID, C.STATUS, C.ERROR),
                 produces=(C.STATUS, C.ERROR, C.DUPLICATE_OF, C.DUPLICATE_SIMILARITY),
                 resources=Resources(num_cpus=0.25))
