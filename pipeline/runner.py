"""The runner: Ray start-up, Ray Data context, one run of a job spec, the summary."""

from __future__ import annotations

import logging
import os

from pipeline.build import caption_pipeline, caption_sink, new_run_id
from pipeline.commit import read_manifest
from schemas.manifest import Manifest
from schemas.spec import JobSpec, ResourcesConfig, RunConfig

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
    else:
        # A local instance talks over loopback only.
        kwargs["_node_ip_address"] = "127.0.0.1"
        if run.num_cpus:
            kwargs["num_cpus"] = run.num_cpus
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


def run_job(spec: JobSpec, run_id: str | None = None, skip_ids: list[str] | None = None,
            allow_empty: bool = False) -> Manifest | None:
    """Run ``spec`` end to end and return the committed manifest.

    A run id that is already committed is not run again: its manifest is returned as is
    (``manifest.run_id`` equal, nothing written). An uncommitted one is resumed.

    Args:
        spec: the job.
        run_id: overrides ``spec.run.run_id``; None makes a fresh one.
        skip_ids: ids done by earlier runs (schedules); their rows are not processed or written.
        allow_empty: with nothing left to do, return None instead of committing an empty run.

    Raises:
        pipeline.dag.PipelineError: the pipeline is malformed (before anything starts).
        pipeline.commit.CommitError: the run could not be committed.
        operators.sources.prefix.SourceError: the source cannot be listed.
    """
    run_id = run_id or spec.run.run_id or new_run_id(spec.name)
    pipe = caption_pipeline(spec, run_id)
    sink = caption_sink(spec, run_id)
    sink.skip_ids = list(skip_ids or [])
    pipe.validate(sink.requires())
    committed = read_manifest(sink.run_root, spec.sink.storage)
    if committed is not None:
        log.info("run %s is already committed at %s; nothing to do", run_id, sink.run_root)
        return committed
    if allow_empty and sink.expected_rows(pipe) == 0:
        log.info("nothing new to process for run %s", run_id)
        return None
    init_ray(spec.run)
    configure_data_context(spec.run, spec.resources)
    log.info("run %s: %s -> %s", run_id, pipe.describe(), sink.run_root)
    return pipe.write(sink)
