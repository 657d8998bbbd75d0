"""CLIP embeddings through transformers' own ``CLIPModel``, image processor and tokenizer.

Image vectors are ``get_image_features`` (the pooled vision output through ``visual_projection``),
text vectors ``get_text_features``; both L2-normalised, so their dot product is CLIP's cosine
similarity (the logits before ``logit_scale``). Preprocessing is the checkpoint's own
``preprocessor_config.json`` (resize the short side, centre crop, normalise).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import torch


def _features(out) -> torch.Tensor:
    # transformers 5 returns the model output with the projected vector as its pooler_output; 4.x a tensor.
    return out if not hasattr(out, "pooler_output") else out.pooler_output


class ClipEmbedder:
    """:class:`operators.embed.models.Embedder` of a CLIP checkpoint (local directory or hub id)."""

    embeds_text = True

    def __init__(self, model_id: str, *, revision: str | None = None, device=None, dtype=None):
        import torch
        from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

        self.device = device or torch.device("cpu")
        self.dtype = dtype or torch.float32
        kwargs = {"revision": revision} if revision else {}
        try:
            self.model = CLIPModel.from_pretrained(model_id, dtype=self.dtype, **kwargs).to(self.device).eval()
        except (OSError, ValueError) as exc:
            raise ValueError(f"embedding.model_id {model_id!r} is not a CLIP checkpoint: {exc}") from None
        self.processor = CLIPImageProcessor.from_pretrained(model_id, **kwargs)
        self.tokenizer = AutoTokenizer.from_pretrained(model_id, **kwargs)
        positions = self.model.config.text_config.max_position_embeddings
        self.max_length = min(self.tokenizer.model_max_length or 77, positions)
        self.dim = int(self.model.config.projection_dim)
        self.name = f"clip:{model_id}"

    def images(self, images: list[np.ndarray]) -> np.ndarray:
        import torch

        from operators.embed.models import normalise

        pixels = self.processor(images=list(images), return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            out = _features(self.model.get_image_features(pixel_values=pixels.to(self.device, self.dtype)))
        return normalise(out.float().cpu().numpy())

    def texts(self, texts: list[str]) -> np.ndarray:
        import torch

        from operators.embed.models import normalise

        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        with torch.inference_mode():
            out = _features(self.model.get_text_features(input_ids=enc["input_ids"].to(self.device),
                                                         attention_mask=enc["attention_mask"].to(self.device)))
        return normalise(out.float().cpu().numpy())
