"""The explicit, versioned Arrow schema of committed caption rows.

The sink casts every block to :data:`CAPTION_SCHEMA` before writing, so the output schema is
never inferred from the first block (a block of failed rows has null captions, a block of
good rows has strings; both must land with the same types).
"""

from __future__ import annotations

import pyarrow as pa

from schemas import columns as C

#: Bump when a column is added, removed or changes type; stored in every file and manifest.
SCHEMA_VERSION = "1"

CAPTION_SCHEMA = pa.schema(
    [
        pa.field(C.ID, pa.string(), nullable=False),
        pa.field(C.SOURCE, pa.string(), nullable=False),
        pa.field(C.NUM_BYTES, pa.int64()),
        pa.field(C.STATUS, pa.string(), nullable=False),
        pa.field(C.ERROR, pa.string()),
        pa.field(C.WIDTH, pa.int32()),
        pa.field(C.HEIGHT, pa.int32()),
        pa.field(C.ORIG_WIDTH, pa.int32()),
        pa.field(C.ORIG_HEIGHT, pa.int32()),
        pa.field(C.ORIG_FORMAT, pa.string()),
        pa.field(C.NUM_FRAMES, pa.int32()),
        pa.field(C.PROMPT, pa.string()),
        pa.field(C.CAPTION, pa.string()),
        pa.field(C.NUM_PROMPT_TOKENS, pa.int32()),
        pa.field(C.NUM_GENERATED_TOKENS, pa.int32()),
        pa.field(C.FINISH_REASON, pa.string()),
        pa.field(C.MODEL_ID, pa.string()),
        pa.field(C.MODEL_REVISION, pa.string()),
        pa.field(C.ENGINE, pa.string()),
        pa.field(C.SAMPLING_HASH, pa.string()),
        pa.field(C.CODE_VERSION, pa.string()),
        pa.field(C.RUN_ID, pa.string()),
    ],
    metadata={b"vlmbatch.schema_version": SCHEMA_VERSION.encode(), b"vlmbatch.record": b"caption"},
)


def conform(table: pa.Table, schema: pa.Schema = CAPTION_SCHEMA) -> pa.Table:
    """Return ``table`` with exactly ``schema``'s columns, in order, cast to its types.

    Missing nullable columns become nulls; extra columns are dropped (transient columns such
    as image bytes never reach the sink).

    Raises:
        KeyError: a non-nullable column is missing.
    """
    arrays = []
    for field in schema:
        if field.name in table.column_names:
            arrays.append(table.column(field.name).cast(field.type))
        elif field.nullable:
            arrays.append(pa.nulls(table.num_rows, type=field.type))
        else:
            raise KeyError(f"required column {field.name!r} missing from block with columns {table.column_names}")
    return pa.Table.from_arrays(arrays, schema=schema)
