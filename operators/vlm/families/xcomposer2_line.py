"""The rest of the XComposer2 line-up on the same plugin: the 7B composition model and the 4-bit VL release.

* ``xcomposer2-7b`` (https://huggingface.co/internlm/internlm-xcomposer2-7b): the image-grounded writing
  model. Same architecture, chat format and meta instruction as XComposer2-VL; its tower sees 224 x 224
  (``img_size`` in its config.json), so images are 256 positions.
* ``xcomposer2-vl-4bit`` (https://huggingface.co/internlm/internlm-xcomposer2-vl-7b-4bit): AutoGPTQ 4-bit
  decoder linears (``<module>.linear.qweight`` ...), Partial LoRA in floating point; vLLM's GPTQ linear
  method serves the base, the plugin adds the low-rank update at image positions exactly as for VL-7B.

Both reuse ``xcomposer2-vl``'s prompt format from the registry, so a change there applies here too.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from operators.vlm.families.xcomposer2 import XCOMPOSER2_VL
from operators.vlm.registry import register


def _make_tiny_7b(directory: Path) -> None:
    from operators.vlm.tiny.xcomposer2 import make_tiny_xcomposer2

    make_tiny_xcomposer2(directory, "vl", seed=2, image_size=56)


def _make_tiny_4bit(directory: Path) -> None:
    from operators.vlm.tiny.xcomposer2_4bit import make_tiny_xcomposer2_4bit

    make_tiny_xcomposer2_4bit(directory)


XCOMPOSER2_7B = register(dataclasses.replace(
    XCOMPOSER2_VL, name="xcomposer2-7b", model_card="https://huggingface.co/internlm/internlm-xcomposer2-7b",
    max_side=448, make_tiny=_make_tiny_7b))
XCOMPOSER2_VL_4BIT = register(dataclasses.replace(
    XCOMPOSER2_VL, name="xcomposer2-vl-4bit",
    model_card="https://huggingface.co/internlm/internlm-xcomposer2-vl-7b-4bit", make_tiny=_make_tiny_4bit))
