"""The explicit, versioned Arrow schema of committed dataset rows (caption + visual QA per image).

A ShareGPT4V-style build commits one row per input image: the caption columns of
:data:`schemas.records.CAPTION_SCHEMA`, the image path relative to the image root, the
caption instruction drawn for the image, and its question-answer pairs, each with its own
status (a pair that failed a post-check stays for inspection but is not exported).
"""

from __future__ import annotations

import pyarrow as pa

from schemas import columns as C
from schemas.records import CAPTION_SCHEMA

#: Bump when a column is added, removed or changes type; stored in every file and manifest.
DATASET_SCHEMA_VERSION = "1"

#: One question-answer pair. ``origin``: manifest, set or generate. ``status``: ok or why not.
QA_PAIR = pa.struct(
    [
        pa.field(C.QA_QUESTION, pa.string()),
        pa.field(C.QA_ANSWER, pa.string()),
        pa.field(C.QA_ORIGIN, pa.string()),
        pa.field(C.STATUS, pa.string()),
        pa.field(C.ERROR, pa.string()),
        pa.field(C.FINISH_REASON, pa.string()),
    ]
)

_EXTRA_AFTER_SOURCE = [pa.field(C.IMAGE, pa.string())]
_EXTRA_AFTER_PROMPT = [pa.field(C.INSTRUCTION, pa.string())]
_EXTRA_AFTER_CAPTION_PROVENANCE = [
    pa.field(C.QA, pa.list_(QA_PAIR)),
    pa.field(C.QA_MODEL_ID, pa.string()),
    pa.field(C.QA_ENGINE, pa.string()),
]


def _fields() -> list[pa.Field]:
    fields: list[pa.Field] = []
    for field in CAPTION_SCHEMA:
        fields.append(field)
        if field.name == C.SOURCE:
            fields.extend(_EXTRA_AFTER_SOURCE)
        elif field.name == C.PROMPT:
            fields.extend(_EXTRA_AFTER_PROMPT)
        elif field.name == C.SAMPLING_HASH:
            fields.extend(_EXTRA_AFTER_CAPTION_PROVENANCE)
    return fields


DATASET_SCHEMA = pa.schema(
    _fields(),
    metadata={b"vlmbatch.schema_version": DATASET_SCHEMA_VERSION.encode(), b"vlmbatch.record": b"dataset"},
)
