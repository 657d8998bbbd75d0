"""Row statuses: every input row ends with exactly one of these."""

from __future__ import annotations

from enum import Enum


class Status(str, Enum):
    """Outcome of one input row. ``ok`` is the only status whose caption is usable."""

    OK = "ok"
    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"
    FETCH_ERROR = "fetch_error"
    EMPTY_FILE = "empty_file"
    NOT_AN_IMAGE = "not_an_image"
    DECODE_ERROR = "decode_error"
    TOO_LARGE = "too_large"
    PROMPT_TOO_LONG = "prompt_too_long"
    GENERATION_ERROR = "generation_error"
    EMPTY_GENERATION = "empty_generation"
    # Post-checks of a generation (operators/postcheck.py): the text is kept for inspection,
    # but the row is not a training example.
    REPETITION = "repetition"
    TRUNCATED = "truncated"
    REFUSAL = "refusal"
    # A manifest entry that names no usable image (missing field, path escaping the image root,
    # duplicate id): reported, never read.
    INVALID_ENTRY = "invalid_entry"
    # Curation (operators/embed/, pipeline/dedup/): the row keeps its evidence columns
    # (duplicate_of and duplicate_similarity; alignment_score) and is not a training example.
    DUPLICATE = "duplicate"
    LOW_ALIGNMENT = "low_alignment"
    # The embedding model could not embed the row's image (its pixels, not the batch, were at fault).
    EMBEDDING_ERROR = "embedding_error"

    def __str__(self) -> str:
        return self.value

