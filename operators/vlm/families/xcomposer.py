"""InternLM-XComposer v1: XComposer-VL-7B, XComposer-7B (chat) and Share-Captioner, served by vlmbatch's plugin.

Formats follow the public code: ``wrap_prompt`` of https://huggingface.co/internlm/internlm-xcomposer-vl-7b
(``' <|User|>:' + image + text + '\\n' + eoh + ' <|Bot|>:'``, BOS first), the same behind the meta
instruction for https://huggingface.co/internlm/internlm-xcomposer-7b, and ShareGPT4V's captioning
script (InternLM-XComposer ``projects/ShareGPT4V/tools/share-cap_batch_infer.py``) for
https://huggingface.co/Lin-Chen/ShareCaptioner: ``'<|User|>:' + image + instruction + eoh + '\\n<|Bot|>:'``
with the one instruction below. ``eoa`` (``<TOKENS_UNUSED_1>``) ends an answer (upstream cuts the text
there). Images: a bicubic resize to 224 x 224, normalised, on the pipeline's CPU ``prepare`` stage (the
engine's processor does the same to a raw image); every image is ``num_query_token + 2`` positions.
"""

from __future__ import annotations

from pathlib import Path

from operators.vlm.registry import ModelFamily, register
from operators.vlm.xcomposer.tokens import EOA, EOH, IMAGE_TOKEN

SHARE_CAPTIONER_INSTRUCTION = "Analyze the image in a comprehensive and detailed manner."
# ShareGPT4V's script: generate(num_beams=3, do_sample=True, temperature=1.0, repetition_penalty=1.5,
# length_penalty=1.0, min_length=1, max_length=500, eos_token_id=2). Under the transformers it pinned
# (4.33), max_length with inputs_embeds only counts generated tokens: 500 new tokens.
SHARE_CAPTIONER_GENERATION = dict(num_beams=3, do_sample=True, temperature=1.0, repetition_penalty=1.5,
                                  length_penalty=1.0, min_new_tokens=1, max_new_tokens=500)
# The XComposer-7B (chat) meta instruction, as its modeling code prepends it.
META_INSTRUCTION = (
    "meta instruction\nYou are an AI assistant whose name is 浦语.\n- 浦语 is a conversational language model "
    "that is developed by Shanghai AI Laboratory (上海人工智能实验室). It is designed to be helpful, honest, and "
    "harmless.\n- 浦语 can understand and communicate fluently in the language chosen by the user such as English "
    "and 中文.\nconversation\n"
)
_CARD_TEMPLATE = "{system} <|User|>:{user}\n" + EOH + " <|Bot|>:"


def _make_tiny(seed: int):
    def make(directory: Path) -> None:
        from operators.vlm.tiny.xcomposer import make_tiny_xcomposer

        make_tiny_xcomposer(directory, seed=seed)

    return make


def _make_tiny_4bit(directory: Path) -> None:
    from operators.vlm.tiny.xcomposer import make_tiny_xcomposer

    make_tiny_xcomposer(directory, seed=0, quantized=True)


def _reference(model_config):
    from operators.vlm.xcomposer.hf_adapter import load

    return load(model_config)


def _cpu_prepare(model):
    from operators.vlm.xcomposer.image import cpu_preparer

    return cpu_preparer(model.model_id)


def _family(name: str, card: str, template: str, system: str, make_tiny) -> ModelFamily:
    return register(ModelFamily(
        name=name, architectures=("InternLMXComposerForCausalLM",), model_card=card, image_placeholder=IMAGE_TOKEN,
        image_separator="", prompt_template=template, system_block="{system}", default_system_prompt=system,
        stop=(EOA,), max_side=448,  # the model sees 224; more only costs bandwidth
        cpu_prepare=_cpu_prepare, make_tiny=make_tiny, reference_loader=_reference))


XCOMPOSER_VL = _family("xcomposer-vl", "https://huggingface.co/internlm/internlm-xcomposer-vl-7b", _CARD_TEMPLATE,
                       "", _make_tiny(0))
XCOMPOSER_7B = _family("xcomposer-7b", "https://huggingface.co/internlm/internlm-xcomposer-7b", _CARD_TEMPLATE,
                       META_INSTRUCTION, _make_tiny(0))
XCOMPOSER_7B_4BIT = _family("xcomposer-7b-4bit", "https://huggingface.co/internlm/internlm-xcomposer-7b-4bit",
                            _CARD_TEMPLATE, META_INSTRUCTION, _make_tiny_4bit)
SHARE_CAPTIONER = _family("share-captioner", "https://huggingface.co/Lin-Chen/ShareCaptioner",
                          "{system}<|User|>:{user}" + EOH + "\n<|Bot|>:", "", _make_tiny(1))
