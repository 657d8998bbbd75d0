"""Tiny InternLM-XComposer2 checkpoints (VL and 4KHD) in the published layout, random weights.

Weight names and tensor layouts are those of the published checkpoints (see
``operators/vlm/xcomposer2/reference.py``); only the widths and depths are toy. What the public
remote code fixes in its source is kept as published, so that code runs these checkpoints as the
same model (``tests/goldens/make_goldens.py``): Partial LoRA rank 256 / alpha 256 (4KHD's ``wqkv``
8 / 16), 4KHD crops of 336 px in patches of 14 (24x24 patches, 12x12 merged tokens), an explicit
``rms_norm_eps`` and a two-field ``rope_scaling`` as the public config class requires.
``config.json`` is the published one's fields plus the optional XComposer2 fields our config class
reads (``xcomposer_variant``, ``vision_config``, ``img_size``). The Partial-LoRA and the LM-head
weights are scaled up from the usual init so that (a) a missing or misplaced image mask moves the
logits far more than float32 noise and (b) greedy choices have clear margins.
"""

from __future__ import annotations

import json
from pathlib import Path

from operators.vlm.xcomposer2.config import ARCHITECTURE, IMAGE_TOKEN, MODEL_TYPE

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "[UNUSED_TOKEN_145]", "[UNUSED_TOKEN_146]", IMAGE_TOKEN]
VL_IMAGE_SIZE = 112  # 8x8 patches of 14: 64 image tokens
HD_CROP = 336  # the public 4KHD code's crop (24x24 patches of 14, merged 2x2 into 12x12 tokens)
LORA = 256  # rank and alpha of the published checkpoints' Partial LoRA


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
        # 4KHD at hd_num 25 lays one image out in up to 3817 tokens: the published 32768 positions.
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1000000,
        rms_norm_eps=1e-5, bos_token_id=bos, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False, bias=False,
        max_length=16384 if variant == "4khd" else 4096,
        xcomposer_variant=variant, vision_config=_vision(size), lora_r=LORA, lora_alpha=LORA,
    )
    if variant == "vl":
        fields["img_size"] = size  # the public VL code resizes to config.img_size
    # The published two-field form; the config class below rewrites the dict it is given, so it
    # gets its own copy and config.json keeps this one.
    scaling = {"type": "dynamic", "factor": 1.0}
    config = InternLMXComposer2Config(**fields, rope_scaling=dict(scaling))
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
    published = dict(fields, rope_scaling=scaling)
    published.update(model_type=MODEL_TYPE, architectures=[ARCHITECTURE], torch_dtype="float32")
    (directory / "config.json").write_text(json.dumps(published, indent=2))
    (directory / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": bos, "eos_token_id": [tokenizer.eos_token_id,
                                               tokenizer.convert_tokens_to_ids("[UNUSED_TOKEN_145]")],
         "pad_token_id": tokenizer.pad_token_id}, indent=2))
