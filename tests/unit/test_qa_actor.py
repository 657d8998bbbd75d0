"""QA actor plumbing with a fake engine; deterministic prompt/question draws."""

from __future__ import annotations

import asyncio

import pyarrow as pa

from operators.draw import DrawPromptBatch, draw
from operators.qa import QAActor, parse_questions
from operators.vlm.engine import GenerationResult
from schemas import columns as C
from schemas.provenance import Provenance
from schemas.spec import PostCheckConfig, QAConfig


class FakeEngine:
    name = "fake-qa"

    def __init__(self):
        self.prompts = []

    async def generate(self, requests):
        out = []
        for r in requests:
            self.prompts.append(r.prompt)
            assert r.images and r.images[0].size == (4, 2), "every QA request carries the image"
            if r.request_id.endswith("-ask"):
                out.append(GenerationResult("1. What colour is it?\n2) Is it square?\n", 40, 9, "stop"))
            elif "loop" in r.prompt:
                out.append(GenerationResult("red " * 10, 30, 10, "length"))
            else:
                out.append(GenerationResult("It is red.", 30, 4, "stop"))
        return out

    def shutdown(self):
        pass


def actor(qa: QAConfig) -> QAActor:
    prov = Provenance(model_id="qa-model", sampling_hash="s", code_version="c", run_id="r")
    return QAActor(engine=FakeEngine, family="llava", qa=qa, postcheck=PostCheckConfig(), provenance=prov)


def batch(questions):
    n = len(questions)
    return pa.table({
        C.ID: [f"id{i}" for i in range(n)], C.STATUS: ["ok"] * (n - 1) + ["not_found"], C.ERROR: [None] * n,
        C.PIXELS: [bytes(24)] * n, C.WIDTH: [4] * n, C.HEIGHT: [2] * n,
        C.CAPTION: ["A red square."] * n, C.QUESTIONS: pa.array(questions, type=pa.list_(pa.string())),
    })


def test_manifest_then_generated_questions_answered_and_checked():
    a = actor(QAConfig(questions_from=("manifest", "generate"), questions_per_image=2))
    out = asyncio.run(a(batch([["What is it?", "Say loop"], [], ["never asked"]])))
    assert C.PIXELS not in out.column_names, "the last model stage drops the pixels"
    qa = out.column(C.QA).to_pylist()
    assert [(p["question"], p["origin"], p["status"]) for p in qa[0]] == [
        ("What is it?", "manifest", "ok"), ("Say loop", "manifest", "repetition")]
    assert qa[0][0]["answer"] == "It is red."
    assert [(p["question"], p["origin"]) for p in qa[1]] == [("What colour is it?", "generate"),
                                                             ("Is it square?", "generate")]
    assert qa[2] is None, "failed rows get no QA"
    assert out.column(C.QA_MODEL_ID).to_pylist() == ["qa-model"] * 3
    assert out.column(C.QA_SAMPLING_HASH).to_pylist() == ["s"] * 3
    assert any("A red square." in p for p in a.engine.prompts), "generation sees the caption"
    # Token counts per pair (the answer's), and per row every QA generation (the asking included).
    assert [(p["num_prompt_tokens"], p["num_generated_tokens"]) for p in qa[0]] == [(30, 4), (30, 10)]
    assert out.column(C.QA_GENERATED_TOKENS).to_pylist() == [4 + 10, 9 + 4 + 4, None]
    assert out.column(C.QA_PROMPT_TOKENS).to_pylist() == [60, 40 + 60, None]
    ready, done = out.column(C.ENGINES_READY_AT).to_pylist(), out.column(C.DONE_AT).to_pylist()
    assert ready == [a.ready_at] * 3 and len(set(done)) == 1 and done[0] >= a.ready_at, "one batch, one stamp"


def test_question_set_draw_is_deterministic_and_distinct():
    qs = ("Q1?", "Q2?", "Q3?", "Q4?")
    a = actor(QAConfig(questions_from=("set",), question_set=qs, questions_per_image=2))
    first = asyncio.run(a(batch([[], []]))).column(C.QA).to_pylist()[0]
    again = asyncio.run(a(batch([[], []]))).column(C.QA).to_pylist()[0]
    assert [p["question"] for p in first] == [p["question"] for p in again] == draw("id0", qs, 2, salt="qa")
    assert len({p["question"] for p in first}) == 2


def test_draw_spreads_over_the_set():
    prompts = [f"p{i}" for i in range(4)]
    picks = {draw(f"img{i}", prompts)[0] for i in range(200)}
    assert picks == set(prompts)
    out = DrawPromptBatch(prompts)(pa.table({C.ID: ["a", "b"], C.STATUS: ["ok", "decode_error"]}))
    assert out.column(C.INSTRUCTION).to_pylist() == [draw("a", prompts, salt="caption")[0], None]


def test_parse_questions_strips_numbering():
    assert parse_questions("Q1: Where?\n\n- Why?\n3. Where?\n", 5) == ["Where?", "Why?"]
    assert parse_questions(None, 2) == []
