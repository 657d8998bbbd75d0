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
    with pytest.raises(KeyError, match="known: ") as info:
        get_family("nope")
    assert info.value.args[0].endswith("known: " + ", ".join(sorted(families())))


def test_every_module_of_the_families_package_registers_itself():
    """A new family is one new file under operators/vlm/families/: no import list to edit."""
    import pkgutil

    from operators.vlm import families as package

    modules = {info.name for info in pkgutil.iter_modules(package.__path__)}
    registered = {f.make_tiny.__module__.rsplit(".", 1)[-1] for f in families().values()}
    assert modules == registered


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
    if not get_family(family).transformers_reference:
        return  # served by vLLM only; tests/integration/test_goldens.py runs it

    engine = TransformersEngine(ModelConfig(family=family, model_id=str(directory)),
                               SamplingConfig(max_tokens=6, min_tokens=6), get_family(family))
    import asyncio

    from operators.vlm.engine import GenerationRequest

    prompt = get_family(family).build_prompt("Describe this image.")
    [result] = asyncio.run(engine.generate([GenerationRequest("r", prompt, (Image.new("RGB", (80, 60), "red"),))]))
    assert result.status.value == "ok", result.error
    assert result.num_generated_tokens == 6
    assert result.num_prompt_tokens > 10


def test_one_vllm_entry_point_registers_every_model_package():
    """pyproject.toml names one plugin; it finds each operators/vlm/<package>/plugin.py by itself."""
    import tomllib

    from operators.vlm.plugins import plugin_modules
    from tests.conftest import ROOT

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["vllm.general_plugins"] == {"vlmbatch": "operators.vlm.plugins:register"}
    assert "operators.vlm.xcomposer2.plugin" in plugin_modules()
