"""Tiny LLaVA-1.5 checkpoint (``LlavaForConditionalGeneration``: CLIP ViT tower, MLP projector, Llama).

Follows the layout of ``llava-hf/llava-1.5-7b-hf`` at toy sizes. transformers 5 saves the
CLIP tower's weights as ``vision_tower.*`` while the published checkpoints, and vLLM's
loader, use ``vision_tower.vision_model.*``; the builder writes the published names.
"""

from __future__ import annotations

from pathlib import Path

IMAGE_SIZE = 32
PATCH_SIZE = 8
# 4 x 4 patches; the "default" feature strategy drops CLS: 16 tokens per image.
IMAGE_SEQ_LENGTH = (IMAGE_SIZE // PATCH_SIZE) ** 2

CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}USER: {% else %}ASSISTANT: {% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{% if message['role'] != 'user' %}</s>{% endif %} {% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def _published_names(state_dict: dict) -> dict:
    renamed = {}
    for name, tensor in state_dict.items():
        for prefix in ("model.vision_tower.", "vision_tower."):
            if name.startswith(prefix) and not name.startswith(prefix + "vision_model."):
                name = prefix + "vision_model." + name[len(prefix) :]
                break
        renamed[name] = tensor
    return renamed


def make_tiny_llava(directory: Path, seed: int = 0) -> None:
    """Write a deterministic tiny LLaVA-1.5 checkpoint, tokenizer and processor to ``directory``."""
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    from operators.vlm.tiny.tokenizer import build_tokenizer

    tokenizer = build_tokenizer(
        directory,
        special_tokens=["<unk>", "<s>", "</s>", "<image>", "<pad>"],
        eos_token="</s>",
        bos_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        chat_template=CHAT_TEMPLATE,
    )
    text_config = LlamaConfig(
        vocab_size=len(tokenizer),
        # vLLM's CPU attention kernels support head_dim 32 and up: 128 / 4 heads.
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    vision_config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        projection_dim=32,
    )
    config = LlavaConfig(
        vision_config=vision_config.to_dict(),
        text_config=text_config.to_dict(),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=IMAGE_SEQ_LENGTH,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        tie_word_embeddings=False,
    )
    config.architectures = ["LlavaForConditionalGeneration"]
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).to(torch.float32).eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(str(directory), safe_serialization=True)
    weights = directory / "model.safetensors"
    save_file(_published_names(load_file(str(weights))), str(weights), metadata={"format": "pt"})

    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(str(directory))
