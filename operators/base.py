"""The stage contract: a declaration of columns, resources and a UDF; one place runs ``map_batches``.

A :class:`Stage` says what it needs and produces (column names from ``schemas.columns``), what
it drops (transient data such as bytes), the resources one task or actor asks Ray for, and its
UDF: a class and the keyword arguments of its constructor. :meth:`Stage.apply` is the only code
that hands a UDF to Ray Data. Stateless stages run as CPU tasks (the UDF is built once on the
driver and shipped); stages with a :class:`ActorPool` run on a fixed pool of actors, each built
in its own process (engines load there). :class:`pipeline.dag.Pipeline` checks the chain on the
driver before any task or actor starts, so a misspelled column fails in a second, not after
model load.

Each operator module declares its stage with a ``<thing>_stage(...)`` function; the UDF classes
(``<Thing>Batch`` for tasks, ``<Thing>Actor`` for pools) are plain Python a test constructs and
calls directly.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import ray.data


class PipelineError(ValueError):
    """The pipeline is malformed (a bad setting, a missing column); raised before anything runs."""


@dataclass(frozen=True)
class Resources:
    """Resources one task or actor of a stage asks Ray for."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    memory: int | None = None
    custom: tuple[tuple[str, float], ...] = ()  # custom Ray resources, e.g. (("gpu_pool", 1.0),)

    def ray_args(self) -> dict:
        """Keyword arguments for ``Dataset.map_batches``."""
        args: dict = {"num_cpus": self.num_cpus}
        if self.num_gpus:
            args["num_gpus"] = self.num_gpus
        if self.memory:
            args["memory"] = self.memory
        if self.custom:
            args["resources"] = dict(self.custom)
        return args


@dataclass(frozen=True)
class ActorPool:
    """A fixed pool of actors for a stateful stage (model engines, writers).

    Attributes:
        size: actors in the pool (model load is slow: the pool does not autoscale).
        concurrency: batches one actor works on at once (its ``__call__`` is async when above 1).
        tasks_in_flight: batches Ray Data may hand one actor before it answers; None: Ray's default.
    """

    size: int = 1
    concurrency: int = 1
    tasks_in_flight: int | None = None


@dataclass(frozen=True)
class Stage:
    """One map step of a pipeline, as data.

    Attributes:
        name: shown in logs, progress bars and validation errors.
        udf: the per-batch class: ``udf(**args)`` is called with a ``pyarrow.Table`` batch and
            returns one (async for pools with ``concurrency`` above 1).
        args: keyword arguments of ``udf``'s constructor (picklable).
        needs: columns that must exist in the rows it receives.
        produces: columns it adds or overwrites (each must have a type in ``schemas.columns.TYPES``).
        drops: columns it removes.
        resources: what one task or actor asks Ray for.
        batch_size: rows per batch; None keeps Ray Data's blocks as they come.
        pool: a fixed actor pool; None runs stateless CPU tasks.
        keeps_rows: one row out per row in, in order (lets Ray Data skip row-count bookkeeping).
        zero_copy: the UDF only reads its input batch (no copy of Arrow buffers before the call).
        types: committed Arrow types of produced columns that are more specific than the catalogue's
            (an embedding's fixed size and float type, known from the model only).
    """

    name: str
    udf: type
    args: Mapping[str, Any] = field(default_factory=dict)
    needs: tuple[str, ...] = ()
    produces: tuple[str, ...] = ()
    drops: tuple[str, ...] = ()
    resources: Resources = Resources()
    batch_size: int | None = None
    pool: ActorPool | None = None
    keeps_rows: bool = True
    zero_copy: bool = False
    types: Mapping[str, Any] = field(default_factory=dict)

    def apply(self, ds: ray.data.Dataset) -> ray.data.Dataset:
        """``ds`` with this stage appended (lazily): the one ``map_batches`` call of the project."""
        import ray.data

        kwargs: dict = dict(batch_size=self.batch_size, batch_format="pyarrow", **self.resources.ray_args())
        if self.zero_copy:
            kwargs["zero_copy_batch"] = True
        if self.keeps_rows:
            kwargs["udf_modifying_row_count"] = False
        if self.pool is None:
            return ds.map_batches(self.udf(**self.args), **kwargs)
        if self.pool.concurrency > 1:
            kwargs["max_concurrency"] = self.pool.concurrency
        # A lost node takes its actors and their batches: restart the actor wherever it fits (when a
        # node comes back, for a pinned pool) and retry the batches. Ray Data 2.60 defaults to this;
        # it is set here so that node loss survival never rests on a default.
        kwargs.update(max_restarts=-1, max_task_retries=-1)
        strategy: dict = {"size": self.pool.size}
        if self.pool.tasks_in_flight is not None:
            strategy["max_tasks_in_flight_per_actor"] = self.pool.tasks_in_flight
        return ds.map_batches(self.udf, fn_constructor_kwargs=dict(self.args),
                              compute=ray.data.ActorPoolStrategy(**strategy), **kwargs)

    def __repr__(self) -> str:
        return f"Stage({self.name!r}, {self.udf.__name__})"


@dataclass(frozen=True)
class Expected:
    """What a run must commit, as its source's listing found it (computed in tasks, summed on the driver).

    Attributes:
        rows: rows the run must commit; None where the source cannot know before reading.
        digest: :func:`operators.idset.key_digest` of their ``key`` values (hex); None if unknown.
        key: the column that identifies a row exactly once (``id``, or ``source`` where ids come
            from content known only after the fetch).
        skip_applied: the keys done by earlier runs were already dropped from the listing.
        skipped: rows dropped as done by earlier runs.
    """

    rows: int | None
    digest: str | None
    key: str
    skip_applied: bool = False
    skipped: int = 0


class SourceOperator(ABC):
    """The first step of a pipeline: produces rows from somewhere.

    Attributes:
        ids_at_listing: the rows' final ids are known when the source lists them (False when ids
            come from content hashes, known only after the fetch).
    """

    name: str = "source"
    ids_at_listing: bool = True

    @property
    def key(self) -> str:
        """The column that names a row exactly once from the listing on: ``id``, else ``source``."""
        from schemas import columns as C

        return C.ID if self.ids_at_listing else C.SOURCE

    def prepare(self, run_root: str, storage: Any, skip: Any = None) -> Expected:
        """Before a run streams: list what it will read and say what it must commit (Ray is up).

        Args:
            run_root: the run's root (sources that write a listing put it under ``listing/``).
            storage: how to reach ``run_root``.
            skip: an :class:`operators.idset.KeySet` of ids done by earlier runs; a source that
                can drop them at listing does (``Expected.skip_applied``), else the run drops them later.

        The default knows only :meth:`count`, and nothing once ids are skipped.
        """
        return Expected(None if skip else self.count(), None, self.key)

    @abstractmethod
    def produces(self) -> tuple[str, ...]:
        """Columns of the rows this source yields."""

    def check(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Validate settings on the driver; raise ``ValueError`` with a clear message."""

    @abstractmethod
    def read(self, first: Sequence[Stage] = ()) -> ray.data.Dataset:
        """Return the lazy dataset of source rows, with ``first`` applied to them (:func:`apply_stages`).

        ``first``: stages that drop rows and need only the source's columns (the skips of done
        ids). A source that reads large parts and then cuts them into blocks applies them before
        the cut, so the rows they drop leave neither empty nor half-empty blocks behind: every
        block costs the driver a record per operator, and empty ones are held back by no
        object-store budget (a resume past 5M done rows queued ~1,000 of them).
        """

    def count(self) -> int | None:
        """Number of rows the source yields, where known without reading (for the manifest)."""
        return None

    def progress_total(self) -> int | None:
        """Rows to show as the progress line's total: :meth:`count`, or an estimate a source can give cheaply."""
        return self.count()


def apply_stages(ds: ray.data.Dataset, stages: Sequence[Stage]) -> ray.data.Dataset:
    """``ds`` with each of ``stages`` applied, in order."""
    for stage in stages:
        ds = stage.apply(ds)
    return ds
