"""InternLM-XComposer2: VL (7B, 1.8B) and 4KHD (7B), served by vlmbatch's own vLLM model plugin.

Format follows the model cards and their modeling code
(https://huggingface.co/internlm/internlm-xcomposer2-vl-7b,
https://huggingface.co/internlm/internlm-xcomposer2-vl-1_8b,
https://huggingface.co/internlm/internlm-xcomposer2-4khd-7b): InternLM2 chat markers
``[UNUSED_TOKEN_146]role\\n ... [UNUSED_TOKEN_145]\\n``, the cards' meta instruction as system
turn, ``<ImageHere>`` where the image goes (directly before the question, as in the cards'
``'<ImageHere>Please describe this image in detail.'``), ``[UNUSED_TOKEN_145]`` ends the answer.
Images: VL resizes to 490x490 (both sizes); 4KHD lays the image out in up to ``hd_num`` crops of
336 (``operators/vlm/xcomposer2/hd.py``). With the vLLM engine both happen on the CPU stage, with
the normalisation, into the model's input array (``operators/vlm/xcomposer2/cpu.py``).
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


def _cpu_prepare_vl(model_id: str):
    from operators.vlm.xcomposer2.cpu import vl_preparer

    return vl_preparer(model_id)


def _cpu_prepare_4khd(model_id: str):
    from operators.vlm.xcomposer2.cpu import hd_preparer

    return hd_preparer(model_id)


XCOMPOSER2_VL = register(
    ModelFamily(
        name="xcomposer2-vl",
        architectures=("InternLMXComposer2ForCausalLM",),
        model_card="https://huggingface.co/internlm/internlm-xcomposer2-vl-7b",
        image_placeholder="<ImageHere>",
        image_separator="",
        prompt_template=_TEMPLATE,
        system_block=_SYSTEM,
        default_system_prompt=META_INSTRUCTION,
        stop=("[UNUSED_TOKEN_145]",),
        # The model sees 490x490; decoding more than that costs only bandwidth.
        max_side=980,
        cpu_prepare=_cpu_prepare_vl,
        make_tiny=_make_tiny_vl,
        reference_loader=_reference,
    )
)

XCOMPOSER2_4KHD = register(
    ModelFamily(
        name="xcomposer2-4khd",
        architectures=("InternLMXComposer2ForCausalLM",),
        model_card="https://huggingface.co/internlm/internlm-xcomposer2-4khd-7b",
        image_placeholder="<ImageHere>",
        image_separator="",
        prompt_template=_TEMPLATE,
        system_block=_SYSTEM,
        default_system_prompt=META_INSTRUCTION,
        stop=("[UNUSED_TOKEN_145]",),
        # hd_num 25 crops of 336 reach 1680 px on the long side of a square image, 8400 on a strip.
        max_side=3360,
        cpu_prepare=_cpu_prepare_4khd,
        make_tiny=_make_tiny_4khd,
        reference_loader=_reference,
    )
)
