"""Post-checks: each check turns an unusable generation into its status; good text passes."""

from __future__ import annotations

import pyarrow as pa

from operators.postcheck import PostCheckBatch, check_generation, repetition_loop
from schemas import columns as C
from schemas.spec import PostCheckConfig
from schemas.status import Status

CFG = PostCheckConfig()
GOOD = "A red bicycle leans against a brick wall under a window with green shutters."


def test_good_caption_passes():
    assert check_generation(GOOD, "stop", CFG) is None


def test_empty_and_whitespace():
    assert check_generation("", "stop", CFG)[0] == Status.EMPTY_GENERATION
    assert check_generation(" \n\t", "stop", CFG)[0] == Status.EMPTY_GENERATION
    assert check_generation(None, None, CFG)[0] == Status.EMPTY_GENERATION


def test_word_loop_detected():
    text = "The image shows a cat sitting on a mat. " + "on the mat " * 6
    status, error = check_generation(text, "length", CFG)
    assert status == Status.REPETITION and "on the mat" in error
    assert repetition_loop("dog " * 4) == "dog"


def test_char_loop_without_spaces():
    assert check_generation("一只猫" + "在在在在" * 10, "stop", CFG)[0] == Status.REPETITION


def test_repeated_word_inside_text_is_not_a_loop():
    assert repetition_loop("very very good photo of a very old bridge") is None


def test_truncated_only_when_cut_at_max_tokens():
    assert check_generation(GOOD, "length", CFG)[0] == Status.TRUNCATED
    assert check_generation(GOOD, "length", PostCheckConfig(truncated=False)) is None


def test_refusal_phrase_case_insensitive():
    status, error = check_generation("i'm sorry, but I can't help with that image.", "stop", CFG)
    assert status == Status.REFUSAL and "sorry" in error.lower()
    assert check_generation("I'm sorry", "stop", PostCheckConfig(refusal=False)) is None


def test_disabled_checks_pass_everything():
    off = PostCheckConfig(empty=False, truncated=False, repetition=False, refusal=False)
    assert check_generation("x " * 50, "length", off) is None


def test_batch_keeps_text_and_leaves_failed_rows():
    table = pa.table({
        C.ID: ["a", "b", "c"],
        C.CAPTION: [GOOD, "loop " * 10, None],
        C.FINISH_REASON: ["stop", "length", None],
        C.STATUS: ["ok", "ok", "not_found"],
        C.ERROR: [None, None, "missing"],
    })
    out = PostCheckBatch(CFG)(table)
    assert out.column(C.STATUS).to_pylist() == ["ok", "repetition", "not_found"]
    assert out.column(C.CAPTION).to_pylist()[1] == "loop " * 10, "the text is kept for inspection"
    assert out.column(C.ERROR).to_pylist()[2] == "missing"
