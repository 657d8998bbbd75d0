"""The explicit, versioned Arrow schema of committed rows, derived from one rule.

A run commits the columns its rows carry after the last stage, in the order of the catalogue
(:data:`schemas.columns.TYPES`), with the catalogue's types, less the transient ones. A caption
run of a prefix therefore commits the caption record (id, source, image facts, caption,
provenance); a dataset build adds the relative ``image``, the drawn ``instruction`` and the
``qa`` pairs. The sink casts every block to this schema before writing, so the output schema is
never inferred from the first block (a block of failed rows has null captions, a block of
good rows has strings; both must land with the same types).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pyarrow as pa

from schemas import columns as C

#: Bump when a catalogue column changes type or meaning; stored in every file and manifest.
#: 2: the QA pair struct gained its token counts (``num_prompt_tokens``, ``num_generated_tokens``), a
#: changed type of the ``qa`` column; rows gained ``source_id``, the QA pool's token totals and its
#: revision and sampling hash. Version-1 files lack them (readers take them as null).
SCHEMA_VERSION = "2"
#: Columns that make a record a dataset record (ShareGPT4V-style) rather than a caption record.
DATASET_COLUMNS = frozenset({C.IMAGE, C.INSTRUCTION, C.QA})


class UnknownColumn(KeyError):
    """A column with no type in the catalogue (``schemas/columns.py`` TYPES)."""


def record_kind(columns: Iterable[str]) -> str:
    """``dataset`` for rows that carry an image path, a drawn instruction or QA pairs, else ``caption``."""
    return "dataset" if DATASET_COLUMNS & set(columns) else "caption"


def record_schema(columns: Iterable[str], types: Mapping[str, pa.DataType] | None = None) -> pa.Schema:
    """The committed schema of rows that carry ``columns``.

    Args:
        types: committed types more specific than the catalogue's (a fixed-size embedding), by column.

    Raises:
        UnknownColumn: naming a column the catalogue has no type for.
    """
    have = set(columns)
    unknown = sorted(have - set(C.TYPES))
    if unknown:
        raise UnknownColumn(f"column {', '.join(map(repr, unknown))} has no type in schemas/columns.py TYPES; "
                            "declare it there so it reaches the committed Parquet")
    types = types or {}
    fields = [pa.field(name, types.get(name, type_), nullable=name not in C.REQUIRED)
              for name, type_ in C.TYPES.items() if name in have and name not in C.TRANSIENT]
    kind = record_kind(have)
    return pa.schema(fields, metadata={b"vlmbatch.schema_version": SCHEMA_VERSION.encode(),
                                       b"vlmbatch.record": kind.encode()})


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
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
