"""LLaVA-1.5 in transformers' native layout (``llava-hf/llava-1.5-*-hf``), served natively by vLLM.

Format follows https://huggingface.co/llava-hf/llava-1.5-7b-hf: ``USER: <image>\\n{prompt}
ASSISTANT:``, no system turn, ``</s>`` (the tokenizer's EOS) ends the answer. The CLIP
processor resizes the short side to 336 and centre-crops, so nothing larger is worth sending.
"""

from __future__ import annotations

from pathlib import Path

from operators.vlm.registry import ModelFamily, register


def _make_tiny(directory: Path) -> None:
    from operators.vlm.tiny.llava import make_tiny_llava

    make_tiny_llava(directory)


LLAVA = register(
    ModelFamily(
        name="llava",
        architectures=("LlavaForConditionalGeneration",),
        model_card="https://huggingface.co/llava-hf/llava-1.5-7b-hf",
        image_placeholder="<image>",
        prompt_template="{system}USER: {user} ASSISTANT:",
        system_block="{system} ",
        default_system_prompt="",
        stop=("</s>",),
        max_side=672,
        make_tiny=_make_tiny,
    )
)
