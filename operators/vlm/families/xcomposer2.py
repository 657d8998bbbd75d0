"""InternLM-XComposer2: VL (7B, 1.8B) and 4KHD (7B), served by vlmbatch's own vLLM model plugin.

Format follows the model cards and their modeling code
(https://huggingface.co/internlm/internlm-xcomposer2-vl-7b,
https://huggingface.co/internlm/internlm-xcomposer2-vl-1_8b,
https://huggingface.co/internlm/internlm-xcomposer2-4khd-7b): InternLM2 chat markers
``[UNUSED_TOKEN_146]role\\n ... [UNUSED_TOKEN_145]\\n``, the cards' meta instruction as system
turn, ``<ImageHere>`` where the image goes (directly before the question, as in the cards'
``'<ImageHere>Please describe this image in detail.'``), ``[UNUSED_TOKEN_145]`` ends the answer.

Tokens as ``model.chat()`` makes them (:func:`card_prompt_ids`): with images, its
``interleav_wrap_chat`` splits the prompt at each ``<ImageHere>`` and tokenises every non-empty text
part on its own, each with the tokenizer's BOS, so a BOS follows every image; a text-only prompt
goes through ``build_inputs``, which writes ``<s>`` before the prompt and tokenises it with BOS: two.
(The remote code's training path, ``interleav_wrap``, gives only the first part a BOS; no
published use serves that layout, so it is not offered.) Generation: the card's ``chat()`` default
``repetition_penalty=1.005`` where the spec sets none.

Images: VL resizes to 490x490 (both sizes); 4KHD lays the image out in up to ``hd_num`` crops of
336 (``operators/vlm/xcomposer2/hd.py``), ``hd_num`` from the spec (the card's examples use 55) or
the checkpoint (25). With the vLLM engine both happen on the CPU ``prepare`` stage, with the
normalisation, into the model's input array (``operators/vlm/xcomposer2/cpu.py``); 4KHD rows record
their tile grid there.
"""

from __future__ import annotations

from pathlib import Path

from operators.vlm.registry import ModelFamily, register

META_INSTRUCTION = (
    "You are an AI assistant whose name is InternLM-XComposer (浦语·灵笔).\n"
    "- InternLM-XComposer (浦语·灵笔) is a multi-modality conversational language model that is developed by "
    "Shanghai AI Laboratory (上海人工智能实验室). It is designed to be helpful, honest, and harmless.\n"
    "- InternLM-XComposer (浦语·灵笔) can understand and communicate fluently in the language chosen by the user "
    "such as English and 中文.\n"
    "- InternLM-XComposer (浦语·灵笔) is capable of comprehending and articulating responses effectively based on "
    "the provided image."
)
IMAGE_TOKEN = "<ImageHere>"
_TEMPLATE = "{system}[UNUSED_TOKEN_146]user\n{user}[UNUSED_TOKEN_145]\n[UNUSED_TOKEN_146]assistant\n"
_SYSTEM = "[UNUSED_TOKEN_146]system\n{system}[UNUSED_TOKEN_145]\n"


def _make_tiny_vl(directory: Path) -> None:
    from operators.vlm.tiny.xcomposer2 import make_tiny_xcomposer2

    make_tiny_xcomposer2(directory, "vl")


def _make_tiny_4khd(directory: Path) -> None:
    from operators.vlm.tiny.xcomposer2 import make_tiny_xcomposer2

    make_tiny_xcomposer2(directory, "4khd")


def _reference(model_config):
    from operators.vlm.xcomposer2.hf_adapter import load

    return load(model_config)


def card_prompt_ids(prompt: str, tokenizer) -> list[int]:
    """Token ids of a full prompt as the cards' ``model.chat()`` builds them (see the module docstring).

    Each ``<ImageHere>`` stays one token, which the engine expands into the image's embeddings.
    """
    parts = prompt.split(IMAGE_TOKEN)
    if len(parts) == 1:
        return list(tokenizer("<s>" + prompt)["input_ids"])
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    ids: list[int] = []
    for i, part in enumerate(parts):
        if part:
            ids.extend(tokenizer(part)["input_ids"])
        if i < len(parts) - 1:
            ids.append(image_id)
    return ids


def _cpu_prepare_vl(model):
    from operators.vlm.xcomposer2.cpu import vl_preparer

    return vl_preparer(model.model_id)


def _cpu_prepare_4khd(model):
    from operators.vlm.xcomposer2.cpu import hd_preparer

    return hd_preparer(model.model_id, model.hd_num)


def _hd_num(model) -> int:
    from operators.vlm.xcomposer2.cpu import hd_settings

    return hd_settings(model.model_id, model.hd_num)[0]


def _side_4khd(model) -> int:
    # The HD transform scales an image to scale x 336 on its long side, scale <= hd_num (a strip).
    from operators.vlm.xcomposer2.cpu import hd_settings

    hd_num, crop = hd_settings(model.model_id, model.hd_num)
    return hd_num * crop


def _processor_kwargs_4khd(model) -> dict:
    return {"hd_num": _hd_num(model)}


_CARD_SAMPLING = (("repetition_penalty", 1.005),)  # chat(..., repetition_penalty=1.005) in all three cards


XCOMPOSER2_VL = register(
    ModelFamily(
        name="xcomposer2-vl",
        architectures=("InternLMXComposer2ForCausalLM",),
        model_card="https://huggingface.co/internlm/internlm-xcomposer2-vl-7b",
        image_placeholder=IMAGE_TOKEN,
        image_separator="",
        prompt_template=_TEMPLATE,
        system_block=_SYSTEM,
        default_system_prompt=META_INSTRUCTION,
        stop=("[UNUSED_TOKEN_145]",),
        # The model sees 490x490; twice that keeps the one resize close to the card's own.
        max_side=980,
        cpu_prepare=_cpu_prepare_vl,
        make_tiny=_make_tiny_vl,
        reference_loader=_reference,
        encode_prompt=card_prompt_ids,
        sampling_defaults=_CARD_SAMPLING,
    )
)

XCOMPOSER2_4KHD = register(
    ModelFamily(
        name="xcomposer2-4khd",
        architectures=("InternLMXComposer2ForCausalLM",),
        model_card="https://huggingface.co/internlm/internlm-xcomposer2-4khd-7b",
        image_placeholder=IMAGE_TOKEN,
        image_separator="",
        prompt_template=_TEMPLATE,
        system_block=_SYSTEM,
        default_system_prompt=META_INSTRUCTION,
        stop=("[UNUSED_TOKEN_145]",),
        # hd_num 25 crops of 336 reach 1680 px on the long side of a square image, 8400 on a strip.
        max_side=8400,
        needed_side=_side_4khd,
        cpu_prepare=_cpu_prepare_4khd,
        processor_kwargs=_processor_kwargs_4khd,
        make_tiny=_make_tiny_4khd,
        reference_loader=_reference,
        encode_prompt=card_prompt_ids,
        sampling_defaults=_CARD_SAMPLING,
    )
)
