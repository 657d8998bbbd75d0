"""Deterministic draws from a prompt or question set, keyed by a row's id.

A rerun, a resumed run and a scheduled run draw the same prompt for the same image, and the
draw is spread evenly over the set (a hash, not ``random`` with a global seed, so it does not
depend on block boundaries or worker order).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pyarrow as pa

from operators.base import PipelineError, Resources, Stage
from operators.rows import set_columns
from schemas import columns as C
from schemas.status import Status


def draw(row_id: str, options: Sequence[str], k: int = 1, salt: str = "") -> list[str]:
    """``k`` distinct options for ``row_id`` (all of them, reordered, when ``k`` exceeds the set)."""
    ranked = sorted(range(len(options)),
                    key=lambda j: hashlib.sha256(f"{salt}\0{row_id}\0{j}".encode()).digest())
    return [options[j] for j in ranked[:k]]


class DrawPromptBatch:
    """Per-batch draw of one caption instruction per ``ok`` row (picklable)."""

    def __init__(self, prompts: Sequence[str]):
        self.prompts = tuple(prompts)

    def __call__(self, table: pa.Table) -> pa.Table:
        ids = table.column(C.ID).to_pylist()
        statuses = table.column(C.STATUS).to_pylist()
        chosen = [draw(i, self.prompts, salt="caption")[0] if s == Status.OK.value else None
                  for i, s in zip(ids, statuses, strict=True)]
        return set_columns(table, {C.INSTRUCTION: chosen})


def draw_prompt_stage(prompts: Sequence[str], batch_size: int = 256) -> Stage:
    """Give every ``ok`` row its caption instruction, drawn from a ShareGPT4V-style prompt set.

    Raises:
        PipelineError: the set is empty or holds an empty prompt.
    """
    if not prompts or not all(p.strip() for p in prompts):
        raise PipelineError("draw-prompt: caption.prompts must hold non-empty prompts")
    return Stage("draw-prompt", DrawPromptBatch, dict(prompts=tuple(prompts)), needs=(C.ID, C.STATUS),
                 produces=(C.INSTRUCTION,), resources=Resources(num_cpus=0.25), batch_size=batch_size)
