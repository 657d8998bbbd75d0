"""Post-checks of generations: text that must not become a training example gets a status.

A generation that is empty, ends in a repetition loop, was cut at ``max_tokens`` or contains a
refusal phrase keeps its text (for inspection) but its row (or QA pair) is no longer ``ok``.
:func:`check_generation` is the pure check; :func:`postcheck_stage` applies it to the
caption column on CPU tasks, and the QA stage applies it to every question and answer.
"""

from __future__ import annotations

import re

import pyarrow as pa

from operators.base import Resources, Stage
from operators.rows import set_columns
from schemas import columns as C
from schemas.spec import PostCheckConfig
from schemas.status import Status

_MAX_NGRAM = 8
# Loops in text without spaces (CJK, or byte-level noise) are caught on characters.
_CHAR_LOOP = re.compile(r"(.{1,24}?)\1{5,}$", re.DOTALL)
_CHAR_LOOP_MIN = 24


def repetition_loop(text: str, min_repeats: int = 4) -> str | None:
    """The repeating unit if ``text`` ends in a loop, else None.

    A loop is a word n-gram (n up to 8) repeated back to back at least ``min_repeats`` times at
    the end of the text, or a character unit repeated at least six times over 24+ characters.
    A model caught in a loop keeps emitting until ``max_tokens``, so the tail is where it shows.
    """
    words = text.split()
    for n in range(1, _MAX_NGRAM + 1):
        if len(words) < n * min_repeats:
            break
        unit = words[-n:]
        repeats = 1
        while len(words) >= n * (repeats + 1) and words[-n * (repeats + 1): len(words) - n * repeats] == unit:
            repeats += 1
        if repeats >= min_repeats:
            return " ".join(unit)
    tail = text.rstrip()[-400:]
    m = _CHAR_LOOP.search(tail)
    if m and len(tail) - m.start() >= _CHAR_LOOP_MIN and m.group(1).strip():
        return m.group(1)
    return None


def check_generation(
    text: str | None, finish_reason: str | None, config: PostCheckConfig
) -> tuple[Status, str] | None:
    """Why ``text`` is not a usable generation, or None when it passes every enabled check.

    Order: empty, refusal, repetition, truncated (a loop usually also hits ``max_tokens``; the
    loop is the more useful diagnosis).
    """
    stripped = (text or "").strip()
    if config.empty and not stripped:
        return Status.EMPTY_GENERATION, "the model generated no text"
    if config.refusal:
        lowered = stripped.lower()
        for phrase in config.refusal_phrases:
            if phrase.lower() in lowered:
                return Status.REFUSAL, f"generation contains the refusal phrase {phrase!r}"
    if config.repetition:
        unit = repetition_loop(stripped, config.repetition_min_repeats)
        if unit is not None:
            return Status.REPETITION, f"generation ends in a repetition loop of {unit[:60]!r}"
    if config.truncated and finish_reason == "length":
        return Status.TRUNCATED, "generation was cut at sampling.max_tokens (finish_reason 'length')"
    return None


class PostCheckBatch:
    """Per-batch post-check of one text column (picklable)."""

    def __init__(self, config: PostCheckConfig, text_column: str = C.CAPTION):
        self.config = config
        self.text_column = text_column

    def __call__(self, table: pa.Table) -> pa.Table:
        statuses = table.column(C.STATUS).to_pylist()
        errors = table.column(C.ERROR).to_pylist()
        texts = table.column(self.text_column).to_pylist()
        reasons = table.column(C.FINISH_REASON).to_pylist()
        for i, status in enumerate(statuses):
            if status != Status.OK.value:
                continue
            failed = check_generation(texts[i], reasons[i], self.config)
            if failed is not None:
                statuses[i], errors[i] = failed[0].value, failed[1]
        return set_columns(table, {C.STATUS: statuses, C.ERROR: errors})


def postcheck_stage(config: PostCheckConfig, text_column: str = C.CAPTION) -> Stage:
    """Turn unusable ``ok`` generations into ``empty_generation`` / ``refusal`` / ``repetition`` / ``truncated``.

    Failed rows keep their text and finish reason; rows already failed pass through unchanged.
    One block per batch: a larger batch would gather the engine's output blocks into one, and
    nothing could be written (or survive a crash) until they all arrived.
    """
    return Stage("postcheck", PostCheckBatch, dict(config=config, text_column=text_column),
                 needs=(text_column, C.FINISH_REASON, C.STATUS, C.ERROR), produces=(C.STATUS, C.ERROR),
                 resources=Resources(num_cpus=0.25))
