"""Dataset-build specs become the caption + QA DAG, validated on the driver before anything runs."""

from __future__ import annotations

import pytest

from jobs.specfile import load_spec, parse_spec
from pipeline.dag import PipelineError
from pipeline.plan import build_pipeline
from pipeline.shards import WRITER_NEEDS
from schemas import columns as C
from schemas.records import record_schema
from tests.conftest import ROOT

SPECS = ROOT / "jobs" / "specs"
#: The v2 dataset record's columns, in order: the hand-written v1 schema (before records were derived) plus the
#: source's own id, the QA pool's token totals, revision and sampling hash.
DATASET_V2 = ["id", "source", "source_id", "image", "num_bytes", "status", "error", "width", "height", "orig_width",
              "orig_height", "orig_format", "num_frames", "prompt", "instruction", "caption", "num_prompt_tokens",
              "num_generated_tokens", "finish_reason", "model_id", "model_revision", "engine", "sampling_hash", "qa",
              "qa_prompt_tokens", "qa_generated_tokens", "qa_model_id", "qa_model_revision", "qa_engine",
              "qa_sampling_hash", "code_version", "run_id"]


def _stage(pipe, name):
    return next(s for s in pipe.stages if s.name == name)


@pytest.mark.parametrize("name, source", [("sharegpt4v.yaml", "llava-manifest"), ("sharegpt4v-prefix.yaml", "list")])
def test_shipped_specs_build_the_dataset_dag(name, source):
    spec = load_spec(SPECS / name)
    pipe = build_pipeline(spec, "r1")
    assert pipe.describe() == f"{source} -> fetch -> decode -> draw-prompt -> caption -> postcheck -> qa"
    columns = pipe.validate(WRITER_NEEDS)
    assert {C.QA, C.CAPTION, C.INSTRUCTION, C.QA_MODEL_ID} <= set(columns)
    schema = record_schema(columns)
    assert C.PIXELS not in schema.names and C.IMAGE_BYTES not in schema.names, "image data never reaches the sink"
    assert schema.metadata[b"vlmbatch.record"] == b"dataset"
    caption, qa = _stage(pipe, "caption"), _stage(pipe, "qa")
    assert caption.args["keep_pixels"] and C.PIXELS not in caption.drops and C.PIXELS in qa.drops, \
        "decoded once, pixels kept until QA"
    assert caption.args["engine"].model.engine.kind == "vllm" and qa.args["family"].name == "llava", \
        "two pools, two models"


def test_a_manifest_build_commits_the_v2_dataset_record():
    schema = record_schema(build_pipeline(load_spec(SPECS / "sharegpt4v.yaml"), "r1").validate(WRITER_NEEDS))
    assert schema.names == DATASET_V2
    assert [f.name for f in schema if not f.nullable] == ["id", "source", "status"]
    assert schema.field(C.QA).type == C.TYPES[C.QA]


def test_demo_spec_stays_a_caption_run_with_postchecks():
    spec = load_spec(SPECS / "demo.yaml")
    pipe = build_pipeline(spec, "r")
    assert pipe.describe().endswith("caption -> postcheck")
    assert record_schema(pipe.validate(WRITER_NEEDS)).metadata[b"vlmbatch.record"] == b"caption"
    # The tiny demo model opts out of the two checks random weights always fail; the rest stay on.
    assert (spec.postcheck.truncated, spec.postcheck.repetition) == (False, False)
    assert spec.postcheck.empty and spec.postcheck.refusal


def test_question_set_source_without_a_set_fails_before_anything_runs():
    data = load_spec(SPECS / "sharegpt4v.yaml").model_dump(mode="json")
    data["qa"]["question_set"] = []
    with pytest.raises(PipelineError, match="question_set is empty"):
        build_pipeline(parse_spec(data), "r")


def test_manifest_questions_need_a_manifest_source():
    data = load_spec(SPECS / "sharegpt4v-prefix.yaml").model_dump(mode="json")
    data["qa"]["questions_from"] = ["manifest"]
    with pytest.raises(PipelineError, match="questions"):
        build_pipeline(parse_spec(data), "r").validate(WRITER_NEEDS)
