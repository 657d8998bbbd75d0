"""The DAG API: lazy, immutable, validated on the driver before anything starts."""

from __future__ import annotations

import pytest

from operators.base import Operator
from operators.caption import CaptionOperator
from operators.decode import DecodeOperator
from operators.fetch import FetchOperator
from operators.sources.prefix import PrefixSource
from pipeline.build import caption_pipeline, caption_sink
from pipeline.dag import Pipeline, PipelineError
from pipeline.provenance import provenance_for
from schemas import columns as C
from schemas.spec import JobSpec

SPEC = JobSpec.model_validate({
    "name": "t",
    "source": {"uri": "/nonexistent/images/"},
    "model": {"family": "internvl", "model_id": "/m"},
    "sink": {"uri": "/nonexistent/out/"},
})


class Tag(Operator):
    """A user operator with configurable input column."""

    name = "tag"

    def __init__(self, column: str):
        self.column = column

    def requires(self):
        return (self.column,)

    def produces(self):
        return ("tag",)

    def apply(self, ds):  # pragma: no cover - never reached when validation fails
        raise AssertionError("apply must not run before validation passes")


def test_spec_pipeline_validates():
    pipe = caption_pipeline(SPEC, "r1")
    cols = pipe.validate(caption_sink(SPEC, "r1").requires())
    assert {C.CAPTION, C.STATUS, C.ID, C.SOURCE} <= cols
    assert C.PIXELS not in cols and C.IMAGE_BYTES not in cols
    assert pipe.describe() == "list -> fetch -> decode -> caption -> postcheck"


def test_misspelled_column_fails_before_ray_starts():
    import ray

    pipe = Pipeline.read(PrefixSource(SPEC.source)).then(FetchOperator(SPEC.source, SPEC.decode)).then(Tag("pixles"))
    with pytest.raises(PipelineError) as info:
        pipe.plan()
    msg = str(info.value)
    assert "'tag'" in msg and "'pixles'" in msg
    assert "did you mean 'pixels'?" not in msg  # pixels does not exist yet at this point...
    assert "image_bytes" in msg  # ...the message lists what does
    assert not ray.is_initialized()


def test_suggestion_for_a_near_miss():
    pipe = (Pipeline.read(PrefixSource(SPEC.source)).then(FetchOperator(SPEC.source, SPEC.decode))
            .then(DecodeOperator(SPEC.decode)).then(Tag("pixles")))
    with pytest.raises(PipelineError, match="did you mean 'pixels'"):
        pipe.validate()


def test_caption_before_decode_is_rejected():
    prov = provenance_for(SPEC, "r1")
    pipe = Pipeline.read(PrefixSource(SPEC.source)).then(
        CaptionOperator(SPEC.model, SPEC.sampling, SPEC.caption, SPEC.resources, prov))
    with pytest.raises(PipelineError, match="'caption' requires column 'pixels'"):
        pipe.validate()


def test_unknown_family_fails_validation():
    spec = SPEC.model_copy(update={"model": SPEC.model.model_copy(update={"family": "nope"})})
    with pytest.raises(PipelineError, match="unknown model family 'nope'; known: internvl, llava"):
        caption_pipeline(spec, "r1").validate()
    prov = provenance_for(spec, "r1")
    pipe = (Pipeline.read(PrefixSource(SPEC.source)).then(FetchOperator(SPEC.source, SPEC.decode))
            .then(DecodeOperator(SPEC.decode))
            .then(CaptionOperator(spec.model, spec.sampling, spec.caption, spec.resources, prov)))
    with pytest.raises(PipelineError, match="caption: unknown model family 'nope'"):
        pipe.validate()


def test_then_returns_a_new_pipeline():
    base = Pipeline.read(PrefixSource(SPEC.source))
    longer = base.then(FetchOperator(SPEC.source, SPEC.decode))
    assert base.operators == () and len(longer.operators) == 1
    with pytest.raises(PipelineError):
        base.then("not an operator")
