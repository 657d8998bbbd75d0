"""The one owner of a run on the driver: validate once, read the committed state once, stream, commit, report.

    manifest = Run(spec).execute()        # what `vlmbatch run` and `python -m jobs.caption` do

Control path: the plan (:func:`pipeline.plan.build_pipeline`, or a pipeline the caller composed)
is validated once against the writer's needs, which also fixes the record schema; the manifest
is read once (a committed run id is not run again); Ray starts; the source is listed once, by
CPU tasks, into the run's listing (rows done by earlier runs of a schedule dropped there; a
resumed attempt reuses it); staging is scanned once, by CPU tasks (a resumed run skips what
earlier attempts wrote, joining in tasks); the rows stream through the stages into the writer,
whose one row per shard feeds the ledger and the progress line (Ray Data's own per-block records
kept to a sample, :mod:`pipeline.block_stats`); the exactly-once check (counts
and key digests) passes or nothing is published; the manifest is written (the commit); the
report is written beside it; the summary is printed. The driver holds one record per listing
part and per shard, never a row. The writer writes, the observer observes; neither calls back.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys
import time
from typing import TYPE_CHECKING, TextIO

from operators.base import Expected
from operators.idset import KeySet
from operators.skip import skip_done_stage
from operators.sources.listing import clear_listing
from operators.storage import join_uri
from operators.vlm.factory import EngineFactory
from pipeline.block_stats import bound_block_stats
from pipeline.cluster_check import check_joined
from pipeline.cluster_loss import STREAM_ATTEMPTS, lost_to_the_cluster
from pipeline.commit import MANIFEST, CommitError, check_exactly_once, read_manifest, write_manifest
from pipeline.dag import Pipeline
from pipeline.faults import AFTER_SHARDS, BEFORE_MANIFEST, crash_point, lose_stream_point
from pipeline.identity import check_attempt, compare, forget_attempt, run_lease
from pipeline.interrupt import check as check_interrupt
from pipeline.interrupt import interruptible, ray_starting
from pipeline.plan import Engines, build_pipeline, new_run_id, run_sampling
from pipeline.preflight import check_engines, check_stores
from pipeline.progress import RunObserver
from pipeline.provenance import provenance_for, qa_provenance
from pipeline.report import publish_report
from pipeline.shards import WRITER_NEEDS, Ledger, scan_staging_tasks, writer_stage
from schemas import columns as C
from schemas.manifest import Manifest, RunSummary
from schemas.records import record_schema
from schemas.spec import JobSpec, ResourcesConfig, RunConfig

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)


def init_ray(run: RunConfig) -> None:
    """Join the cluster the spec or ``RAY_ADDRESS`` names, or start a local instance.

    Inside a ``ray job submit`` job, ``RAY_ADDRESS`` points at the cluster and this joins it.
    """
    import ray

    if ray.is_initialized():
        return
    address = run.ray_address or os.environ.get("RAY_ADDRESS")
    kwargs: dict = {"log_to_driver": True}
    if address:
        kwargs["address"] = address
        if not address.startswith("ray://") and address.split(":")[0] in ("127.0.0.1", "localhost"):
            # A cluster on loopback (several nodes on one machine): join over loopback too.
            kwargs["_node_ip_address"] = "127.0.0.1"
    else:
        # A local instance talks over loopback only.
        kwargs["_node_ip_address"] = "127.0.0.1"
        if run.num_cpus:
            kwargs["num_cpus"] = run.num_cpus
        if "RAY_kill_idle_workers_interval_ms" not in os.environ:
            # Ray kills CPU workers idle for a second past num_cpus of them: during the engine's load the
            # fetch/decode workers die, and the first post-check task then starts a fresh worker (imports,
            # ~1 s of CPU) in the middle of the engine's steady state. One job owns this instance: keep them.
            kwargs["_system_config"] = {"kill_idle_workers_interval_ms": 0}
    ray.init(**kwargs)


def configure_data_context(run: RunConfig, resources: ResourcesConfig | None = None) -> None:
    """Ray Data settings for a run: progress bars, block errors fatal, the object-store budget.

    The budget (``resources.object_store_memory``) is set on every call, the default (no limit of
    its own) included, so a process that runs several jobs does not carry one job's budget into
    the next; other limits a caller set on the context (CPUs, GPUs) are kept.
    """
    import ray.data

    ctx = ray.data.DataContext.get_current()
    budget = resources.object_store_memory if resources is not None else None
    limits = ctx.execution_options.resource_limits
    ctx.execution_options.resource_limits = limits.copy(
        object_store_memory=float("inf") if budget is None else budget)
    ctx.enable_progress_bars = run.progress_bars
    ctx.enable_operator_progress_bars = run.progress_bars
    # A failure of one block must never fail the job silently: UDFs turn row errors into
    # statuses, so any block error that reaches Ray Data is a real fault and should stop it.
    ctx.max_errored_blocks = 0
    # An actor lost with its node while starting (an engine loading its model) is replaced, up to
    # this many times in a row, instead of failing the run at once (Ray Data's default, 0). An actor
    # whose constructor itself fails still ends the run: preflight checked the model, and every
    # replacement of a broken one dies the same way until the budget is spent.
    ctx.max_consecutive_actor_init_deaths = run.actor_start_losses


def summary_lines(manifest: Manifest, run_root: str) -> list[str]:
    """What a run prints when it is committed (the CLI and the DAG API alike)."""
    return [f"committed run {manifest.run_id}: {len(manifest.files)} files",
            f"output: {join_uri(run_root, MANIFEST)}", *manifest.summary.render().splitlines()]


class Run:
    """One run of ``spec`` under one run id.

    Args:
        spec: the job (its sink, resources, run options and manifest fields).
        run_id: overrides ``spec.run.run_id``; None makes a fresh one.
        pipeline: the stages to run; None builds them from ``spec`` (:func:`build_pipeline`).
        skip_ids: ids done by earlier runs, in memory (small lists); their rows are neither processed nor written.
        skip_files: Parquet files whose ``id`` column holds ids done by earlier runs (schedules); read by tasks.
        engines: the engine builder of the spec's model stages, when the pipeline is built here.
        stream: where the progress line and the summary go (default stderr / stdout).
    """

    def __init__(self, spec: JobSpec, run_id: str | None = None, *, pipeline: Pipeline | None = None,
                 skip_ids: list[str] | None = None, skip_files: list[str] | None = None,
                 engines: Engines = EngineFactory, stream: TextIO | None = None):
        self.spec = spec
        self.run_id = run_id or spec.run.run_id or new_run_id(spec.name)
        self.pipeline = pipeline or build_pipeline(spec, self.run_id, engines)
        self.skip_ids = list(skip_ids or [])
        self.skip_files = list(skip_files or [])
        self.run_root = join_uri(spec.sink.uri, self.run_id)
        self.stream = stream
        self.observer = RunObserver(stream)
        #: Seconds per phase of the last :meth:`execute` (list, scan, stream, check, commit).
        self.timings: dict[str, float] = {}
        self._expected: Expected | None = None
        self._skip: KeySet | None = None
        #: Streams of the last :meth:`execute` lost to the cluster and streamed again (:mod:`pipeline.cluster_loss`).
        self.restreams = 0

    def done_elsewhere(self) -> KeySet:
        """The ids done by earlier runs, as a key set built in tasks (Ray must be up)."""
        if self._skip is None:
            if self.skip_files:
                self._skip = KeySet.from_files(self.skip_files, C.ID, self.spec.sink.storage)
            else:
                self._skip = KeySet.from_keys(self.skip_ids)
        return self._skip

    def prepare(self) -> Expected:
        """Start Ray and list the source into the run's listing (CPU tasks); what the run must commit.

        Idempotent; a resumed attempt reuses the listing an earlier attempt finished.
        """
        if self._expected is None:
            with ray_starting():  # ray.init puts its own SIGTERM handlers in place of ours
                init_ray(self.spec.run)
            check_joined(self.spec.run, self.pipeline)
            t0 = time.monotonic()
            skip = self.done_elsewhere() if (self.skip_ids or self.skip_files) else None
            self._expected = self.pipeline.source.prepare(self.run_root, self.spec.sink.storage, skip)
            self.timings["list_s"] = round(time.monotonic() - t0, 3)
        return self._expected

    def execute(self, allow_empty: bool = False) -> Manifest | None:
        """Run to the commit and return the committed manifest.

        A run id that is already committed with this spec is not run again: its manifest is
        returned as is. An uncommitted one is resumed, if its earlier attempts ran this spec.
        Everything that can be checked before Ray starts is (:mod:`pipeline.preflight`), and the
        run holds its run-id lease (:mod:`pipeline.identity`) from before it reads its state to
        after its commit. SIGINT and SIGTERM raise :class:`pipeline.interrupt.Interrupted`.

        Args:
            allow_empty: with nothing left to do, return None instead of committing an empty run.

        Raises:
            pipeline.dag.PipelineError: the pipeline is malformed (before anything starts).
            pipeline.preflight.PreflightError: a store, model or resource check failed (``exit_code``).
            pipeline.locks.LockHeld: another run of this run id is live.
            pipeline.identity.SpecMismatch: the run id was started or committed with another spec.
            pipeline.commit.CommitError: rows were lost or duplicated; nothing was published.
            operators.sources.prefix.SourceError: the source cannot be listed.
        """
        spec = self.spec
        schema = record_schema(self.pipeline.validate(WRITER_NEEDS), self.pipeline.column_types())
        with interruptible():
            check_stores(spec, self.run_id)
            with run_lease(self.run_root, self.run_id, spec.sink.storage, spec.run.lease_ttl_s) as lease:
                committed = read_manifest(self.run_root, spec.sink.storage)
                if committed is not None:
                    compare(self.run_id, committed.spec, spec, committed=True)
                    log.info("run %s is already committed at %s; nothing to do", self.run_id, self.run_root)
                    self._print_summary(committed)
                    return committed
                check_engines(spec, self.pipeline)
                return self._run(schema, lease, allow_empty)

    def _run(self, schema: pa.Schema, lease, allow_empty: bool) -> Manifest | None:
        spec, storage = self.spec, self.spec.sink.storage
        check_attempt(spec, self.run_id, self.run_root)  # before the listing: a resume reuses it
        started = time.monotonic()
        expected = self.prepare()
        check_interrupt()
        rows_in = expected.rows
        if allow_empty and rows_in == 0:
            log.info("nothing new to process for run %s", self.run_id)
            clear_listing(self.run_root, storage)  # a run that did nothing leaves nothing behind
            forget_attempt(self.run_root, storage)
            return None
        configure_data_context(spec.run, spec.resources)
        # A barrier (dedup) runs its first pass and decides before this run's rows stream (pipeline/curate.py).
        mark = None
        if self.pipeline.barrier is not None:
            mark = self.pipeline.barrier.prepare(self)
            # The index pass listed the same source object into its own run: point it back at this
            # run's listing (finished above, so this reads its record only).
            self._expected = None
            expected = self.prepare()
        log.info("run %s: %s -> %s", self.run_id, self.pipeline.describe(), self.run_root)
        t0 = time.monotonic()
        ledger, done = scan_staging_tasks(self.run_root, storage, expected.key)
        self.timings["scan_s"] = round(time.monotonic() - t0, 3)
        earlier = set(ledger.files)
        resumed = ledger.rows
        # A source that cannot count exactly (remote WebDataset shards) may still estimate for the progress line.
        done_elsewhere = bool(self.skip_ids or self.skip_files)
        shown = rows_in if rows_in is not None or done_elsewhere else self.pipeline.source.progress_total()
        self.observer.start(shown, resumed)
        shards = None
        t0 = time.monotonic()
        for stream in range(1, STREAM_ATTEMPTS + 1):
            if rows_in is not None and ledger.rows >= rows_in:
                break
            try:
                shards = self._stream(schema, expected, ledger, done, earlier, mark, done_elsewhere)
                break
            except Exception as exc:
                if stream == STREAM_ATTEMPTS or not lost_to_the_cluster(exc):
                    raise
                # What the lost node held is gone beyond Ray's retries; what was written is in staging.
                log.warning("run %s: stream %d of %d lost to the cluster (%s: %s); streaming the rest again "
                            "from staging", self.run_id, stream, STREAM_ATTEMPTS, type(exc).__name__,
                            str(exc).splitlines()[0][:300] if str(exc) else "")
                self.restreams += 1
                ledger, done = scan_staging_tasks(self.run_root, storage, expected.key)
        self.observer.finish()
        self.timings["stream_s"] = round(time.monotonic() - t0, 3)
        t0 = time.monotonic()
        check_exactly_once(ledger, expected, self.run_root, storage)
        self.timings["check_s"] = round(time.monotonic() - t0, 3)
        t0 = time.monotonic()
        manifest = self._manifest(schema, ledger, rows_in, resumed, max(time.monotonic() - started, 1e-9))
        crash_point(BEFORE_MANIFEST)
        check_interrupt()  # never commit a run that was told to stop
        lease.check()
        write_manifest(self.run_root, manifest, storage)
        self.timings["commit_s"] = round(time.monotonic() - t0, 3)
        publish_report(manifest, self.run_root, storage, self.observer.timeline, shards, ledger.lengths)
        log.info("run %s phases (s): %s", self.run_id, self.timings)
        self._print_summary(manifest)
        return manifest

    def _stream(self, schema, expected: Expected, ledger: Ledger, done: KeySet | None, earlier: set,
                mark, done_elsewhere: bool):
        """Stream every row not in staging through the stages into the writer, adding each shard to ``ledger``."""
        spec = self.spec
        skips = [skip_done_stage(done, expected.key)] if done else []
        if done_elsewhere and not expected.skip_applied:
            skips.append(skip_done_stage(self.done_elsewhere(), C.ID))
        ds = self.pipeline.dataset(skips, mark)
        shards = writer_stage(self.run_root, spec.sink, schema, expected.key).apply(ds)
        for count, meta in enumerate(shards.iter_rows()):
            if count == 0:  # the execution exists once its first row is out
                bound_block_stats(shards)
            if meta["path"] in ledger.files:
                raise CommitError(f"two shards wrote {meta['path']}: the same rows were processed twice")
            ledger.add(meta)
            crash_point(AFTER_SHARDS, len(ledger.files) - len(earlier))
            lose_stream_point(len(ledger.files) - len(earlier))
            self.observer.shard(meta)
            check_interrupt()
        return shards

    def _print_summary(self, manifest: Manifest) -> None:
        print("\n".join(summary_lines(manifest, self.run_root)), file=self.stream or sys.stdout, flush=True)

    def _manifest(self, schema: pa.Schema, ledger: Ledger, rows_in: int | None, resumed: int,
                  wall: float) -> Manifest:
        summary = RunSummary(
            rows_in=rows_in if rows_in is not None else ledger.rows,
            rows_out=ledger.rows,
            rows_resumed=resumed,
            restreams=self.restreams,
            by_status=dict(ledger.by_status),
            wall_s=round(wall, 3),
            images_per_s=round((ledger.rows - resumed) / wall, 4),
            prompt_tokens=ledger.prompt_tokens,
            generated_tokens=ledger.generated_tokens,
            generated_tokens_per_s=round(ledger.generated_tokens / wall, 3),
            startup_s=self.observer.timeline.startup_s,
            qa_pairs=ledger.qa.pairs,
            qa_by_status=dict(ledger.qa.by_status),
            qa_prompt_tokens=ledger.qa.prompt_tokens,
            qa_generated_tokens=ledger.qa.generated_tokens,
            qa_generated_tokens_per_s=round(ledger.qa.generated_tokens / wall, 3),
        )
        sampling, qa_sampling = run_sampling(self.spec)
        prov = provenance_for(self.spec, self.run_id, sampling)
        qa = qa_provenance(self.spec, self.run_id, qa_sampling) if self.spec.qa is not None else None
        return Manifest(
            schema_version=schema.metadata[b"vlmbatch.schema_version"].decode(),
            record=schema.metadata[b"vlmbatch.record"].decode(),
            run_id=self.run_id,
            job=self.spec.name,
            spec_hash=self.spec.digest(),
            spec=self.spec.model_dump(mode="json"),
            model_id=prov.model_id,
            model_revision=prov.model_revision,
            engine=ledger.engine,
            sampling_hash=prov.sampling_hash,
            qa_model_id=qa.model_id if qa else None,
            qa_model_revision=qa.model_revision if qa else None,
            qa_engine=ledger.qa.engine,
            qa_sampling_hash=qa.sampling_hash if qa else None,
            code_version=prov.code_version,
            created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            files=sorted(ledger.files.values(), key=lambda f: f.path),
            error_files=sorted(ledger.error_files.values(), key=lambda f: f.path),
            summary=summary,
        )


def run_job(spec: JobSpec, run_id: str | None = None, skip_ids: list[str] | None = None,
            allow_empty: bool = False, engines: Engines = EngineFactory,
            skip_files: list[str] | None = None) -> Manifest | None:
    """``Run(spec, run_id, skip_ids=..., skip_files=..., engines=...).execute(allow_empty)``."""
    return Run(spec, run_id, skip_ids=skip_ids, skip_files=skip_files, engines=engines).execute(allow_empty)
