"""Dataset builds (ShareGPT4V-style): spec -> one DAG that decodes each image once.

    source (prefix | LLaVA JSON/JSONL | Parquet | WebDataset)
      -> fetch (skipped for embedded bytes) -> decode
      -> draw a caption prompt per image (caption.prompts)
      -> caption pool (keeps pixels when QA follows) -> post-check the caption
      -> QA pool (questions: manifest / set / generated; answers; post-check each pair; drops pixels)
      -> committed Parquet of :data:`schemas.dataset_records.DATASET_SCHEMA`

Caption and QA are two actor pools in one Ray Data job, so they may use different models
(``qa.model``) and engines.
"""

from __future__ import annotations

from operators.base import SourceOperator
from operators.caption import CaptionOperator
from operators.decode import DecodeOperator
from operators.draw import DrawPromptOperator
from operators.fetch import FetchOperator
from operators.postcheck import PostCheckOperator
from operators.prepare import PrepareOperator
from operators.qa import QAOperator
from operators.sources.llava import LlavaManifestSource
from operators.sources.parquet import ParquetManifestSource
from operators.sources.prefix import PrefixSource
from operators.sources.webdataset import WebDatasetSource
from operators.vlm.registry import get_family
from pipeline.build import caption_sink, is_dataset_build
from pipeline.commit import ParquetCommitSink
from pipeline.dag import Pipeline, PipelineError
from pipeline.provenance import code_version, provenance_for
from schemas.provenance import Provenance
from schemas.spec import JobSpec, PostCheckConfig


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


def qa_provenance(spec: JobSpec, run_id: str) -> Provenance:
    """Provenance of the QA stage (its own model and sampling)."""
    assert spec.qa is not None
    model = spec.qa.model or spec.model
    sampling = spec.qa.sampling or spec.sampling
    return Provenance(model_id=model.model_id, model_revision=model.revision, sampling_hash=sampling.digest(),
                      code_version=code_version(), run_id=run_id)


def dataset_pipeline(spec: JobSpec, run_id: str) -> Pipeline:
    """The dataset-build DAG of ``spec`` (see the module docstring)."""
    qa = spec.qa
    try:
        families = [get_family(spec.model.family)]
        if qa is not None and qa.model is not None:
            families.append(get_family(qa.model.family))
    except KeyError as exc:
        raise PipelineError(f"model.family: {exc.args[0]}") from None
    r = spec.resources
    postcheck = spec.postcheck or PostCheckConfig()
    # Decoded once, at the size the hungriest of the two models can use.
    max_side = max(f.preprocess.max_side for f in families)
    pipe = (
        Pipeline.read(source_for(spec))
        .then(FetchOperator(spec.source, spec.decode, batch_size=r.cpu_batch_size))
        .then(DecodeOperator(spec.decode, max_side=max_side, batch_size=r.cpu_batch_size))
    )
    if any(f.cpu_prepare is not None for f in families):
        # The prepared layout (e.g. 4KHD tiling) is the one model's; both pools see the same pixels.
        if len({f.name for f in families}) > 1:
            raise PipelineError("qa.model: a family with a CPU prepare stage (e.g. xcomposer2-4khd) cannot share "
                                "one decode with another family; use the same family for caption and QA")
        pipe = pipe.then(PrepareOperator(families[0].cpu_prepare(spec.model.model_id), batch_size=r.cpu_batch_size))
    if spec.caption.prompts:
        pipe = pipe.then(DrawPromptOperator(spec.caption.prompts))
    pipe = (
        pipe.then(CaptionOperator(spec.model, spec.sampling, spec.caption, r, provenance_for(spec, run_id),
                                  keep_pixels=qa is not None))
        .then(PostCheckOperator(postcheck))
    )
    if qa is not None:
        pipe = pipe.then(QAOperator(qa.model or spec.model, qa.sampling or spec.sampling, qa, postcheck,
                                    qa.resources or r, qa_provenance(spec, run_id)))
    return pipe


def dataset_sink(spec: JobSpec, run_id: str) -> ParquetCommitSink:
    """The committing sink of a dataset build: the caption sink's manifest fields, the dataset schema."""
    if not is_dataset_build(spec):
        raise PipelineError("spec is not a dataset build (no qa section, caption prompt set or manifest source)")
    return caption_sink(spec, run_id)
