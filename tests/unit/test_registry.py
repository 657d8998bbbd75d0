"""The model-family registry and the tiny models: every family builds, loads and captions."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from operators.vlm.registry import families, get_family
from schemas.spec import ModelConfig, SamplingConfig


def test_builtin_families():
    fams = families()
    assert {"internvl", "llava"} <= set(fams)
    for fam in fams.values():
        assert fam.model_card.startswith("https://huggingface.co/")
        assert fam.stop
        prompt = fam.build_prompt("Describe.")
        assert prompt.count(fam.image_placeholder) == 1
        assert "Describe." in prompt


def test_internvl_prompt_is_chatml():
    prompt = get_family("internvl").build_prompt("Describe.", system_prompt="")
    assert prompt == "<|im_start|>user\n<IMG_CONTEXT>\nDescribe.<|im_end|>\n<|im_start|>assistant\n"


def test_llava_prompt():
    assert get_family("llava").build_prompt("Describe.") == "USER: <image>\nDescribe. ASSISTANT:"


def test_unknown_family_lists_known():
    with pytest.raises(KeyError, match="known: internvl, llava"):
        get_family("nope")


@pytest.mark.parametrize("family", sorted(families()))
def test_tiny_model_is_deterministic_and_captions(family, tiny_models, tmp_path):
    from operators.vlm.transformers_engine import TransformersEngine

    directory = tiny_models[family]
    config = json.loads((directory / "config.json").read_text())
    assert config["architectures"] == list(get_family(family).architectures)
    again = tmp_path / "again"
    get_family(family).make_tiny(again)
    assert (again / "model.safetensors").read_bytes() == (directory / "model.safetensors").read_bytes()
    assert (again / "tokenizer.json").read_text() == (directory / "tokenizer.json").read_text()

    engine = TransformersEngine(ModelConfig(family=family, model_id=str(directory)),
                               SamplingConfig(max_tokens=6, min_tokens=6), get_family(family))
    import asyncio

    from operators.vlm.engine import GenerationRequest

    prompt = get_family(family).build_prompt("Describe this image.")
    [result] = asyncio.run(engine.generate([GenerationRequest("r", prompt, (Image.new("RGB", (80, 60), "red"),))]))
    assert result.status.value == "ok", result.error
    assert result.num_generated_tokens == 6
    assert result.num_prompt_tokens > 10
