"""The XComposer v1 reference behind the processor / ``generate`` interface the transformers engine uses.

``operators/vlm/transformers_engine.py`` calls ``processor(text=[prompt], images=..., return_tensors="pt")``
then ``model.generate(**inputs, ...)``. The processor is XComposer2's with v1's image encoding and the
tokenizer's own prompt ids (it expands each ``<ImageHere>`` to the image's embedding count through the
model's ``expand``, which the v1 reference offers too); ``generate`` is
:func:`operators.vlm.xcomposer.generate.generate` with a KV cache.
"""

from __future__ import annotations

from typing import Any

import torch

from operators.vlm.xcomposer.generate import generate
from operators.vlm.xcomposer.reference import XComposerReference
from operators.vlm.xcomposer2 import hf_adapter as xc2
from operators.vlm.xcomposer2.hf_adapter import ReferenceProcessor

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class V1Processor(ReferenceProcessor):
    """XComposer2's processor with v1's inputs: one fixed-size image embedding, the tokenizer's own ids."""

    def encode(self, image, hd_num: int | None) -> torch.Tensor:
        return self._model.encode_image(image)

    def prompt_ids(self, prompt: str) -> list[int]:
        return self.tokenizer(prompt)["input_ids"]


class ReferenceGenerator(xc2.ReferenceGenerator):
    """``generate(input_ids, image_embeds, ...)`` -> ``[1, prompt + generated]`` ids, HF-style settings, KV cache."""

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, image_embeds: list | None = None, max_new_tokens: int = 20,
                 min_new_tokens: int | None = None, repetition_penalty: float | None = None,
                 eos_token_id: list[int] | None = None, do_sample: bool = False, temperature: float = 1.0,
                 top_p: float = 1.0, num_beams: int = 1, **_: Any) -> torch.Tensor:
        ids = input_ids[0].tolist()
        x = self.model.embed(ids, list(image_embeds or []), self.image_token_id)[None]
        new = generate(self.model.internlm_model, x, max_new_tokens=max_new_tokens, eos_token_id=eos_token_id,
                       num_beams=num_beams, do_sample=do_sample, temperature=temperature, top_p=top_p,
                       repetition_penalty=repetition_penalty or 1.0, min_new_tokens=min_new_tokens or 0)[0]
        return torch.tensor([ids + new])


def load(model_config) -> tuple[ReferenceProcessor, ReferenceGenerator]:
    """(processor, model) for the transformers engine from a ``schemas.spec.ModelConfig``."""
    from transformers import AutoTokenizer

    reference = XComposerReference.from_pretrained(
        model_config.model_id, dtype=_DTYPES.get(model_config.engine.dtype, torch.float32))
    tokenizer = AutoTokenizer.from_pretrained(model_config.model_id, revision=model_config.revision)
    processor = V1Processor(tokenizer, reference)
    return processor, ReferenceGenerator(reference, processor.image_token_id)
