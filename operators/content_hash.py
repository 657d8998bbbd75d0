"""Content hashes of fetched bytes on CPU tasks: exact duplicates are found by hash, without a model."""

from __future__ import annotations

import hashlib

import pyarrow as pa

from operators.base import Resources, Stage
from operators.rows import set_columns
from schemas import columns as C
from schemas.status import Status


class ContentHashBatch:
    """Per-batch SHA-256 of ``image_bytes`` (hex) for every ``ok`` row; other rows get null."""

    def __call__(self, table: pa.Table) -> pa.Table:
        data = table.column(C.IMAGE_BYTES)
        statuses = table.column(C.STATUS).to_pylist()
        out = [hashlib.sha256(data[i].as_buffer()).hexdigest() if statuses[i] == Status.OK.value and data[i].is_valid
               else None for i in range(table.num_rows)]
        return set_columns(table, {C.CONTENT_HASH: out})


def content_hash_stage(batch_size: int = 32) -> Stage:
    """``content_hash``: the SHA-256 of each fetched object, as read (before any decoding)."""
    return Stage("content-hash", ContentHashBatch, needs=(C.IMAGE_BYTES, C.STATUS), produces=(C.CONTENT_HASH,),
                 resources=Resources(num_cpus=0.25), batch_size=batch_size, zero_copy=True)
