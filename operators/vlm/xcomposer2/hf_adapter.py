"""The XComposer2 reference behind the processor / ``generate`` interface the transformers engine uses.

``operators/vlm/transformers_engine.py`` drives Hugging Face models as
``processor(text=[prompt], images=..., return_tensors="pt")`` then ``model.generate(**inputs, ...)``.
No transformers class exists for this family, so :func:`load` returns a processor and a model
with exactly those calls, backed by :class:`~operators.vlm.xcomposer2.reference.XComposer2Reference`
(no KV cache: one full forward per generated token; meant for checks and small runs).
"""

from __future__ import annotations

from typing import Any

import torch

from operators.vlm.xcomposer2.config import IMAGE_TOKEN
from operators.vlm.xcomposer2.reference import XComposer2Reference

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ReferenceProcessor:
    """Tokenises the prompt as the cards' ``chat()`` does and expands each ``<ImageHere>`` to the image's
    number of embeddings; ``hd_num`` (4KHD) as the spec sets it, else the checkpoint's."""

    def __init__(self, tokenizer, model: XComposer2Reference, hd_num: int | None = None):
        self.tokenizer = tokenizer
        self._model = model
        self._hd_num = hd_num
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)

    def __call__(self, text: list[str], images: list | None = None, return_tensors: str = "pt"):
        from transformers import BatchFeature

        images = list(images or [])
        embeds = [self.encode(im, self._hd_num) for im in images]
        ids = self.prompt_ids(text[0])
        if ids.count(self.image_token_id) != len(images):
            raise ValueError(f"prompt has {ids.count(self.image_token_id)} {IMAGE_TOKEN} for {len(images)} images")
        expanded = self._model.expand(ids, self.image_token_id, [e.shape[0] for e in embeds])
        return BatchFeature({"input_ids": torch.tensor([expanded]), "image_embeds": embeds})


    def encode(self, image, hd_num: int | None) -> torch.Tensor:
        """The raw image's embeddings (4KHD: the HD transform into ``hd_num`` tiles, as the public code does)."""
        return self._model.encode_image(image, hd_num)

    def prompt_ids(self, prompt: str) -> list[int]:
        """The prompt's token ids as the cards' ``chat()`` builds them (a BOS per text part)."""
        from operators.vlm.families.xcomposer2 import card_prompt_ids

        return card_prompt_ids(prompt, self.tokenizer)


class ReferenceGenerator:
    """``generate`` over the reference: greedy or temperature / top-p sampling, HF-style repetition penalty."""

    def __init__(self, model: XComposer2Reference, image_token_id: int):
        self.model = model
        self.image_token_id = image_token_id

    def eval(self) -> ReferenceGenerator:
        self.model.eval()
        return self

    def to(self, device: Any) -> ReferenceGenerator:
        self.model.to(device)
        return self

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, image_embeds: list | None = None, max_new_tokens: int = 20,
                 min_new_tokens: int | None = None, repetition_penalty: float | None = None,
                 eos_token_id: list[int] | None = None, do_sample: bool = False, temperature: float = 1.0,
                 top_p: float = 1.0, **_: Any) -> torch.Tensor:
        ids = input_ids[0].tolist()
        x, mask = self.model.embed(ids, list(image_embeds or []), self.image_token_id)
        eos = set(eos_token_id or [])
        out = list(ids)
        for step in range(max_new_tokens):
            logits = self.model.logits_from_embeds(x, mask)[-1]
            if repetition_penalty and repetition_penalty != 1.0:
                seen = torch.tensor(sorted(set(out)))
                vals = logits[seen]
                logits[seen] = torch.where(vals > 0, vals / repetition_penalty, vals * repetition_penalty)
            if min_new_tokens and step < min_new_tokens and eos:
                logits[list(eos)] = float("-inf")
            if do_sample:
                probs = torch.softmax(logits / max(temperature, 1e-5), -1)
                sorted_p, order = probs.sort(descending=True)
                keep = sorted_p.cumsum(-1) - sorted_p < top_p
                sorted_p = sorted_p * keep
                nxt = int(order[torch.multinomial(sorted_p / sorted_p.sum(), 1)])
            else:
                nxt = int(logits.argmax())
            out.append(nxt)
            if nxt in eos:
                break
            emb = self.model.model.tok_embeddings(torch.tensor([nxt])).to(x.dtype)
            x, mask = torch.cat([x, emb]), torch.cat([mask, torch.tensor([False])])
        return torch.tensor([out])


def load(model_config) -> tuple[ReferenceProcessor, ReferenceGenerator]:
    """(processor, model) for the transformers engine from a ``schemas.spec.ModelConfig``."""
    from transformers import AutoTokenizer

    reference = XComposer2Reference.from_pretrained(
        model_config.model_id, dtype=_DTYPES.get(model_config.engine.dtype, torch.float32))
    tokenizer = AutoTokenizer.from_pretrained(model_config.model_id, revision=model_config.revision)
    processor = ReferenceProcessor(tokenizer, reference, getattr(model_config, "hd_num", None))
    return processor, ReferenceGenerator(reference, processor.image_token_id)
