"""The DAG API: lazy, immutable, validated on the driver before anything starts."""

from __future__ import annotations

import pyarrow as pa
import pytest

from operators.base import Stage
from operators.caption import caption_stage
from operators.decode import decode_stage
from operators.fetch import fetch_stage
from operators.sources.prefix import PrefixSource
from pipeline.dag import Pipeline, PipelineError
from pipeline.plan import build_pipeline
from pipeline.provenance import provenance_for
from pipeline.shards import WRITER_NEEDS
from schemas import columns as C
from schemas.records import record_schema
from schemas.spec import JobSpec

SPEC = JobSpec.model_validate({
    "name": "t",
    "source": {"uri": "/nonexistent/images/"},
    "model": {"family": "internvl", "model_id": "/m"},
    "sink": {"uri": "/nonexistent/out/"},
})


class TagBatch:
    """A user UDF that must never run before validation passes."""

    def __call__(self, table):  # pragma: no cover
        raise AssertionError("a stage must not run before validation passes")


def tag(column: str, produces: tuple[str, ...] = ()) -> Stage:
    return Stage("tag", TagBatch, needs=(column,), produces=produces)


def test_spec_pipeline_validates():
    pipe = build_pipeline(SPEC, "r1")
    cols = pipe.validate(WRITER_NEEDS)
    assert {C.CAPTION, C.STATUS, C.ID, C.SOURCE} <= set(cols)
    assert C.PIXELS not in cols and C.IMAGE_BYTES not in cols
    assert pipe.describe() == "list -> fetch -> decode -> caption -> postcheck"


def test_misspelled_column_fails_before_ray_starts():
    import ray

    pipe = Pipeline.read(PrefixSource(SPEC.source)).then(fetch_stage(SPEC.source, SPEC.decode)).then(tag("pixles"))
    with pytest.raises(PipelineError) as info:
        pipe.validate()
    msg = str(info.value)
    assert "'tag'" in msg and "'pixles'" in msg
    assert "did you mean 'pixels'?" not in msg  # pixels does not exist yet at this point...
    assert "image_bytes" in msg  # ...the message lists what does
    assert not ray.is_initialized()


def test_suggestion_for_a_near_miss():
    pipe = (Pipeline.read(PrefixSource(SPEC.source)).then(fetch_stage(SPEC.source, SPEC.decode))
            .then(decode_stage(SPEC.decode)).then(tag("pixles")))
    with pytest.raises(PipelineError, match="did you mean 'pixels'"):
        pipe.validate()


def test_caption_before_decode_is_rejected():
    prov = provenance_for(SPEC, "r1")
    pipe = Pipeline.read(PrefixSource(SPEC.source)).then(
        caption_stage(SPEC.model, SPEC.sampling, SPEC.caption, SPEC.resources, prov))
    with pytest.raises(PipelineError, match="'caption' requires column 'pixels'"):
        pipe.validate()


def test_unknown_family_fails_when_the_stage_is_declared():
    spec = SPEC.model_copy(update={"model": SPEC.model.model_copy(update={"family": "nope"})})
    with pytest.raises(PipelineError, match="unknown model family 'nope'; known: ") as info:
        build_pipeline(spec, "r1")
    assert "internvl" in str(info.value) and "xcomposer2-vl" in str(info.value)
    with pytest.raises(PipelineError, match="caption: unknown model family 'nope'"):
        caption_stage(spec.model, spec.sampling, spec.caption, spec.resources, provenance_for(spec, "r1"))


def test_then_returns_a_new_pipeline():
    base = Pipeline.read(PrefixSource(SPEC.source))
    longer = base.then(fetch_stage(SPEC.source, SPEC.decode))
    assert base.stages == () and len(longer.stages) == 1
    with pytest.raises(PipelineError):
        base.then("not a stage")


def test_a_new_stage_column_reaches_the_record_or_fails_naming_it():
    """One output-schema rule: a typed column is committed without editing a schema file; an untyped one fails."""
    pipe = build_pipeline(SPEC, "r1")
    typed = pipe.then(tag(C.CAPTION, produces=(C.QA_MODEL_ID,)))
    assert C.QA_MODEL_ID in record_schema(typed.validate(WRITER_NEEDS)).names
    untyped = pipe.then(tag(C.CAPTION, produces=("caption_score",)))
    with pytest.raises(PipelineError, match="'caption_score' which has no type in schemas/columns.py"):
        untyped.validate(WRITER_NEEDS)


def test_the_caption_record_is_the_v2_caption_schema():
    """The derived record of a plain caption run is field for field the hand-written v1 caption schema, plus the
    source's own id (version 2)."""
    v2 = [("id", pa.string(), False), ("source", pa.string(), False), ("source_id", pa.string(), True),
          ("num_bytes", pa.int64(), True),
          ("status", pa.string(), False), ("error", pa.string(), True), ("width", pa.int32(), True),
          ("height", pa.int32(), True), ("orig_width", pa.int32(), True), ("orig_height", pa.int32(), True),
          ("orig_format", pa.string(), True), ("num_frames", pa.int32(), True), ("prompt", pa.string(), True),
          ("caption", pa.string(), True), ("num_prompt_tokens", pa.int32(), True),
          ("num_generated_tokens", pa.int32(), True), ("finish_reason", pa.string(), True),
          ("model_id", pa.string(), True), ("model_revision", pa.string(), True), ("engine", pa.string(), True),
          ("sampling_hash", pa.string(), True), ("code_version", pa.string(), True), ("run_id", pa.string(), True)]
    schema = record_schema(build_pipeline(SPEC, "r1").validate(WRITER_NEEDS))
    assert [(f.name, f.type, f.nullable) for f in schema] == v2
    assert schema.metadata == {b"vlmbatch.schema_version": b"2", b"vlmbatch.record": b"caption"}


def test_the_readme_dag_blocks_build_what_vlmbatch_run_builds(capsys):
    """The README's two DAG API blocks, as users copy them (less the lines that run): the builder's stages."""
    from tests.conftest import ROOT
    from tests.readme import dag_snippets

    first, second = dag_snippets(str(ROOT / "jobs/specs/demo.yaml"), "my-run")
    scope: dict = {}
    for block in (first, second):
        exec("\n".join(line for line in block.splitlines() if ".execute()" not in line), scope)  # noqa: S102
    described = capsys.readouterr().out.strip()
    assert described == "list -> fetch -> decode -> caption -> postcheck", "the README's comment says what it prints"
    assert f"# {described}" in first
    spec, pipe = scope["spec"], scope["pipe"]
    built = build_pipeline(spec, "my-run-2")
    assert pipe.stages == built.stages, "stage for stage (UDF, arguments, batch sizes, resources) the builder's"
    assert type(pipe.source) is type(built.source) and vars(pipe.source) == vars(built.source)
    assert scope["run"].pipeline.describe() == built.describe()


def test_skip_stages_go_where_their_key_is_final():
    from operators.idset import KeySet
    from operators.skip import skip_done_stage
    from schemas.spec import SourceConfig

    by_id, by_source = skip_done_stage(KeySet(), C.ID), skip_done_stage(KeySet(), C.SOURCE)
    located = build_pipeline(SPEC, "r1")
    assert located.skip_positions([by_id, by_source]) == [-1, -1], "location ids: both right after the listing"
    content = SPEC.model_copy(update={"source": SourceConfig(uri="/nonexistent/images/", id_mode="content")})
    pipe = build_pipeline(content, "r1")
    fetch = [s.name for s in pipe.stages].index("fetch")
    assert pipe.skip_positions([by_id, by_source]) == [fetch, -1], "content ids are final after the fetch"


def test_skips_right_after_the_source_run_inside_its_read_before_its_blocks_are_cut(monkeypatch):
    """A skip at the source is handed to ``read``, which applies it to whole parts, then cuts blocks."""
    import operators.sources.listing as listing_module
    from operators.idset import KeySet
    from operators.skip import skip_done_stage

    calls = []

    class Recording:
        def map_batches(self, fn, **kwargs):
            calls.append(getattr(fn, "__name__", type(fn).__name__))
            return self

        def repartition(self, **kwargs):
            calls.append("repartition")
            return self

    import ray.data

    monkeypatch.setattr(ray.data, "from_items", lambda items, **kw: Recording())
    by_id = skip_done_stage(KeySet(), C.ID)
    listing = listing_module.Listing([listing_module.Part("part-0.parquet", 10, "0" * 32, "0")], C.ID)
    listing_module.read_listing_dataset("/r", None, listing, 8, [by_id])
    assert calls == ["ReadListingPart", "SkipDone", "repartition"], calls

    handed = []
    pipe = build_pipeline(SPEC, "r1")
    monkeypatch.setattr(type(pipe.source), "read", lambda self, first=(): handed.append(list(first)) or Recording())
    pipe.dataset([by_id])
    assert handed == [[by_id]], "the skip went into the source's read, not after it"


def test_engine_pools_survive_node_loss_and_can_be_pinned():
    """The engine pool's actors are restarted and their batches retried; custom resources pin them."""

    class RecordingDataset:
        def map_batches(self, fn, **kwargs):
            self.kwargs = kwargs
            return self

    spec = SPEC.model_copy(update={"resources": SPEC.resources.model_copy(update={"engine_resources": {"gpu": 1}})})
    caption = next(s for s in build_pipeline(spec, "r1").stages if s.name == "caption")
    kwargs = caption.apply(RecordingDataset()).kwargs
    assert kwargs["max_restarts"] == -1 and kwargs["max_task_retries"] == -1
    assert kwargs["resources"] == {"gpu": 1.0}


@pytest.mark.parametrize(("family", "kind", "cpu_prepare", "stages"), [
    ("xcomposer2-vl", "vllm", True, "list -> fetch -> decode -> prepare -> caption -> postcheck"),
    ("xcomposer2-4khd", "vllm", True, "list -> fetch -> decode -> prepare -> caption -> postcheck"),
    ("xcomposer2-4khd", "vllm", False, "list -> fetch -> decode -> caption -> postcheck"),
    ("xcomposer2-4khd", "transformers", True, "list -> fetch -> decode -> caption -> postcheck"),
    ("share-captioner", "vllm", True, "list -> fetch -> decode -> prepare -> caption -> postcheck"),
    ("xcomposer-vl", "transformers", True, "list -> fetch -> decode -> caption -> postcheck"),
    ("internvl", "vllm", True, "list -> fetch -> decode -> caption -> postcheck"),
])
def test_the_model_input_is_prepared_on_cpu_for_engines_that_take_it(family, kind, cpu_prepare, stages):
    spec = SPEC.model_copy(update={"model": SPEC.model.model_validate(
        {"family": family, "model_id": "/m", "engine": {"kind": kind, "cpu_prepare": cpu_prepare}})})
    pipe = build_pipeline(spec, "r1")
    cols = pipe.validate(WRITER_NEEDS)
    assert pipe.describe() == stages
    assert not {C.PIXELS, C.MODEL_INPUT, C.MODEL_INPUT_SHAPE} & set(cols)  # transient: never committed
    # Prepared or not, the committed record is the caption record; a 4KHD layout made on the CPU stage
    # is recorded with it (tile_grid), the one column the prepare stage commits.
    assert (C.TILE_GRID in cols) == (family == "xcomposer2-4khd" and "prepare" in stages)
    base = record_schema(build_pipeline(SPEC, "r1").validate(WRITER_NEEDS))
    assert record_schema(c for c in cols if c != C.TILE_GRID) == base
