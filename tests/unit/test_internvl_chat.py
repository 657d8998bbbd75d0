"""The InternVL chat family without an engine: templates as conversation.py renders them, which seed
checkpoint layouts vLLM serves and which are refused at validation, and why."""

from __future__ import annotations

import json

import pytest

from operators.base import PipelineError
from operators.caption import checked_family
from operators.vlm.families.internvl_chat import TEMPLATES, refusal
from schemas.spec import ModelConfig
from tests.goldens.compare import load_golden


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from operators.vlm.tiny.internvl_chat import make_tiny_internvl_chat

    d = tmp_path_factory.mktemp("internvl-chat")
    make_tiny_internvl_chat(d)
    return d


def _with(base, tmp_path, **changes) -> ModelConfig:
    config = json.loads((base / "config.json").read_text())
    for key, value in changes.items():
        if key == "llm":
            config["llm_config"]["architectures"] = [value]
        else:
            config[key] = value
    d = tmp_path / "ckpt"
    d.mkdir(exist_ok=True)
    (d / "config.json").write_text(json.dumps(config))
    return ModelConfig(family="internvl-chat", model_id=str(d))


@pytest.mark.parametrize("template", sorted(load_golden("internvl-chat")["templates"]))
def test_every_template_renders_as_conversation_py(template, tiny_dir, tmp_path):
    """The golden file holds each template as the public conversation.py renders it."""
    golden = load_golden("internvl-chat")["templates"][template]
    if template not in TEMPLATES:
        pytest.fail(f"conversation.py has template {template!r} that this family does not render")
    family = checked_family(_with(tiny_dir, tmp_path, template=template))
    assert family.build_prompt("Q?", None, num_images=1) == golden["prompt"]["default"]
    assert family.build_prompt("Q?", "", num_images=1) == golden["prompt"]["empty"]
    assert family.stop == (golden["stop"],) and family.default_system_prompt == golden["system_message"]


# The seed checkpoints' layouts: architecture, language model, template, tiling (their config.json
# fields; V1-1 / V1-2 as the InternVL repository's V1.x scripts and cards describe them).
SEED = {
    "InternVL-Chat-V1-1": dict(llm="LlamaForCausalLM", template="internvl_zh", dynamic_image_size=False,
                               ps_version="v1"),
    "InternVL-Chat-V1-2": dict(llm="LlamaForCausalLM", template="Hermes-2", dynamic_image_size=False, ps_version="v1"),
    "InternVL-Chat-V1-2-Plus": dict(llm="LlamaForCausalLM", template="Hermes-2", dynamic_image_size=False,
                                    ps_version="v1"),
    "InternVL-Chat-V1-5": dict(llm="InternLM2ForCausalLM", template="internlm2-chat", max_dynamic_patch=12),
    "Mini-InternVL-Chat-4B-V1-5": dict(llm="Phi3ForCausalLM", template="phi3-chat"),
    "InternVL2-1B": dict(llm="Qwen2ForCausalLM", template="Hermes-2"),
    "InternVL2-8B": dict(llm="InternLM2ForCausalLM", template="internlm2-chat"),
    "InternVL2-40B": dict(llm="LlamaForCausalLM", template="Hermes-2"),
    "InternVL2_5-8B": dict(llm="InternLM2ForCausalLM", template="internvl2_5"),
    "InternVL2_5-1B": dict(llm="Qwen2ForCausalLM", template="internvl2_5"),
}
REFUSED = {
    "InternVL-Chat-V1-0 (LLaVA format)": (dict(architectures=["LlavaLlamaForCausalLM"]), "not InternVLChatModel"),
    "InternVL-14B-224px (InternVL-C/G)": (dict(architectures=["InternVLModel"]), "not InternVLChatModel"),
    "unmerged LoRA": (dict(use_llm_lora=16), "unmerged LoRA"),
    "forced size": (dict(force_image_size=448), "force_image_size 448 differs"),
    "unknown template": (dict(template="vicuna_v1.1"), "template 'vicuna_v1.1'"),
    "unhosted LM": (dict(llm="MistralForCausalLM"), "MistralForCausalLM"),
}


@pytest.mark.parametrize("name", sorted(SEED))
def test_seed_layouts_vllm_serves(name, tiny_dir, tmp_path):
    family = checked_family(_with(tiny_dir, tmp_path, **SEED[name]))
    system, user, assistant, stop, _ = TEMPLATES[SEED[name]["template"]]
    assert family.stop == (stop,) and assistant in family.prompt_template
    if SEED[name].get("dynamic_image_size") is False:
        assert family.max_side == 64, "one tile: decode need not keep more than the tile"


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_unservable_layouts_are_refused_with_the_reason(name, tiny_dir, tmp_path):
    changes, reason = REFUSED[name]
    with pytest.raises(PipelineError, match=f"vLLM cannot serve this checkpoint: .*{reason}"):
        checked_family(_with(tiny_dir, tmp_path, **changes))


def test_tiny_checkpoint_is_served_and_tiles_up_to_its_config(tiny_dir):
    config = json.loads((tiny_dir / "config.json").read_text())
    assert refusal(config) is None
    family = checked_family(ModelConfig(family="internvl-chat", model_id=str(tiny_dir)))
    assert family.max_side == 64 * 12  # max_dynamic_patch tiles of force_image_size
    expected = "<|im_start|>system\n<|im_end|>\n<|im_start|>user\n<image>\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert family.build_prompt("Hi", "") == expected
    from transformers import AutoTokenizer

    from operators.vlm.internvl_chat.config import InternVLChatConfig

    loaded = InternVLChatConfig(**{k: v for k, v in config.items() if k != "model_type"})
    assert loaded.llm_config.architectures == ["Qwen2ForCausalLM"] and loaded.vision_config.image_size == 64
    tok = AutoTokenizer.from_pretrained(str(tiny_dir))
    assert all(tok.convert_tokens_to_ids(t) != tok.unk_token_id for t in ("<img>", "</img>", "<IMG_CONTEXT>"))


def test_hd_num_is_refused_outside_4khd(tiny_dir):
    with pytest.raises(PipelineError, match="hd_num is an InternLM-XComposer2-4KHD setting"):
        checked_family(ModelConfig(family="internvl-chat", model_id=str(tiny_dir), hd_num=9))
