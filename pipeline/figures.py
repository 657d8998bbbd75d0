"""What a shard adds to a run's figures beyond rows and statuses: QA pairs, generated lengths, batch times.

The writer computes these per shard, into JSON fields of the shard's metadata row
(:data:`pipeline.shards.SHARD_META`): :func:`qa_figures` (pairs per status, the QA pool's tokens
and engine), :func:`length_counts` (how many ``ok`` captions and ``ok`` answers have each generated
length) and :func:`batch_times` (when each model batch in the shard was done, with its rows and
generated tokens, and when the shard's first engines were ready). The ledger adds up the QA
figures (:class:`QAFigures`) and the length counts (:class:`LengthCounts`); the observer keeps the
batch times (:class:`Timeline`), from which the report draws throughput over time and the engines'
start-up as its own segment. Batch times come from the engine actors' ``done_at`` stamps, so the
figure shows when work finished, not when shards were committed (which, for a short run, is one
spike at the end).

Everything the driver keeps here is bounded by the run's shape, not its rows: length counts by
the distinct lengths (at most ``max_tokens`` + 1 each), the timeline by :data:`TIMELINE_POINTS`.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from schemas import columns as C
from schemas.status import Status


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


def _ok_length_counts(lengths: pa.Array, statuses: pa.Array) -> dict[int, int]:
    """How many of the ``ok`` entries have each (non-null) length."""
    keep = pc.and_(pc.equal(statuses, Status.OK.value), pc.is_valid(lengths))
    kept = pc.filter(lengths, pc.fill_null(keep, False))
    if not len(kept):
        return {}
    vc = pc.value_counts(kept)
    return {int(v): int(n) for v, n in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist(),
                                           strict=True)}


def length_counts(data: pa.Table) -> str:
    """The shard's generated lengths as JSON: ``{"captions": {length: n}, "answers": {length: n}}``.

    ``captions`` counts the ``ok`` rows by ``num_generated_tokens``; ``answers`` counts the ``ok`` QA
    pairs by theirs. Either is null when the records carry no such counts (no status or token column;
    no QA, or QA pairs without per-pair tokens, as in version-1 records).
    """
    names = data.column_names
    captions = None
    if C.NUM_GENERATED_TOKENS in names and C.STATUS in names:
        captions = _ok_length_counts(data.column(C.NUM_GENERATED_TOKENS).combine_chunks(),
                                     data.column(C.STATUS).combine_chunks())
    answers = None
    if C.QA in names and C.NUM_GENERATED_TOKENS in {f.name for f in data.schema.field(C.QA).type.value_type}:
        pairs = pc.list_flatten(data.column(C.QA).combine_chunks())
        answers = _ok_length_counts(pc.struct_field(pairs, C.NUM_GENERATED_TOKENS),
                                    pc.struct_field(pairs, C.STATUS)) if len(pairs) else {}
    return json.dumps({"captions": captions, "answers": answers})


@dataclass
class LengthCounts:
    """Generated lengths of a run's ``ok`` captions and ``ok`` QA answers, counted shard by shard.

    ``captions`` / ``answers`` become None (for good) once a shard says its records carry no such
    counts: a histogram over some shards only would mislead.
    """

    captions: Counter | None = field(default_factory=Counter)
    answers: Counter | None = field(default_factory=Counter)

    def add(self, counts: str | None) -> None:
        """Count one shard's :func:`length_counts`."""
        f = json.loads(counts) if counts else {"captions": None, "answers": None}
        for name in ("captions", "answers"):
            mine, theirs = getattr(self, name), f[name]
            if theirs is None:
                setattr(self, name, None)
            elif mine is not None:
                mine.update({int(k): n for k, n in theirs.items()})


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


#: Most points a :class:`Timeline` keeps; past it, neighbouring points merge (the report draws about 20).
TIMELINE_POINTS = 4096


@dataclass
class Timeline:
    """Batch completions of one attempt, relative to its start (epoch seconds), for the report.

    Completions are kept in time buckets of ``resolution_s`` (0: every distinct time, as the
    batches came); when more than :data:`TIMELINE_POINTS` buckets are held, the resolution doubles
    and neighbours merge, so a run of any length holds a bounded timeline whose points still add
    up to its rows and tokens. A bucket's point is its last completion.
    """

    started_at: float
    ready_at: float | None = None
    resolution_s: float = 0.0
    _points: dict[float, list] = field(default_factory=dict)  # bucket -> [last t, rows, tokens]

    @property
    def batches(self) -> list[tuple[float, int, int]]:
        """``(t_s, rows, tokens)`` per point, in time order."""
        return [(t, rows, tokens) for t, rows, tokens in sorted(self._points.values())]

    def _bucket(self, t: float) -> float:
        return t if self.resolution_s == 0 else (t // self.resolution_s)

    def _keep(self, t: float, rows: int, tokens: int) -> None:
        point = self._points.setdefault(self._bucket(t), [t, 0, 0])
        point[0] = max(point[0], t)
        point[1] += rows
        point[2] += tokens

    def add(self, timing: str | None) -> None:
        """Keep one shard's :func:`batch_times`."""
        if not timing:
            return
        t = json.loads(timing)
        for at, rows, tokens in t["batches"]:
            self._keep(at - self.started_at, rows, tokens)
        while len(self._points) > TIMELINE_POINTS:
            self._coarsen()
        if t["ready_at"] is not None:
            self.ready_at = t["ready_at"] if self.ready_at is None else min(self.ready_at, t["ready_at"])

    def _coarsen(self) -> None:
        points = sorted(self._points.values())
        span = points[-1][0] - points[0][0]
        # The first coarsening picks a width that halves the points of an even spread; later ones double it.
        self.resolution_s = self.resolution_s * 2 if self.resolution_s else max(span / (TIMELINE_POINTS / 2), 1e-6)
        self._points = {}
        for t, rows, tokens in points:
            self._keep(t, rows, tokens)

    @property
    def startup_s(self) -> float | None:
        """Seconds from the start until the first row's engines were all ready; None without model stages."""
        return None if self.ready_at is None else round(max(0.0, self.ready_at - self.started_at), 3)
