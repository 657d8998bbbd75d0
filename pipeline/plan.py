"""The one builder: a job spec becomes a pipeline, stages added by the spec's sections.

    source (prefix | LLaVA JSON/JSONL | Parquet | WebDataset)
      -> fetch (skipped per row for embedded bytes) -> decode (once, at the largest size any model uses)
      -> prepare               the model's input arrays, for families whose processor vlmbatch owns (XComposer2)
      -> draw-prompt           when caption.prompts is a prompt set
      -> caption pool -> postcheck
      -> qa pool               when there is a qa section (the caption pool then keeps the pixels)

A caption run is a dataset build with fewer stages: what the run commits follows from the
columns its last stage leaves (:func:`schemas.records.record_schema`). Caption and QA are two
actor pools in one Ray Data job, so ``qa.model`` may be another model or engine.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable

from operators.base import PipelineError, SourceOperator
from operators.caption import caption_stage
from operators.decode import decode_stage
from operators.draw import draw_prompt_stage
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
from operators.vlm.registry import get_family
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
    try:
        families = [get_family(m.family) for m in models]
    except KeyError as exc:
        raise PipelineError(f"model.family: {exc.args[0]}") from None
    r = spec.resources
    # Decoded once, at the size the hungriest of the models can use.
    pipe = (Pipeline.read(source_for(spec))
            .then(fetch_stage(spec.source, spec.decode, batch_size=r.cpu_batch_size))
            .then(decode_stage(spec.decode, max_side=max(f.max_side for f in families), batch_size=r.cpu_batch_size)))
    # Resize, tiling and normalisation on CPU tasks for engines that take the model's input as is
    # (vLLM with a processor vlmbatch owns), so the engine's process only runs the model.
    wants = [f.cpu_prepare is not None and m.engine.kind == "vllm" and m.engine.cpu_prepare
             for f, m in zip(families, models, strict=True)]
    if any(wants) and len({f.name for f in families}) > 1:
        # The prepared input is the one model's; every pool sees the same rows.
        raise PipelineError("qa.model: a family with a CPU prepare stage (e.g. xcomposer2-4khd) cannot share "
                            "one decode with another family; use the same family for caption and QA")
    prepared = all(wants)  # one stage that wants raw pixels (the transformers reference) keeps them for both
    if prepared:
        pipe = pipe.then(prepare_stage(families[0].cpu_prepare(spec.model.model_id), batch_size=r.cpu_batch_size))
    if spec.caption.prompts:
        pipe = pipe.then(draw_prompt_stage(spec.caption.prompts))
    pipe = (pipe.then(caption_stage(spec.model, spec.sampling, spec.caption, r, provenance_for(spec, run_id),
                                    keep_pixels=qa is not None, prepared=prepared, engines=engines))
            .then(postcheck_stage(spec.postcheck)))
    if qa is not None:
        pipe = pipe.then(qa_stage(qa.model or spec.model, qa.sampling or spec.sampling, qa, spec.postcheck,
                                  qa.resources or r, qa_provenance(spec, run_id), prepared=prepared, engines=engines))
    return pipe
