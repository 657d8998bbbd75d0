"""Tiny InternVL checkpoint in transformers' native layout (``InternVLForConditionalGeneration``).

Mirrors the layout of the ``OpenGVLab/InternVL3-*-hf`` checkpoints (InternViT vision tower,
pixel-shuffle projector, Qwen2 language model, ChatML chat template) at toy sizes, so vLLM
serves it with its own InternVL implementation and no remote code.
"""

from __future__ import annotations

from pathlib import Path

IMAGE_SIZE = 64
PATCH_SIZE = 8
DOWNSAMPLE = 0.5
# (64 / 8)^2 patches, pixel shuffle 0.5 in each direction: 16 tokens per image.
IMAGE_SEQ_LENGTH = int((IMAGE_SIZE // PATCH_SIZE) ** 2 * DOWNSAMPLE**2)

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<IMG_CONTEXT>\n{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def make_tiny_internvl(directory: Path, seed: int = 0) -> None:
    """Write a deterministic tiny InternVL checkpoint, tokenizer and processor to ``directory``."""
    import torch
    from transformers import (
        GotOcr2ImageProcessorPil,
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLProcessor,
        InternVLVideoProcessor,
        Qwen2Config,
    )

    from operators.vlm.tiny.tokenizer import build_tokenizer

    tokenizer = build_tokenizer(
        directory,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>"],
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
        extra_special_tokens={
            "start_image_token": "<img>",
            "end_image_token": "</img>",
            "context_image_token": "<IMG_CONTEXT>",
            "video_token": "<video>",
        },
    )
    text_config = Qwen2Config(
        vocab_size=len(tokenizer),
        # vLLM's CPU attention kernels support head_dim 32 and up: 128 / 4 heads.
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
    )
    config = InternVLConfig(
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=[IMAGE_SIZE, IMAGE_SIZE],
            patch_size=[PATCH_SIZE, PATCH_SIZE],
        ),
        text_config=text_config.to_dict(),
        image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"),
        image_seq_length=IMAGE_SEQ_LENGTH,
        downsample_ratio=DOWNSAMPLE,
        tie_word_embeddings=False,
    )
    config.architectures = ["InternVLForConditionalGeneration"]
    torch.manual_seed(seed)
    model = InternVLForConditionalGeneration(config).to(torch.float32).eval()
    model.generation_config.eos_token_id = text_config.eos_token_id
    model.generation_config.pad_token_id = text_config.pad_token_id
    model.save_pretrained(str(directory), safe_serialization=True)

    size = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    image_processor = GotOcr2ImageProcessorPil(size=size, crop_to_patches=False, max_patches=1)
    video_processor = InternVLVideoProcessor(size=size)
    processor = InternVLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        image_seq_length=IMAGE_SEQ_LENGTH,
        chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(str(directory))
