"""InternVL (2.5 / 3 / 3.5) in transformers' native layout, served natively by vLLM.

Format follows the model cards of the ``OpenGVLab/InternVL3-*-hf`` checkpoints
(https://huggingface.co/OpenGVLab/InternVL3-1B-hf): ChatML turns, the system prompt below,
one ``<IMG_CONTEXT>`` per image in the user turn (the processor expands it to
``<img>`` + 256 context tokens per 448x448 tile + ``</img>``), ``<|im_end|>`` ends a turn.
Dynamic tiling (``max_dynamic_patch``, up to 12 tiles of 448 plus a thumbnail) happens in
the engine's processor, so the CPU stage only caps the size it sends.
"""

from __future__ import annotations

from pathlib import Path

from operators.vlm.registry import ModelFamily, register


def _make_tiny(directory: Path) -> None:
    from operators.vlm.tiny.internvl import make_tiny_internvl

    make_tiny_internvl(directory)


INTERNVL = register(
    ModelFamily(
        name="internvl",
        architectures=("InternVLForConditionalGeneration",),
        model_card="https://huggingface.co/OpenGVLab/InternVL3-1B-hf",
        image_placeholder="<IMG_CONTEXT>",
        prompt_template="{system}<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n",
        system_block="<|im_start|>system\n{system}<|im_end|>\n",
        default_system_prompt=(
            "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。"
        ),
        stop=("<|im_end|>", "<|endoftext|>"),
        # 12 tiles of 448 cover about 1792 x 1344; more pixels are discarded by the processor.
        max_side=1792,
        make_tiny=_make_tiny,
    )
)
