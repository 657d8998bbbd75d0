"""Turn a job spec into a pipeline and its sink."""

from __future__ import annotations

import datetime as dt
import secrets

from operators.caption import CaptionOperator
from operators.decode import DecodeOperator
from operators.fetch import FetchOperator
from operators.postcheck import PostCheckOperator
from operators.prepare import PrepareOperator
from operators.sources.prefix import PrefixSource
from operators.vlm.registry import get_family
from pipeline.commit import ParquetCommitSink
from pipeline.dag import Pipeline, PipelineError
from pipeline.provenance import provenance_for
from schemas.dataset_records import DATASET_SCHEMA
from schemas.records import CAPTION_SCHEMA
from schemas.spec import JobSpec


def new_run_id(name: str) -> str:
    """A fresh run id: job name, UTC time, random suffix."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{name}-{stamp}-{secrets.token_hex(3)}"


def is_dataset_build(spec: JobSpec) -> bool:
    """Whether ``spec`` builds a dataset (QA, a caption prompt set or a manifest source) rather than captions."""
    return spec.qa is not None or bool(spec.caption.prompts) or spec.source.format != "prefix"


def caption_pipeline(spec: JobSpec, run_id: str) -> Pipeline:
    """source -> fetch -> decode -> caption -> post-check, from ``spec``.

    A dataset build (:func:`is_dataset_build`) gets the caption + QA DAG of :mod:`pipeline.dataset`.
    """
    if is_dataset_build(spec):
        from pipeline.dataset import dataset_pipeline

        return dataset_pipeline(spec, run_id)
    try:
        family = get_family(spec.model.family)
    except KeyError as exc:
        raise PipelineError(f"model.family: {exc.args[0]}") from None
    r = spec.resources
    pipe = (
        Pipeline.read(PrefixSource(spec.source, rows_per_block=r.cpu_batch_size))
        .then(FetchOperator(spec.source, spec.decode, batch_size=r.cpu_batch_size))
        .then(DecodeOperator(spec.decode, max_side=family.preprocess.max_side, batch_size=r.cpu_batch_size))
    )
    if family.cpu_prepare is not None:
        # Family layout work (e.g. 4KHD tiling) stays on CPU tasks, off the engine actors.
        pipe = pipe.then(PrepareOperator(family.cpu_prepare(spec.model.model_id), batch_size=r.cpu_batch_size))
    pipe = pipe.then(CaptionOperator(spec.model, spec.sampling, spec.caption, r, provenance_for(spec, run_id)))
    return pipe.then(PostCheckOperator(spec.postcheck))


def caption_sink(spec: JobSpec, run_id: str) -> ParquetCommitSink:
    """The committing Parquet sink of a caption run of ``spec``."""
    prov = provenance_for(spec, run_id)
    return ParquetCommitSink(
        spec.sink,
        run_id,
        schema=DATASET_SCHEMA if is_dataset_build(spec) else CAPTION_SCHEMA,
        manifest_fields=dict(
            job=spec.name,
            spec_hash=spec.digest(),
            spec=spec.model_dump(mode="json"),
            model_id=prov.model_id,
            model_revision=prov.model_revision,
            sampling_hash=prov.sampling_hash,
            code_version=prov.code_version,
        ),
    )
