"""Deterministic draws from a prompt or question set, keyed by a row's id.

A rerun, a resumed run and a scheduled run draw the same prompt for the same image, and the
draw is spread evenly over the set (a hash, not ``random`` with a global seed, so it does not
depend on block boundaries or worker order).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import pyarrow as pa

from operators.base import Operator, Resources
from operators.rows import set_columns
from schemas import columns as C
from schemas.status import Status

if TYPE_CHECKING:
    import ray.data


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
        return set_columns(table, {C.INSTRUCTION: chosen}, {C.INSTRUCTION: pa.string()})


class DrawPromptOperator(Operator):
    """Give every ``ok`` row its caption instruction, drawn from a ShareGPT4V-style prompt set."""

    name = "draw-prompt"

    def __init__(self, prompts: Sequence[str], batch_size: int = 256):
        self.prompts = tuple(prompts)
        self.batch_size = batch_size

    def check(self) -> None:
        if not self.prompts or not all(p.strip() for p in self.prompts):
            raise ValueError("caption.prompts must hold non-empty prompts")

    def requires(self) -> tuple[str, ...]:
        return (C.ID, C.STATUS)

    def produces(self) -> tuple[str, ...]:
        return (C.INSTRUCTION,)

    def apply(self, ds: ray.data.Dataset) -> ray.data.Dataset:
        return ds.map_batches(DrawPromptBatch(self.prompts), batch_size=self.batch_size, batch_format="pyarrow",
                              udf_modifying_row_count=False, **Resources(num_cpus=0.25).ray_args())
