"""Dataset-build specs become the caption + QA DAG, validated on the driver before anything runs."""

from __future__ import annotations

import pytest

from jobs.specfile import load_spec, parse_spec
from pipeline.build import caption_pipeline, caption_sink, is_dataset_build
from pipeline.dag import PipelineError
from schemas import columns as C
from tests.conftest import ROOT

SPECS = ROOT / "jobs" / "specs"


@pytest.mark.parametrize("name, source", [("sharegpt4v.yaml", "llava-manifest"), ("sharegpt4v-prefix.yaml", "list")])
def test_shipped_specs_build_the_dataset_dag(name, source):
    spec = load_spec(SPECS / name)
    assert is_dataset_build(spec)
    pipe, sink = caption_pipeline(spec, "r1"), caption_sink(spec, "r1")
    assert pipe.describe() == f"{source} -> fetch -> decode -> draw-prompt -> caption -> postcheck -> qa"
    columns = pipe.validate(sink.requires())
    assert {C.QA, C.CAPTION, C.INSTRUCTION, C.QA_MODEL_ID} <= columns
    assert C.PIXELS not in columns and C.IMAGE_BYTES not in columns, "image data never reaches the sink"
    assert sink.schema.metadata[b"vlmbatch.record"] == b"dataset"
    caption_op = next(op for op in pipe.operators if op.name == "caption")
    qa_op = next(op for op in pipe.operators if op.name == "qa")
    assert caption_op.keep_pixels and C.PIXELS in qa_op.drops(), "decoded once, pixels kept until QA"
    assert caption_op.model.engine.kind == "vllm" and qa_op.model.family == "llava", "two pools, two models"


def test_demo_spec_stays_a_caption_run_with_postchecks():
    spec = load_spec(SPECS / "demo.yaml")
    assert not is_dataset_build(spec)
    assert caption_pipeline(spec, "r").describe().endswith("caption -> postcheck")
    # The tiny demo model opts out of the two checks random weights always fail; the rest stay on.
    assert (spec.postcheck.truncated, spec.postcheck.repetition) == (False, False)
    assert spec.postcheck.empty and spec.postcheck.refusal


def test_question_set_source_without_a_set_fails_before_anything_runs():
    data = load_spec(SPECS / "sharegpt4v.yaml").model_dump(mode="json")
    data["qa"]["question_set"] = []
    spec = parse_spec(data)
    with pytest.raises(PipelineError, match="question_set is empty"):
        caption_pipeline(spec, "r").validate(caption_sink(spec, "r").requires())


def test_manifest_questions_need_a_manifest_source():
    data = load_spec(SPECS / "sharegpt4v-prefix.yaml").model_dump(mode="json")
    data["qa"]["questions_from"] = ["manifest"]
    spec = parse_spec(data)
    with pytest.raises(PipelineError, match="questions"):
        caption_pipeline(spec, "r").validate(caption_sink(spec, "r").requires())
