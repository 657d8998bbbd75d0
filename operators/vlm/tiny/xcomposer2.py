"""Tiny InternLM-XComposer2 checkpoints (VL and 4KHD) in the published layout, random weights.

Weight names and tensor layouts are those of the published checkpoints (see
``operators/vlm/xcomposer2/reference.py``); only the sizes are toy. ``config.json`` is the
published one's fields plus the optional XComposer2 fields our config class reads
(``xcomposer_variant``, ``vision_config``, ``hd_num``, ``lora_r``). The Partial-LoRA and the
LM-head weights are scaled up from the usual init so that (a) a missing or misplaced image mask
moves the logits far more than float32 noise and (b) greedy choices have clear margins.
"""

from __future__ import annotations

import json
from pathlib import Path

from operators.vlm.xcomposer2.config import ARCHITECTURE, IMAGE_TOKEN, MODEL_TYPE

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "[UNUSED_TOKEN_145]", "[UNUSED_TOKEN_146]", IMAGE_TOKEN]
VL_IMAGE_SIZE = 112  # 8x8 patches of 14: 64 image tokens
HD_CROP = 56  # 4x4 patches of 14, merged 2x2: 2x2 tokens per crop
HD_NUM = 4


def _vision(image_size: int) -> dict:
    return dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                patch_size=14, image_size=image_size, projection_dim=32)


def make_tiny_xcomposer2(directory: Path, variant: str, seed: int = 0, image_size: int | None = None) -> None:
    """Write a deterministic tiny XComposer2 ``variant`` (``vl`` or ``4khd``) checkpoint and tokenizer.

    ``image_size``: the VL tower's input size (default 112; the 7B composition model's 224 is 56 here).
    """
    import torch
    from safetensors.torch import save_file
    from tokenizers.processors import TemplateProcessing

    from operators.vlm.tiny.tokenizer import build_tokenizer
    from operators.vlm.xcomposer2.config import InternLMXComposer2Config
    from operators.vlm.xcomposer2.reference import XComposer2Reference

    directory = Path(directory)
    tokenizer = build_tokenizer(directory, special_tokens=SPECIAL_TOKENS, eos_token="</s>", pad_token="</s>",
                                bos_token="<s>", unk_token="<unk>")
    bos = tokenizer.convert_tokens_to_ids("<s>")
    # InternLM2's tokenizer prepends BOS (add_bos_token); the tiny one does the same.
    tokenizer._tokenizer.post_processor = TemplateProcessing(single="<s> $A", pair="<s> $A $B",
                                                             special_tokens=[("<s>", bos)])
    tokenizer.save_pretrained(str(directory))
    size = image_size or (VL_IMAGE_SIZE if variant == "vl" else HD_CROP)
    fields = dict(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        # vLLM's CPU attention needs head_dim >= 32: 128 / 4 heads, 2 KV heads (grouped).
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096, rope_theta=1000000,
        rope_scaling={"type": "dynamic", "factor": 1.0}, bos_token_id=bos, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False, bias=False, max_length=4096,
        xcomposer_variant=variant, vision_config=_vision(size), lora_r=8, lora_alpha=16,
    )
    if variant == "4khd":
        fields["hd_num"] = HD_NUM
    config = InternLMXComposer2Config(**fields)
    torch.manual_seed(seed)
    model = XComposer2Reference(config, variant)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("norm.weight", "layrnorm.weight", "layer_norm1.weight", "layer_norm2.weight")):
                continue
            if "Plora_" in name:
                p.normal_(0.0, 0.2)
            elif name == "output.weight":
                p.normal_(0.0, 0.5)
            elif name.startswith("plora_"):
                p.normal_(0.0, 1.0)
            elif p.dim() >= 2 or name.endswith("embedding"):
                p.normal_(0.0, 0.1)
    weights = {k: v.contiguous() for k, v in model.published_state_dict().items()}
    save_file(weights, str(directory / "model.safetensors"), metadata={"format": "pt"})
    published = {k: v for k, v in fields.items()}
    published.update(model_type=MODEL_TYPE, architectures=[ARCHITECTURE], torch_dtype="float32")
    (directory / "config.json").write_text(json.dumps(published, indent=2))
    (directory / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": bos, "eos_token_id": [tokenizer.eos_token_id,
                                               tokenizer.convert_tokens_to_ids("[UNUSED_TOKEN_145]")],
         "pad_token_id": tokenizer.pad_token_id}, indent=2))
