"""The one builder: a job spec becomes a pipeline, stages added by the spec's sections.

    source (prefix | LLaVA JSON/JSONL | Parquet | WebDataset)
      -> fetch (skipped per row for embedded bytes) -> decode (once, at the largest size any model uses)
      [-> content-hash]        curation: dedup.exact, between fetch and decode
      [-> embed]               curation: an embedding section (image vectors, on their own actor pool)
      [-> dedup barrier]       curation: a dedup section; the stages above run first as the index pass
      -> prepare               the model's input arrays (4KHD: HD layout + tile_grid), for families whose
                               processor vlmbatch owns (XComposer2), with engines that take them (vLLM)
      -> draw-prompt           when caption.prompts is a prompt set
      -> caption pool -> postcheck
      [-> align]               curation: an alignment section (caption vs image embedding)
      -> qa pool               when there is a qa section (the caption pool then keeps the pixels)

A caption run is a dataset build with fewer stages: what the run commits follows from the
columns its last stage leaves (:func:`schemas.records.record_schema`). Caption and QA are two
actor pools in one Ray Data job, so ``qa.model`` may be another model or engine.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable

from operators.align import align_stage
from operators.base import PipelineError, SourceOperator
from operators.caption import caption_stage, checked_family
from operators.content_hash import content_hash_stage
from operators.decode import decode_stage
from operators.draw import draw_prompt_stage
from operators.embed.stage import embed_stage
from operators.fetch import fetch_stage
from operators.postcheck import postcheck_stage
from operators.prepare import prepare_stage
from operators.qa import qa_stage
from operators.sources.llava import LlavaManifestSource
from operators.sources.parquet import ParquetManifestSource
from operators.sources.prefix import PrefixSource
from operators.sources.webdataset import WebDatasetSource
from operators.vlm.engine import Engine
from operators.vlm.factory import EngineFactory
from pipeline.curate import DedupBarrier
from pipeline.dag import Pipeline
from pipeline.provenance import provenance_for, qa_provenance
from schemas.spec import JobSpec, ModelConfig, SamplingConfig

#: ``engines(model, sampling)`` returns what an engine actor calls to build its engine.
Engines = Callable[[ModelConfig, SamplingConfig], Callable[[], Engine]]


def new_run_id(name: str) -> str:
    """A fresh run id: job name, UTC time, random suffix."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{name}-{stamp}-{secrets.token_hex(3)}"


def source_for(spec: JobSpec) -> SourceOperator:
    """The source operator for ``spec.source.format``."""
    fmt, rows = spec.source.format, spec.resources.cpu_batch_size
    if fmt == "prefix":
        return PrefixSource(spec.source, rows_per_block=rows)
    if fmt in ("llava_json", "llava_jsonl"):
        return LlavaManifestSource(spec.source, rows_per_block=rows)
    if fmt == "parquet":
        return ParquetManifestSource(spec.source)
    return WebDatasetSource(spec.source)


def build_pipeline(spec: JobSpec, run_id: str, engines: Engines = EngineFactory) -> Pipeline:
    """The pipeline of ``spec`` (see the module docstring); nothing runs.

    Args:
        run_id: stamped on every row.
        engines: the engine builder of each model stage (tests and benchmarks pass their own).

    Raises:
        PipelineError: a family is unknown, or the spec's stages cannot work together.
    """
    qa = spec.qa
    models = [spec.model] + ([qa.model] if qa is not None and qa.model is not None else [])
    families = [checked_family(m) for m in models]
    r = spec.resources
    # Decoded once, at the size the hungriest of the models uses; a user's cap may not go below it.
    need = max(f.side_for(m) for f, m in zip(families, models, strict=True))
    if spec.decode.max_side is not None and spec.decode.max_side < need:
        hungriest = max(zip(families, models, strict=True), key=lambda fm: fm[0].side_for(fm[1]))[0].name
        raise PipelineError(f"decode.max_side={spec.decode.max_side} is below the {need} px that model family "
                            f"{hungriest} uses: its images would reach the model at lower resolution than its card's "
                            f"code gives it; raise decode.max_side to {need} or more, or leave it unset")
    pipe = Pipeline.read(source_for(spec)).then(fetch_stage(spec.source, spec.decode, batch_size=r.cpu_batch_size))
    if spec.dedup is not None and spec.dedup.exact:  # curation: hashed before decode drops the bytes
        pipe = pipe.then(content_hash_stage(batch_size=r.cpu_batch_size))
    pipe = pipe.then(decode_stage(spec.decode, max_side=need, batch_size=r.cpu_batch_size))
    # Curation before captioning (pipeline/curate.py): vectors, then the dedup barrier of a two-pass run.
    if spec.embedding is not None:
        pipe = pipe.then(embed_stage(spec.embedding))
    if spec.dedup is not None:
        pipe = pipe.then(DedupBarrier(spec))
    # Resize, HD layout and normalisation on CPU tasks for engines that take the model's input as is
    # (vLLM with a processor vlmbatch owns), so the engine's process only runs the model.
    wants = [f.cpu_prepare is not None and m.engine.kind == "vllm" and m.engine.cpu_prepare
             for f, m in zip(families, models, strict=True)]
    if any(wants) and (len({f.name for f in families}) > 1 or len({m.hd_num for m in models}) > 1):
        # The prepared input (e.g. 4KHD's layout at its hd_num) is the one model's; every pool sees the same rows.
        raise PipelineError("qa.model: a family with a CPU prepare stage (e.g. xcomposer2-4khd) cannot share "
                            "one decode with another family or other settings; use the same model for caption "
                            "and QA")
    prepared = all(wants)  # one stage that wants raw pixels (the transformers reference) keeps them for both
    if prepared:
        pipe = pipe.then(prepare_stage(families[0].cpu_prepare(spec.model), batch_size=r.cpu_batch_size))
    if spec.caption.prompts:
        pipe = pipe.then(draw_prompt_stage(spec.caption.prompts))
    sampling, qa_sampling = run_sampling(spec)
    pipe = (pipe.then(caption_stage(spec.model, sampling, spec.caption, r, provenance_for(spec, run_id, sampling),
                                    keep_pixels=qa is not None, prepared=prepared, engines=engines))
            .then(postcheck_stage(spec.postcheck)))
    if spec.alignment is not None:  # curation after captioning
        pipe = pipe.then(align_stage(spec.embedding, spec.alignment))
    if qa is not None:
        pipe = pipe.then(qa_stage(qa.model or spec.model, qa_sampling, qa, spec.postcheck, qa.resources or r,
                                  qa_provenance(spec, run_id, qa_sampling), prepared=prepared, engines=engines))
    return pipe


def run_sampling(spec: JobSpec) -> tuple[SamplingConfig, SamplingConfig | None]:
    """The sampling the caption and QA stages run: the spec's, unset fields from the family's card settings.

    What runs is what is hashed: rows, manifest and report record these settings' digests.
    """
    caption = spec.sampling.resolved(checked_family(spec.model).sampling_defaults)
    if spec.qa is None:
        return caption, None
    qa_model = spec.qa.model or spec.model
    return caption, (spec.qa.sampling or spec.sampling).resolved(checked_family(qa_model).sampling_defaults)
