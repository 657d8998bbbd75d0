"""Curation in the plan: the dedup barrier of a two-pass run (see :mod:`pipeline.dedup`).

    source -> fetch -> content-hash -> decode -> embed -> [dedup barrier] -> caption -> postcheck -> align

:class:`DedupBarrier` is the one :class:`~pipeline.dag.Barrier` of such a plan. When
:class:`~pipeline.runner.Run` meets it, :meth:`DedupBarrier.prepare` runs the stages before it as
a committed run of their own under ``<run>/index/`` (resumed like any run), decides, and hands
back the mark stage the caption pass applies right after the source. Each step is skipped when
an earlier attempt finished it, so a rerun after any crash continues where it stopped.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from operators.dedup_mark import dedup_mark_stage
from operators.storage import join_uri
from pipeline.dag import Barrier
from pipeline.dedup.barrier import DECISIONS, INCREMENT, _read_bytes, decide, decisions_done
from schemas import columns as C
from schemas.spec import JobSpec

if TYPE_CHECKING:
    from operators.base import Stage
    from pipeline.runner import Run

log = logging.getLogger(__name__)

INDEX = "index"


class DedupBarrier(Barrier):
    """Duplicates decided over the whole run (and a schedule's earlier increments) before captioning."""

    name = "dedup"

    def __init__(self, spec: JobSpec):
        if spec.dedup is None:
            raise ValueError("spec has no dedup section")
        self.spec = spec
        self.config = spec.dedup
        self.needs = ((C.ID, C.STATUS) + ((C.CONTENT_HASH,) if self.config.exact else ())
                      + ((C.IMAGE_EMBEDDING,) if self.config.near else ()))
        self.produces = (C.STATUS, C.ERROR, C.DUPLICATE_OF, C.DUPLICATE_SIMILARITY)
        self.types = {}

    def increments(self, run_id: str) -> tuple[list[str], str | None]:
        """``(earlier increments' index roots, oldest first; this run's)``; ``([], None)`` without a schedule."""
        if self.spec.schedule is None:
            return [], None
        from pipeline.schedule import Schedule

        schedule = Schedule(self.spec)
        storage = self.spec.sink.storage
        earlier = [join_uri(schedule.vroot, INDEX, r["run_id"]) for r in schedule.runs() if r["run_id"] != run_id]
        # An increment's index counts once its run is recorded as committed and its index.json (written last) exists.
        earlier = [root for root in earlier if _read_bytes(join_uri(root, INCREMENT), storage) is not None]
        return earlier, join_uri(schedule.vroot, INDEX, run_id)

    def prepare(self, run: Run) -> Stage:
        """Run the index pass and the decision if not done yet; return the caption pass's mark stage."""
        from pipeline.runner import Run as _Run

        storage = self.spec.sink.storage
        index_root = join_uri(run.run_root, INDEX)
        if decisions_done(index_root, storage) is None:
            index_spec = run.spec.model_copy(update={"sink": run.spec.sink.model_copy(update={"uri": run.run_root})})
            log.info("dedup: index pass (%s) under %s", run.pipeline.index_pass().describe(), index_root)
            _Run(index_spec, INDEX, pipeline=run.pipeline.index_pass(), skip_ids=run.skip_ids,
                 skip_files=run.skip_files, stream=run.stream).execute()
            earlier, publish = self.increments(run.run_id)
            summary = decide(index_root, self.config, storage, earlier=earlier, publish=publish)
            print(f"dedup: {summary.exact} exact and {summary.near} near duplicates of {summary.rows} rows "
                  f"({summary.earlier_increments} earlier increments, {summary.cells} cells, "
                  f"{summary.seconds:.1f} s)", file=run.stream, flush=True)
        return dedup_mark_stage(join_uri(index_root, DECISIONS), storage)
