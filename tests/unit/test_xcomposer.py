"""InternLM-XComposer v1 pieces that need no engine: config, weight mapping, GPTQ layout, reference vs golden."""

from __future__ import annotations

import json

import pytest

from tests.golden_xcomposer.oracle import images

GOLDEN = json.loads((__import__("pathlib").Path(__file__).parents[1] / "data/goldens/xcomposer-v1.json").read_text())
TOL = 2e-3

# config.json of internlm-xcomposer-7b as released (InternLM/InternLM-XComposer huggingface/internlm-xcomposer/ at
# 2b14928, the parent of 37b8258; remote-code pointers and both LoRA blocks included).
PUBLISHED_CONFIG = {
    "architectures": ["InternLMXComposerForCausalLM"],
    "auto_map": {"AutoConfig": "configuration_InternLM_XComposer.InternLMXComposerConfig",
                 "AutoModel": "modeling_InternLM_XComposer.InternLMXComposerForCausalLM"},
    "bias": True, "bos_token_id": 1, "device": "cuda", "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 4096,
    "intermediate_size": 11008, "intern_converted_llm": True, "kqvo_bias": True, "max_position_embeddings": 2048,
    "model_type": "InternLMXComposer", "num_attention_heads": 32, "num_hidden_layers": 32, "num_query_token": 64,
    "pad_token_id": -1, "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "vocab_size": 103168,
    "internlm_lora": {"freeze": False, "learn_param": ["q", "v", "ffn"], "lora_alpha": 256, "lora_dropout": 0.05,
                      "lora_r": 256},
    "lora_cfg": {"freeze": False, "learn_param": ["q", "v", "ffn"], "lora_alpha": 256, "lora_dropout": 0.05,
                 "lora_r": 256},
    "num_quant": 32, "torch_dtype": "float32", "use_cache": True,
}


def test_published_config_loads_without_remote_code(tmp_path):
    from transformers import AutoConfig

    from operators.vlm.xcomposer.config import register_config

    register_config()
    (tmp_path / "config.json").write_text(json.dumps(PUBLISHED_CONFIG))
    config = AutoConfig.from_pretrained(str(tmp_path), trust_remote_code=False)
    assert type(config).__name__ == "InternLMXComposerConfig"
    assert config.num_image_tokens() == 66 and config.pad_token_id is None and config.head_dim == 128
    assert config.lora_targets() == {"q_proj", "v_proj", "up_proj", "down_proj"}
    assert config.rms_norm_eps == 1e-5 and config.lora()["lora_alpha"] / config.lora()["lora_r"] == 1.0
    # The released modules are built from lora_cfg; internlm_lora only reaches a class attribute.
    config.lora_cfg = {"learn_param": ["q"], "lora_r": 4}
    assert config.lora_targets() == {"q_proj"}
    eva, bert = config.eva(), config.qformer()
    facts = (eva["image_size"], eva["hidden_size"], eva["num_hidden_layers"], eva["intermediate_size"])
    assert facts == (224, 1408, 39, 6144)
    assert (bert["hidden_size"], bert["num_hidden_layers"], bert["cross_attention_freq"]) == (768, 12, 2)


def test_autogptq_checkpoints_are_served_as_gptq(tmp_path):
    from operators.vlm.gptq import quantization_of
    from operators.vlm.registry import get_family
    from operators.vlm.vllm_engine import engine_args
    from schemas.spec import ModelConfig

    assert quantization_of(tmp_path) is None and quantization_of("internlm/internlm-xcomposer-7b-4bit") is None
    # The 4-bit releases carry AutoGPTQ's quantize_config.json beside a config.json without quantization_config.
    (tmp_path / "quantize_config.json").write_text(json.dumps({"bits": 4, "group_size": 128, "desc_act": False}))
    assert quantization_of(tmp_path) == "gptq"
    model = ModelConfig(family="xcomposer-7b-4bit", model_id=str(tmp_path))
    assert engine_args(model, get_family(model.family))["quantization"] == "gptq"


def test_lora_targets_follow_learn_param():
    from operators.vlm.xcomposer.config import InternLMXComposerConfig

    c = InternLMXComposerConfig(internlm_lora={"learn_param": ["q", "k", "v", "o", "ffn"], "lora_r": 4})
    assert c.lora_targets() == {"q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj"}
    assert InternLMXComposerConfig().lora_targets() == set()


def test_weight_names_map_onto_vllm_layers_and_lora_merges_exactly():
    import torch

    from operators.vlm.xcomposer.config import InternLMXComposerConfig
    from operators.vlm.xcomposer.reference import LinearLoRA
    from operators.vlm.xcomposer.weights import published_to_vllm, rename

    assert rename("visual_encoder.blocks.3.attn.proj.weight") == \
        "visual_encoder.encoder.layers.3.self_attn.projection.weight"
    assert rename("visual_encoder.cls_token") == "visual_encoder.embeddings.class_embedding"
    assert rename("Qformer.bert.encoder.layer.2.crossattention.self.key.bias") == \
        "Qformer.encoder.layer.2.crossattention.attention.key.bias"
    assert rename("Qformer.bert.encoder.layer.1.output_query.LayerNorm.weight") == \
        "Qformer.encoder.layer.1.output_query.LayerNorm.weight"
    assert rename("internlm_model.lm_head.weight") == "language_model.lm_head.weight"
    config = InternLMXComposerConfig(internlm_lora={"learn_param": ["q"], "lora_r": 2, "lora_alpha": 8})
    layer = LinearLoRA(6, 4, True, config.lora())
    torch.nn.init.normal_(layer.lora_B.weight)
    base = "internlm_model.model.layers.0.self_attn.q_proj"
    weights = [(f"{base}.lora_A.weight", layer.lora_A.weight), (f"{base}.bias", layer.bias),
               (f"{base}.weight", layer.weight), (f"{base}.lora_B.weight", layer.lora_B.weight),
               ("visual_encoder.blocks.0.attn.q_bias", torch.ones(3)),
               ("visual_encoder.blocks.0.attn.v_bias", torch.ones(3) * 2),
               ("Qformer.bert.embeddings.position_ids", torch.zeros(1))]
    out = dict(published_to_vllm(weights, config))
    assert set(out) == {"language_model.model.layers.0.self_attn.q_proj.weight",
                        "language_model.model.layers.0.self_attn.q_proj.bias",
                        "visual_encoder.encoder.layers.0.self_attn.qkv.bias"}
    assert out["visual_encoder.encoder.layers.0.self_attn.qkv.bias"].tolist() == [1, 1, 1, 0, 0, 0, 2, 2, 2]
    x = torch.randn(5, 6)
    merged = torch.nn.functional.linear(x, out["language_model.model.layers.0.self_attn.q_proj.weight"], layer.bias)
    assert torch.allclose(merged, layer(x).detach(), atol=1e-5)
    with pytest.raises(ValueError, match="incomplete"):
        list(published_to_vllm(weights[:3], config))


def test_gptq_layout_round_trips():
    import torch

    from operators.vlm.gptq import dequantize
    from operators.vlm.tiny.xcomposer import quantize_gptq

    w = torch.randn(64, 96)
    qweight, qzeros, scales, g_idx = quantize_gptq(w)
    assert (qweight.shape, qzeros.shape, scales.shape, g_idx.shape) == ((12, 64), (3, 8), (3, 64), (96,))
    assert qweight.dtype == qzeros.dtype == torch.int32 and scales.dtype == torch.float16
    back = dequantize(qweight, scales, g_idx)
    step = scales.float()[g_idx.long()].t()  # one quantization step per weight
    assert ((back - w).abs() <= step * 0.51 + 1e-3).all()


@pytest.mark.parametrize("variant", sorted(GOLDEN["variants"]))
def test_reference_matches_public_code_golden(variant, tiny_models):
    """Prompt layout, image-token counts, greedy tokens and log-probs of the reference equal the golden file's."""
    import torch
    from transformers import AutoTokenizer

    from operators.vlm.registry import get_family
    from operators.vlm.xcomposer.reference import XComposerReference

    path = tiny_models[variant]  # each variant is a family with its own tiny builder
    ref = XComposerReference.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(str(path))
    image_id = tok.convert_tokens_to_ids("<ImageHere>")
    pics = images()
    for case in GOLDEN["variants"][variant]:
        fam = get_family(case["family"])
        text = fam.build_prompt(case["instruction"], case["system"], num_images=len(case["images"]))
        ims = [pics[i] for i in case["images"]]
        ids, greedy = ref.greedy(tok(text)["input_ids"], ims, image_id, GOLDEN["max_new_tokens"])
        assert ids == case["prompt_ids"], f"{variant}/{case['name']}: prompt token layout"
        assert greedy == case["greedy"], f"{variant}/{case['name']}: greedy tokens"
        # Generated ids are text even when one equals the placeholder's (the tiny vocabulary holds it; vLLM marks
        # image positions by is_multimodal, not by id): embed them as tokens, as the golden's oracle does.
        x = torch.cat([ref.embed(ids, [ref.encode_image(im) for im in ims], image_id),
                       ref.internlm_model.model.embed_tokens(torch.tensor(greedy[:-1]))])
        lp = torch.log_softmax(ref.logits(x), -1)
        worst = max(abs(float(lp[i - 1, t]) - g) for i, t, g in case["prompt_logprobs"])
        for j, step in enumerate(case["steps"]):
            worst = max(worst, *(abs(float(lp[len(ids) - 1 + j, t]) - g) for t, g in step["top"]))
        assert worst < TOL, f"{variant}/{case['name']}: max |d logprob| {worst:.2e}"


def test_a_missing_lora_moves_the_logits(tiny_models):
    """The tiny model is sensitive: without its LoRA the log-probs move by far more than the tolerance."""
    import torch

    from operators.vlm.xcomposer.reference import XComposerReference

    ref = XComposerReference.from_pretrained(tiny_models["xcomposer-vl"])
    x = ref.embed([1, 5, 9, 13, 17], [], -1)
    before = torch.log_softmax(ref.logits(x), -1)
    for module in ref.internlm_model.modules():
        if hasattr(module, "scaling"):
            module.scaling = 0.0
    after = torch.log_softmax(ref.logits(x), -1)
    assert (before - after).abs().max() > 0.5


def test_generate_loop_greedy_and_beams(tiny_models):
    import torch

    from operators.vlm.xcomposer.generate import generate
    from operators.vlm.xcomposer.reference import XComposerReference

    ref = XComposerReference.from_pretrained(tiny_models["share-captioner"])
    x = torch.stack([ref.embed([1, 7, 8, 9], [], -1), ref.embed([1, 3, 2, 9], [], -1)])
    greedy = generate(ref.internlm_model, x, max_new_tokens=6)
    assert greedy[0] == ref.greedy([1, 7, 8, 9], [], -1, 6)[1] and len(greedy) == 2
    assert generate(ref.internlm_model, x, max_new_tokens=6, num_beams=1) == greedy
    beams = generate(ref.internlm_model, x, max_new_tokens=4, num_beams=3, repetition_penalty=1.5, eos_token_id=2)
    assert len(beams) == 2 and all(1 <= len(b) <= 4 for b in beams)
    penalised = generate(ref.internlm_model, x, max_new_tokens=6, repetition_penalty=1e6)
    assert all(len(set(seq)) == len(seq) for seq in penalised), "a huge penalty forbids repeats"


def test_share_captioner_recipe_uses_the_scripts_instruction_and_settings():
    from jobs.specfile import load_spec
    from operators.vlm.families.xcomposer import SHARE_CAPTIONER_GENERATION, SHARE_CAPTIONER_INSTRUCTION
    from tests.conftest import ROOT

    spec = load_spec(ROOT / "jobs/specs/sharegpt4v-pt.yaml")
    assert spec.model.family == "share-captioner" and spec.caption.prompt == SHARE_CAPTIONER_INSTRUCTION
    assert spec.sampling.repetition_penalty == SHARE_CAPTIONER_GENERATION["repetition_penalty"]
    assert spec.sampling.min_tokens == SHARE_CAPTIONER_GENERATION["min_new_tokens"]


@pytest.mark.parametrize("family", ["share-captioner", "xcomposer-vl", "xcomposer-7b", "xcomposer-7b-4bit"])
def test_the_cpu_stage_prepares_what_the_engines_processor_would(family, tmp_path):
    """The v1 family's CPU preparer gives the plugin's own array for a raw image: 3 x 224 x 224 CLIP-normalised
    (``vis_processor``), at the checkpoint's EVA side where its config gives one."""
    import numpy as np

    from operators.vlm.registry import get_family
    from operators.vlm.xcomposer.image import pixel_values
    from schemas.spec import ModelConfig

    prepare = get_family(family).cpu_prepare(ModelConfig(family=family, model_id="/not/a/dir"))
    for name, image in enumerate(images()):
        array, grid = prepare(image)
        assert grid is None and array.dtype == np.float32 and array.flags.c_contiguous, name
        assert array.shape == (3, 224, 224), name
        np.testing.assert_array_equal(array, pixel_values(image, 224).numpy())
    (tmp_path / "config.json").write_text(json.dumps({"vision_config": {"image_size": 56}}))
    small = get_family(family).cpu_prepare(ModelConfig(family=family, model_id=str(tmp_path)))
    assert small(images()[0])[0].shape == (3, 56, 56)
