"""What a spec leaves unset follows the model card: decode resolution, generation settings, beam search."""

from __future__ import annotations

import asyncio

import pytest

from operators.base import PipelineError
from pipeline.plan import build_pipeline
from schemas.spec import JobSpec, SamplingConfig


def _spec(family: str = "xcomposer2-4khd", **sections) -> JobSpec:
    raw = {"name": "t", "source": {"uri": "/tmp/none"}, "sink": {"uri": "/tmp/none-out"},
           "model": {"family": family, "model_id": "internlm/internlm-xcomposer2-4khd-7b"}}
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value}
    return JobSpec.model_validate(raw)


def _stage(pipe, name):
    return next(s for s in pipe.stages if s.name == name)


def test_decode_keeps_what_4khd_uses_and_a_lower_cap_names_both_numbers():
    # hd_num 25 tiles of 336: an image is scaled to at most 25 x 336 = 8400 px on its long side.
    assert _stage(build_pipeline(_spec(), "r"), "decode").args["max_side"] == 8400
    assert _stage(build_pipeline(_spec(model={"hd_num": 55}), "r"), "decode").args["max_side"] == 55 * 336
    with pytest.raises(PipelineError, match=r"decode.max_side=1024 is below the 8400 px .* xcomposer2-4khd"):
        build_pipeline(_spec(decode={"max_side": 1024}), "r")
    assert _stage(build_pipeline(_spec(decode={"max_side": 9000}), "r"), "decode").args["max_side"] == 9000
    vl = _spec("xcomposer2-vl", model={"model_id": "internlm/internlm-xcomposer2-vl-7b"})
    assert _stage(build_pipeline(vl, "r"), "decode").args["max_side"] == 980


def test_hd_num_reaches_the_cpu_layout_and_the_engine():
    pipe = build_pipeline(_spec(model={"hd_num": 9}), "r")
    assert _stage(pipe, "prepare").args["prepare"].hd_num == 9
    from operators.vlm.registry import family_for

    spec = _spec(model={"hd_num": 9})
    assert family_for(spec.model).processor_kwargs(spec.model) == {"hd_num": 9}
    with pytest.raises(PipelineError, match="hd_num is an InternLM-XComposer2-4KHD setting; family xcomposer2-vl"):
        build_pipeline(_spec("xcomposer2-vl", model={"hd_num": 9}), "r")


def test_card_generation_settings_fill_what_the_spec_leaves_unset():
    caption = _stage(build_pipeline(_spec(), "r"), "caption")
    assert caption.args["engine"].sampling.repetition_penalty == 1.005  # XComposer2 chat()'s default
    assert caption.args["engine"].sampling.num_beams == 1
    set_by_user = _stage(build_pipeline(_spec(sampling={"repetition_penalty": 1.0}), "r"), "caption")
    assert set_by_user.args["engine"].sampling.repetition_penalty == 1.0
    # What ran is what is hashed: the card default changes the sampling hash.
    assert caption.args["provenance"].sampling_hash != set_by_user.args["provenance"].sampling_hash
    other = _stage(build_pipeline(_spec("llava", model={"model_id": "llava-hf/llava-1.5-7b-hf"}), "r"), "caption")
    assert other.args["engine"].sampling.repetition_penalty == 1.0


def test_beam_search_settings_are_checked_before_anything_runs():
    with pytest.raises(ValueError, match="num_beams=3 needs temperature 0"):
        SamplingConfig(num_beams=3, temperature=0.7)
    with pytest.raises(PipelineError, match="num_beams=3 needs engine.kind vllm"):
        build_pipeline(_spec(sampling={"num_beams": 3}, model={"engine": {"kind": "transformers"}}), "r")
    with pytest.raises(PipelineError, match="num_beams=11 is over 10"):
        build_pipeline(_spec(sampling={"num_beams": 11}), "r")
    beams = _stage(build_pipeline(_spec(sampling={"num_beams": 3}), "r"), "caption")
    assert beams.args["engine"].sampling.num_beams == 3


def _table_step(table: dict[tuple[int, ...], dict[int, float]]):
    async def step(tokens):
        return table[tuple(tokens)]
    return step


def test_beam_search_keeps_the_best_hypothesis_greedy_would_miss():
    from operators.vlm.beam import beam_search

    # Greedy takes 1 (-0.4) then pays -2.0; the beam through 2 (-0.6) ends better: 2, 9 (stop).
    table = {(): {1: -0.4, 2: -0.6, 3: -3.0}, (1,): {9: -2.0, 4: -2.2}, (2,): {9: -0.1, 5: -3.0},
             (3,): {9: -0.1}, (1, 4): {9: -0.1}, (2, 5): {9: -0.1}, (1, 9): {}, (2, 9): {}}
    best = asyncio.run(beam_search(_table_step(table), beams=2, max_tokens=4, stop_ids={9}))
    assert best.tokens == [2, 9] and best.stopped
    assert best.score == pytest.approx((-0.6 - 0.1) / 2)
    greedy = asyncio.run(beam_search(_table_step(table), beams=1, max_tokens=4, stop_ids={9}))
    assert greedy.tokens == [1, 9]
    # Length: without a stop the best running beam comes back, cut at max_tokens.
    cut = asyncio.run(beam_search(_table_step(table), beams=2, max_tokens=1, stop_ids={9}))
    assert cut.tokens == [1] and not cut.stopped
