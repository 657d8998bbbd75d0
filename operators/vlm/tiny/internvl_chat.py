"""Tiny InternVL chat checkpoint in the remote-code layout (``InternVLChatModel``), random weights.

The layout of ``OpenGVLab/InternVL2_5-1B`` and its kin at toy sizes: ``config.json`` with
``vision_config`` (InternViT-300M style: layer norm, qkv bias, no qk-norm) and ``llm_config`` (a
Qwen2 language model), the projector ``mlp1`` (LayerNorm, Linear, GELU, Linear) after a pixel
shuffle of 0.5, dynamic tiling (``max_dynamic_patch`` 12 tiles plus a thumbnail), the
``internvl2_5`` chat template, and a tokenizer holding ``<img>``, ``</img>`` and ``<IMG_CONTEXT>``.
Weight names are the published ones (``vision_model.*``, ``mlp1.*``, ``language_model.*``), so
vLLM's own ``InternVLChatModel`` and the public modeling code both load it unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

IMAGE_SIZE = 64
PATCH_SIZE = 8
DOWNSAMPLE = 0.5
VISION_WIDTH = 32
TEMPLATE = "internvl2_5"
# The tokens InternVL2.5 tokenizers add for images, boxes and references.
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<quad>",
                  "</quad>", "<ref>", "</ref>", "<box>", "</box>"]


def _vision_weights(layers: int, generator) -> dict:
    import torch

    d, n = VISION_WIDTH, (IMAGE_SIZE // PATCH_SIZE) ** 2 + 1

    def rnd(*shape, std=0.1):
        return (torch.randn(*shape, generator=generator) * std).contiguous()

    out = {
        "vision_model.embeddings.class_embedding": rnd(1, 1, d),
        "vision_model.embeddings.patch_embedding.weight": rnd(d, 3, PATCH_SIZE, PATCH_SIZE),
        "vision_model.embeddings.patch_embedding.bias": rnd(d),
        "vision_model.embeddings.position_embedding": rnd(1, n, d),
    }
    for i in range(layers):
        p = f"vision_model.encoder.layers.{i}."
        out.update({
            p + "attn.qkv.weight": rnd(3 * d, d), p + "attn.qkv.bias": rnd(3 * d),
            p + "attn.proj.weight": rnd(d, d), p + "attn.proj.bias": rnd(d),
            p + "mlp.fc1.weight": rnd(2 * d, d), p + "mlp.fc1.bias": rnd(2 * d),
            p + "mlp.fc2.weight": rnd(d, 2 * d), p + "mlp.fc2.bias": rnd(d),
            p + "norm1.weight": 1 + rnd(d), p + "norm1.bias": rnd(d),
            p + "norm2.weight": 1 + rnd(d), p + "norm2.bias": rnd(d),
            p + "ls1": 1 + rnd(d), p + "ls2": 1 + rnd(d),
        })
    return out


def make_tiny_internvl_chat(directory: Path, seed: int = 0, template: str = TEMPLATE) -> None:
    """Write a deterministic tiny ``InternVLChatModel`` checkpoint and tokenizer to ``directory``."""
    import torch
    from safetensors.torch import save_file
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from operators.vlm.tiny.tokenizer import build_tokenizer

    directory = Path(directory)
    tokenizer = build_tokenizer(directory, special_tokens=SPECIAL_TOKENS, eos_token="<|im_end|>",
                                pad_token="<|endoftext|>")
    text = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        # vLLM's CPU attention kernels support head_dim 32 and up: 128 / 4 heads.
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096, rope_theta=1000000.0,
        rms_norm_eps=1e-6, tie_word_embeddings=False, bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"), pad_token_id=tokenizer.pad_token_id,
    )
    text.architectures = ["Qwen2ForCausalLM"]
    torch.manual_seed(seed)
    llm = Qwen2ForCausalLM(text).float().eval()
    with torch.no_grad():
        llm.lm_head.weight.normal_(0.0, 0.5)  # peaked logits: clear greedy margins
    generator = torch.Generator().manual_seed(seed + 1)
    weights = {f"language_model.{k}": v.contiguous() for k, v in llm.state_dict().items()}
    layers = 2
    weights.update(_vision_weights(layers, generator))
    merged = VISION_WIDTH * int(1 / DOWNSAMPLE) ** 2
    weights.update({
        "mlp1.0.weight": torch.ones(merged), "mlp1.0.bias": torch.zeros(merged),
        "mlp1.1.weight": torch.randn(128, merged, generator=generator) * 0.2, "mlp1.1.bias": torch.zeros(128),
        "mlp1.3.weight": torch.randn(128, 128, generator=generator) * 0.2, "mlp1.3.bias": torch.zeros(128),
    })
    save_file({k: v.contiguous() for k, v in weights.items()}, str(directory / "model.safetensors"),
              metadata={"format": "pt"})
    llm_config = text.to_dict()
    llm_config.pop("transformers_version", None)
    config = {
        "architectures": ["InternVLChatModel"], "model_type": "internvl_chat", "template": template,
        "downsample_ratio": DOWNSAMPLE, "dynamic_image_size": True, "force_image_size": IMAGE_SIZE,
        "max_dynamic_patch": 12, "min_dynamic_patch": 1, "use_thumbnail": True, "ps_version": "v2",
        "select_layer": -1, "use_backbone_lora": 0, "use_llm_lora": 0, "pad2square": False,
        "torch_dtype": "float32",
        "vision_config": {
            "architectures": ["InternVisionModel"], "model_type": "intern_vit_6b", "hidden_size": VISION_WIDTH,
            "intermediate_size": 2 * VISION_WIDTH, "num_attention_heads": 2, "num_hidden_layers": layers,
            "image_size": IMAGE_SIZE, "patch_size": PATCH_SIZE, "qkv_bias": True, "qk_normalization": False,
            "norm_type": "layer_norm", "layer_norm_eps": 1e-6, "hidden_act": "gelu", "drop_path_rate": 0.0,
            "initializer_factor": 1.0, "use_flash_attn": False,
        },
        "llm_config": llm_config,
    }
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    (directory / "generation_config.json").write_text(json.dumps(
        {"eos_token_id": text.eos_token_id, "pad_token_id": text.pad_token_id}, indent=2))
