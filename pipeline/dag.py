"""The Python DAG composition API: a lazy, validated chain of stages after one source.

    pipe = (Pipeline.read(PrefixSource(spec.source))
            .then(fetch_stage(spec.source, spec.decode))
            .then(decode_stage(spec.decode))
            .then(caption_stage(...)))
    pipe.validate()                 # on the driver, in milliseconds
    manifest = Run(spec, pipeline=pipe).execute()    # nothing runs before this

:func:`pipeline.plan.build_pipeline` composes the same chain from a spec (what ``vlmbatch run``
runs). Validation walks the chain with the columns each stage sees; a stage that needs a column
nobody produced fails with the stage, the column, the nearest known name and the columns that
exist, and a stage that produces a column with no type in the catalogue fails naming it.
``then`` returns a new pipeline, so partial pipelines can be reused.

A :class:`Barrier` in the chain (at most one: dedup, :mod:`pipeline.curate`) splits a run in two
passes: the stages before it run to the end and are committed as the index pass, the barrier
decides, then the whole chain runs again with the barrier's mark stage right after the source.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from operators.base import PipelineError, SourceOperator, Stage
from schemas import columns as C

if TYPE_CHECKING:
    import ray.data

__all__ = ["Barrier", "Pipeline", "PipelineError"]


class Barrier:
    """A step that needs every row of the stages before it first (a global decision, e.g. dedup).

    Attributes:
        name: shown in logs and validation errors.
        needs: columns the stages before it must produce.
        produces: columns its mark stage sets in the second pass.
    """

    name: str = "barrier"
    needs: tuple[str, ...] = ()
    produces: tuple[str, ...] = ()
    types: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"Barrier({self.name!r})"


@dataclass(frozen=True)
class Pipeline:
    """An immutable chain: one source, then stages in order (and at most one :class:`Barrier`)."""

    source: SourceOperator
    stages: tuple[Stage | Barrier, ...] = ()

    @classmethod
    def read(cls, source: SourceOperator) -> Pipeline:
        """Start a pipeline at ``source``."""
        if not isinstance(source, SourceOperator):
            raise PipelineError(f"a pipeline starts at a SourceOperator, got {type(source).__name__}")
        return cls(source)

    def then(self, stage: Stage | Barrier) -> Pipeline:
        """A new pipeline with ``stage`` appended."""
        if not isinstance(stage, Stage | Barrier):
            raise PipelineError(f"then() takes a Stage or a Barrier, got {type(stage).__name__}")
        if isinstance(stage, Barrier) and self.barrier is not None:
            raise PipelineError(f"a pipeline holds one barrier; {self.barrier.name!r} is already in it")
        return replace(self, stages=(*self.stages, stage))

    @property
    def barrier(self) -> Barrier | None:
        """The pipeline's barrier, if any."""
        return next((s for s in self.stages if isinstance(s, Barrier)), None)

    def index_pass(self) -> Pipeline:
        """The stages before the barrier: the first pass of a two-pass run."""
        cut = next(i for i, s in enumerate(self.stages) if isinstance(s, Barrier))
        return Pipeline(self.source, self.stages[:cut])

    def column_types(self) -> dict[str, Any]:
        """Committed types of columns more specific than the catalogue's (from the stages' ``types``)."""
        out: dict[str, Any] = {}
        for stage in self.stages:
            out.update(stage.types)
        return out

    def validate(self, final_needs: tuple[str, ...] = ()) -> tuple[str, ...]:
        """Check the source's settings and every stage's column contract, in order.

        Args:
            final_needs: columns the consumer of the last stage needs (the sink's writer).

        Returns:
            The columns the rows carry after the last stage, in the order they were first produced.

        Raises:
            PipelineError: naming the first step whose needs are not met.
        """
        try:
            self.source.check()
        except (ValueError, KeyError) as exc:
            raise PipelineError(f"{self.source.name}: {exc.args[0] if exc.args else exc}") from exc
        available = list(self.source.produces())
        for stage in self.stages:
            missing = [c for c in stage.needs if c not in available]
            if isinstance(stage, Barrier):
                if missing:
                    raise PipelineError(self._missing_message(stage.name, missing, available))
                available += [c for c in stage.produces if c not in available]
                continue
            if missing:
                raise PipelineError(self._missing_message(stage.name, missing, available))
            untyped = [c for c in stage.produces if c not in C.TYPES]
            if untyped:
                raise PipelineError(f"stage {stage.name!r} produces column {', '.join(map(repr, untyped))} which has "
                                    "no type in schemas/columns.py TYPES; declare it there so it reaches the sink")
            available = [c for c in available if c not in stage.drops]
            available += [c for c in stage.produces if c not in available]
        missing = [c for c in final_needs if c not in available]
        if missing:
            raise PipelineError(self._missing_message("sink", missing, available))
        return tuple(available)

    @staticmethod
    def _missing_message(step: str, missing: list[str], available: list[str]) -> str:
        parts = []
        for column in missing:
            near = difflib.get_close_matches(column, sorted(available), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            parts.append(f"{column!r}{hint}")
        return (f"stage {step!r} requires column {', '.join(parts)} which no earlier step produces; "
                f"available: {', '.join(sorted(available))}")

    def dataset(self, skip: Stage | Sequence[Stage] | None = None, mark: Stage | None = None) -> ray.data.Dataset:
        """The lazy Ray dataset of this chain (nothing runs); call :meth:`validate` first.

        Args:
            skip: stages that drop rows already done (resume, schedules), each applied as early as
                the column it needs holds its final value: right after the source, or right after
                the last stage that produces it (``id`` from content is produced by the fetch).
            mark: the barrier's mark stage (second pass of a two-pass run), applied as soon as the
                rows' ids are final, like a skip on ``id``; the barrier itself is not a stage of the chain.
        """
        skips = [skip] if isinstance(skip, Stage) else list(skip or ())
        last = self.skip_positions(skips)
        skips += [mark] if mark is not None else []
        last += [self._final_after((C.ID,))] if mark is not None else []
        # Right after the source means inside its read, before it cuts parts into blocks (SourceOperator.read).
        ds = self.source.read([s for s, at in zip(skips, last, strict=True) if at == -1])
        for n, stage in enumerate(self.stages):
            if not isinstance(stage, Barrier):
                ds = stage.apply(ds)
            ds = self._apply_skips(ds, skips, last, n)
        return ds

    def skip_positions(self, skips: Sequence[Stage]) -> list[int]:
        """Where each skip stage goes: after stage number N (-1: right after the source)."""
        return [self._final_after(s.needs) for s in skips]

    def _final_after(self, needs: Sequence[str]) -> int:
        """The stage after which every column of ``needs`` holds its final value (-1: the source's)."""
        producers = [n for n, stage in enumerate(self.stages) if set(needs) & set(stage.produces)]
        if C.ID in needs and not self.source.ids_at_listing and not producers:
            producers = [len(self.stages) - 1]  # ids become final somewhere in the chain: skip at its end
        return producers[-1] if producers else -1

    @staticmethod
    def _apply_skips(ds, skips: list[Stage], last: list[int], position: int):
        for s, at in zip(skips, last, strict=True):
            if at == position:
                ds = s.apply(ds)
        return ds

    def describe(self) -> str:
        """One line per step, for logs."""
        return " -> ".join([self.source.name, *(s.name for s in self.stages)])
