"""What a shard adds to a run's figures beyond rows and statuses: its QA pairs and its batches' completion times.

The writer computes both per shard, into two JSON fields of the shard's metadata row
(:data:`pipeline.shards.SHARD_META`): :func:`qa_figures` (pairs per status, the QA pool's tokens
and engine) and :func:`batch_times` (when each model batch in the shard was done, with its rows
and generated tokens, and when the shard's first engines were ready). The ledger adds up the QA
figures (:class:`QAFigures`); the observer keeps the batch times, from which the report draws
throughput over time and the engines' start-up as its own segment. Batch times come from the
engine actors' ``done_at`` stamps, so the figure shows when work finished, not when shards were
committed (which, for a short run, is one spike at the end).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from schemas import columns as C


def _total(data: pa.Table, name: str) -> int:
    return int(pc.sum(data.column(name)).as_py() or 0) if name in data.column_names else 0


def qa_figures(data: pa.Table) -> str | None:
    """The shard's QA figures as JSON (pairs per status, prompt and generated tokens, engine); None without QA."""
    if C.QA not in data.column_names:
        return None
    pairs = pc.list_flatten(data.column(C.QA))
    statuses = pc.struct_field(pairs, C.STATUS).to_pylist() if len(pairs) else []
    engines = sorted({e for e in data.column(C.QA_ENGINE).to_pylist() if e}) if C.QA_ENGINE in data.column_names \
        else []
    return json.dumps({"by_status": dict(sorted(Counter(statuses).items())),
                       "prompt_tokens": _total(data, C.QA_PROMPT_TOKENS),
                       "generated_tokens": _total(data, C.QA_GENERATED_TOKENS),
                       "engine": engines[0] if engines else None})


def batch_times(table: pa.Table) -> str:
    """When each model batch of this shard's rows was done, as JSON.

    ``{"batches": [[done_at, rows, generated tokens], ...], "ready_at": t}``: epoch seconds; a batch is
    the rows sharing one ``done_at`` stamp; tokens are caption and QA tokens together; ``ready_at`` is
    the earliest time all of some row's engines were ready. Empty without the engine actors' stamps.
    """
    if C.DONE_AT not in table.column_names:
        return json.dumps({"batches": [], "ready_at": None})
    done = table.column(C.DONE_AT).to_pylist()
    tokens = [0] * table.num_rows
    for name in (C.NUM_GENERATED_TOKENS, C.QA_GENERATED_TOKENS):
        if name in table.column_names:
            tokens = [t + (x or 0) for t, x in zip(tokens, table.column(name).to_pylist(), strict=True)]
    batches: dict[float, list[int]] = {}
    for t, n in zip(done, tokens, strict=True):
        if t is not None:
            entry = batches.setdefault(t, [0, 0])
            entry[0] += 1
            entry[1] += n
    ready = [t for t in table.column(C.ENGINES_READY_AT).to_pylist() if t] \
        if C.ENGINES_READY_AT in table.column_names else []
    return json.dumps({"batches": [[t, rows, toks] for t, (rows, toks) in sorted(batches.items())],
                       "ready_at": min(ready) if ready else None})


@dataclass
class QAFigures:
    """The QA figures of a run, added up shard by shard."""

    by_status: Counter = field(default_factory=Counter)
    prompt_tokens: int = 0
    generated_tokens: int = 0
    engine: str | None = None

    @property
    def pairs(self) -> int:
        return sum(self.by_status.values())

    def add(self, figures: str | None) -> None:
        """Count one shard's :func:`qa_figures` (None: a shard without QA)."""
        if not figures:
            return
        f = json.loads(figures)
        self.by_status.update(f["by_status"])
        self.prompt_tokens += f["prompt_tokens"]
        self.generated_tokens += f["generated_tokens"]
        self.engine = self.engine or f["engine"]


@dataclass
class Timeline:
    """Batch completions of one attempt, relative to its start (epoch seconds), for the report."""

    started_at: float
    batches: list[tuple[float, int, int]] = field(default_factory=list)
    ready_at: float | None = None

    def add(self, timing: str | None) -> None:
        """Keep one shard's :func:`batch_times`."""
        if not timing:
            return
        t = json.loads(timing)
        self.batches.extend((at - self.started_at, rows, tokens) for at, rows, tokens in t["batches"])
        if t["ready_at"] is not None:
            self.ready_at = t["ready_at"] if self.ready_at is None else min(self.ready_at, t["ready_at"])

    @property
    def startup_s(self) -> float | None:
        """Seconds from the start until the first row's engines were all ready; None without model stages."""
        return None if self.ready_at is None else round(max(0.0, self.ready_at - self.started_at), 3)
