"""The Python DAG composition API: a lazy, validated chain of operators.

    pipe = (Pipeline.read(PrefixSource(spec.source))
            .then(FetchOperator(spec.source, spec.decode))
            .then(DecodeOperator(spec.decode))
            .then(CaptionOperator(...)))
    pipe.validate()                 # on the driver, in milliseconds
    result = pipe.write(sink)       # nothing runs before this

Validation walks the chain with the set of columns each step sees; an operator that needs a
column nobody produced fails with the operator, the column, the nearest known name and the
columns that exist. ``then`` returns a new pipeline, so partial pipelines can be reused.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from operators.base import Operator, SourceOperator

if TYPE_CHECKING:
    import ray.data


class PipelineError(ValueError):
    """The pipeline is malformed; raised before anything runs."""


@dataclass(frozen=True)
class Pipeline:
    """An immutable chain: one source, then operators in order."""

    source: SourceOperator
    operators: tuple[Operator, ...] = ()

    @classmethod
    def read(cls, source: SourceOperator) -> Pipeline:
        """Start a pipeline at ``source``."""
        if not isinstance(source, SourceOperator):
            raise PipelineError(f"a pipeline starts at a SourceOperator, got {type(source).__name__}")
        return cls(source)

    def then(self, operator: Operator) -> Pipeline:
        """A new pipeline with ``operator`` appended."""
        if not isinstance(operator, Operator):
            raise PipelineError(f"then() takes an Operator, got {type(operator).__name__}")
        return Pipeline(self.source, (*self.operators, operator))

    def columns(self) -> tuple[str, ...]:
        """Columns of the rows at the end of the chain (validates first)."""
        return tuple(sorted(self.validate()))

    def validate(self, final_requires: tuple[str, ...] = ()) -> set[str]:
        """Check every operator's settings and column contract, in order.

        Args:
            final_requires: columns the consumer of the last step needs (the sink's).

        Returns:
            The columns available after the last operator.

        Raises:
            PipelineError: naming the first operator whose needs are not met.
        """
        steps: list = [self.source, *self.operators]
        for step in steps:
            try:
                step.check()
            except (ValueError, KeyError) as exc:
                raise PipelineError(f"{step.name}: {exc.args[0] if exc.args else exc}") from exc
        available = set(self.source.produces())
        for op in self.operators:
            missing = [c for c in op.requires() if c not in available]
            if missing:
                raise PipelineError(self._missing_message(op.name, missing, available))
            available = (available - set(op.drops())) | set(op.produces())
        missing = [c for c in final_requires if c not in available]
        if missing:
            raise PipelineError(self._missing_message("sink", missing, available))
        return available

    @staticmethod
    def _missing_message(step: str, missing: list[str], available: set[str]) -> str:
        parts = []
        for column in missing:
            near = difflib.get_close_matches(column, sorted(available), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            parts.append(f"{column!r}{hint}")
        return (f"operator {step!r} requires column {', '.join(parts)} which no earlier step produces; "
                f"available: {', '.join(sorted(available))}")

    def plan(self, final_requires: tuple[str, ...] = (), skip_ids: list[str] | None = None) -> ray.data.Dataset:
        """Validate, then build the lazy Ray dataset (still nothing runs).

        Args:
            final_requires: columns the sink needs.
            skip_ids: ids already done (resume, incremental runs); their rows are dropped as
                early as their final id is known: right after the source when it assigns ids
                at listing, else right after the first operator that produces ``id``.
        """
        from operators.skip import SkipDoneOperator
        from schemas import columns as C

        self.validate(final_requires)
        ds = self.source.read()
        pending = SkipDoneOperator(skip_ids) if skip_ids else None
        if pending is not None and getattr(self.source, "ids_at_listing", True):
            ds, pending = pending.apply(ds), None
        for op in self.operators:
            ds = op.apply(ds)
            if pending is not None and C.ID in op.produces():
                ds, pending = pending.apply(ds), None
        if pending is not None:
            ds = pending.apply(ds)
        return ds

    def write(self, sink) -> object:
        """Validate, plan and run into ``sink``; returns what the sink's ``commit`` returns."""
        return sink.commit(self)

    def describe(self) -> str:
        """One line per step, for logs."""
        return " -> ".join([self.source.name, *(op.name for op in self.operators)])
